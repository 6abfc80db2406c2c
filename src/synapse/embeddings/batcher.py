"""Micro-batching: embedding requests held while a group's backend is busy go out together.

A group has a capacity: the sum of its deployments' `max_parallel_requests` when all declare
one (an Ollama with one parallel slot: 1), else `embedding_batching.max_in_flight`. A request
is sent at once while the group's calls in flight are below it, so an idle backend never
waits. At capacity, requests queue in the lane of their parameters and priority (different
parameters never share a call) and, when a call returns, the lane that ranks first (interactive
before batch, as in a deployment's queue) leaves as one call of up to `max_batch` texts and
`max_bytes`. The answer is split back to each caller in order; the call carries the lane's
priority. Whether batching pays is learned per deployment (`tuner.py`): where it loses, the
queue still bounds the calls in flight but each request goes alone; one dispatch in
`EXPLORE_EVERY` tries the other way so the verdict follows the workload. The queue is bounded
(`queue_size` requests per group) and every wait has a deadline (`queue_timeout`).

A caller error on a batch (a 4xx: one text too long, say) re-sends each request alone, so one
bad text fails only its own request.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace

from prometheus_client import Gauge

from synapse import metrics
from synapse.config import Deployment
from synapse.config.schema import SynapseSettings
from synapse.embeddings.tuner import Tuner
from synapse.errors import GatewayError, Overloaded
from synapse.routing import Trace

EXPLORE_EVERY = 16  # one queued dispatch in this many tries the way the tuner does not prefer
EXPLORE_BATCH = 2  # requests in an exploring batch: small, so a losing probe costs little


@dataclass(slots=True)
class Embedded:
    """Vectors for a list of texts, in order, and each text's share of the tokens."""

    vectors: list[list[float]]
    tokens: list[int]  # per text, apportioned from the call's count by text length


# Sends a list of texts to the backend, recording what happened in the trace it is given.
Run = Callable[[list[str], Trace], Awaitable[Embedded]]
LaneKey = tuple[bytes, str, bool]  # parameters, priority, may share a call


@dataclass(slots=True, eq=False)
class _Item:
    texts: list[str]
    size: int
    run: Run
    trace: Trace
    future: asyncio.Future
    queued: float
    rank: float  # the queue's order: arrival, later by `batch_aging` for batch priority
    deadline: asyncio.TimerHandle | None = None


@dataclass(slots=True)
class _Group:
    held: Gauge  # this group's synapse_embedding_requests_held
    capacity: int = 1
    deployments: tuple[str, ...] = ()
    in_flight: int = 0  # calls
    texts_in_flight: int = 0
    queued: int = 0  # requests in the lanes
    lanes: dict[LaneKey, deque[_Item]] = field(default_factory=dict)

    def count(self, change: int) -> None:
        self.queued += change
        self.held.set(self.queued)


def capacity(deployments: tuple[Deployment, ...], max_in_flight: int) -> int:
    """Calls a group may have in flight: what its deployments declare, else the default."""
    declared = [d.max_parallel_requests for d in deployments]
    if declared and all(declared):
        return sum(declared)  # type: ignore[arg-type]
    return max_in_flight


class Batcher:
    def __init__(self, settings: SynapseSettings) -> None:
        self.settings = settings
        self.tuner = Tuner()
        self._groups: dict[str, _Group] = {}
        self._dispatches: dict[str, int] = {}  # queued batchable dispatches, by group
        self._tasks: set[asyncio.Task] = set()

    def configure(self, settings: SynapseSettings) -> None:
        self.settings = settings

    async def submit(
        self,
        group: str,
        deployments: tuple[Deployment, ...],
        params: bytes,
        texts: list[str],
        run: Run,
        trace: Trace,
        batchable: bool = True,
    ) -> Embedded:
        """Vectors for `texts` from one backend call, alone or shared with other requests."""
        state = self._groups.get(group)
        if state is None:
            state = self._groups[group] = _Group(metrics.EMBEDDING_HELD.labels(group))
        state.capacity = capacity(deployments, self.settings.embedding_batching.max_in_flight)
        state.deployments = tuple(d.id for d in deployments)
        if state.in_flight < state.capacity and not state.queued:
            return await self._now(group, state, texts, run, trace)
        if state.queued >= self.settings.queue_size:
            raise Overloaded(
                f"embeddings for {group!r}: {state.in_flight} calls in flight and "
                f"{state.queued} requests queued (queue_size)",
                headers={"Retry-After": "1"},
            )
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        aging = self.settings.batch_aging if trace.priority == "batch" else 0.0
        item = _Item(
            texts,
            sum(len(t.encode()) for t in texts),
            run,
            trace,
            loop.create_future(),
            now,
            now + aging,
        )
        batching = self.settings.embedding_batching
        key = (params, trace.priority, batchable and batching.enabled)
        state.lanes.setdefault(key, deque()).append(item)
        state.count(1)
        timeout = self.settings.queue_timeout
        item.deadline = loop.call_later(timeout, self._expire, group, state, key, item)
        self._dispatch(group, state)
        try:
            return await item.future
        except asyncio.CancelledError:
            self._withdraw(state, key, item)  # the caller left before its call was sent
            raise

    # -- queue -----------------------------------------------------------------------------
    def _withdraw(self, state: _Group, key: LaneKey, item: _Item) -> bool:
        lane = state.lanes.get(key)
        if lane is None or item not in lane:
            return False
        lane.remove(item)
        if not lane:
            del state.lanes[key]
        state.count(-1)
        if item.deadline is not None:
            item.deadline.cancel()
        return True

    def _expire(self, group: str, state: _Group, key: LaneKey, item: _Item) -> None:
        if self._withdraw(state, key, item) and not item.future.done():
            timeout = self.settings.queue_timeout
            item.future.set_exception(
                Overloaded(
                    f"embeddings for {group!r}: no free call within {timeout:g}s",
                    headers={"Retry-After": str(max(1, round(timeout)))},
                )
            )

    def _dispatch(self, group: str, state: _Group) -> None:
        """While the group has room, the first-ranked lane leaves as one call."""
        while state.lanes and state.in_flight < state.capacity:
            key = min(state.lanes, key=lambda k: state.lanes[k][0].rank)
            items = self._take(group, state, key)
            if not items:
                continue
            self._begin(state, sum(len(i.texts) for i in items))
            task = asyncio.create_task(self._send(group, state, key[1], items))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _take(self, group: str, state: _Group, key: LaneKey) -> list[_Item]:
        """The lane's first requests, as many as one call takes (one when batching loses)."""
        lane = state.lanes[key]
        limits = self.settings.embedding_batching
        most = 1
        if key[2]:
            count = self._dispatches[group] = self._dispatches.get(group, 0) + 1
            pays = self.tuner.batching_pays(state.deployments)
            if count % EXPLORE_EVERY == 0:  # try the other way
                most = 1 if pays else EXPLORE_BATCH
            elif pays:
                most = len(lane)
        items: list[_Item] = []
        texts = size = 0
        while lane and len(items) < most:
            item = lane[0]
            if item.future.done():  # its caller left a moment ago: not sent
                self._withdraw(state, key, item)
                continue
            if items and (
                texts + len(item.texts) > limits.max_batch or size + item.size > limits.max_bytes
            ):
                break
            lane.popleft()
            state.count(-1)
            if item.deadline is not None:
                item.deadline.cancel()
            items.append(item)
            texts += len(item.texts)
            size += item.size
        if not lane:
            state.lanes.pop(key, None)  # emptied here or by a withdrawal
        return items

    # -- calls -----------------------------------------------------------------------------
    def _begin(self, state: _Group, texts: int) -> None:
        state.in_flight += 1
        state.texts_in_flight += texts

    def _end(self, group: str, state: _Group, texts: int) -> None:
        state.in_flight -= 1
        state.texts_in_flight -= texts
        if state.in_flight == 0 and not state.queued:
            if self._groups.get(group) is state:
                del self._groups[group]  # held only while in use
            return
        self._dispatch(group, state)

    async def _now(
        self, group: str, state: _Group, texts: list[str], run: Run, trace: Trace
    ) -> Embedded:
        """Sent in the caller's own task, counted in flight so that newcomers queue."""
        busy = state.in_flight > 0
        self._begin(state, len(texts))
        metrics.EMBEDDING_BATCH_WAIT.labels(group).observe(0)
        metrics.EMBEDDING_BATCH_SIZE.labels(group).observe(len(texts))
        try:
            return await self._timed(run, texts, trace, state, learn=busy)
        finally:
            self._end(group, state, len(texts))

    async def _timed(
        self, run: Run, texts: list[str], trace: Trace, state: _Group, learn: bool
    ) -> Embedded:
        """`run`, teaching the tuner what the call cost when it met a backlog."""
        in_flight = state.texts_in_flight
        start = time.perf_counter()
        result = await run(texts, trace)
        if learn and trace.deployment is not None:
            self.tuner.record(trace.deployment, len(texts), time.perf_counter() - start, in_flight)
        return result

    async def _send(self, group: str, state: _Group, priority: str, items: list[_Item]) -> None:
        texts = [t for item in items for t in item.texts]
        first = items[0].trace
        trace = _call_trace(first, priority)
        now = time.monotonic()
        for item in items:
            metrics.EMBEDDING_BATCH_WAIT.labels(group).observe(now - item.queued)
        metrics.EMBEDDING_BATCH_SIZE.labels(group).observe(len(texts))
        try:
            result = await self._timed(items[0].run, texts, trace, state, learn=True)
        except GatewayError as exc:
            if len(items) > 1 and _callers_fault(exc):
                for item in items:  # one at a time: the group's bound holds
                    await self._resend(group, priority, item)
            else:
                _settle(items, trace, exc)
        except Exception as exc:  # every caller must hear of it
            _settle(items, trace, exc)
        except BaseException:
            for item in items:
                item.future.cancel()
            raise
        else:
            start = 0
            for item in items:
                end = start + len(item.texts)
                _copy(trace, item.trace)
                if not item.future.done():
                    item.future.set_result(
                        replace(
                            result,
                            vectors=result.vectors[start:end],
                            tokens=result.tokens[start:end],
                        )
                    )
                start = end
        finally:
            self._end(group, state, len(texts))

    async def _resend(self, group: str, priority: str, item: _Item) -> None:
        trace = _call_trace(item.trace, priority)
        metrics.EMBEDDING_BATCH_SIZE.labels(group).observe(len(item.texts))
        try:
            result = await item.run(item.texts, trace)
        except Exception as exc:  # delivered to its caller
            _settle([item], trace, exc)
        else:
            _copy(trace, item.trace)
            if not item.future.done():
                item.future.set_result(result)


def _callers_fault(exc: GatewayError) -> bool:
    """A 4xx that one of the texts may have caused (not a timeout, not backpressure)."""
    return 400 <= exc.status < 500 and exc.status not in (408, 429)


def _settle(items: list[_Item], trace: Trace, exc: Exception) -> None:
    for item in items:
        _copy(trace, item.trace)
        if not item.future.done():
            item.future.set_exception(exc)


def _copy(batch: Trace, caller: Trace) -> None:
    """What happened to the batch, on each caller's trace (its log line and metrics)."""
    caller.deployment = batch.deployment
    caller.retries = batch.retries
    caller.fallback = batch.fallback
    caller.errors.extend(batch.errors)


def _call_trace(trace: Trace, priority: str) -> Trace:
    """A trace for a call made on queued callers' behalf: the first caller's id, consumer and
    allowed groups (a lane's callers share one fallback chain), the lane's priority."""
    return Trace(
        trace.request_id, consumer=trace.consumer, priority=priority, allowed=trace.allowed
    )
