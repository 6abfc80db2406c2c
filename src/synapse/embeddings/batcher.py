"""Micro-batching: concurrent embedding requests for one group become one backend call.

A request is sent at once when nothing else for its group is queued or in flight, so a lone
caller never waits. While a call is in flight, newcomers queue in the lane of their parameters
(requests with different parameters never share a call) and go out together when the group's
calls have all returned, when `max_batch` texts or `max_bytes` have gathered, or after
`max_wait_ms`, whichever comes first; the answer is split back to each caller in order. A caller error on a batch (a 4xx: one text
too long, say) re-sends each request alone, so one bad text fails only its own request.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace

from synapse import metrics
from synapse.config.schema import EmbeddingBatching
from synapse.errors import GatewayError
from synapse.routing import Trace

# Sends a list of texts to the backend, recording what happened in the trace it is given.


@dataclass(slots=True)
class Embedded:
    """Vectors for a list of texts, in order, and each text's share of the tokens."""

    vectors: list[list[float]]
    tokens: list[int]  # per text, apportioned from the call's count by text length


Run = Callable[[list[str], Trace], Awaitable[Embedded]]


@dataclass(slots=True)
class _Item:
    texts: list[str]
    size: int
    run: Run
    trace: Trace
    future: asyncio.Future
    queued: float


@dataclass(slots=True)
class _Lane:
    pending: list[_Item] = field(default_factory=list)
    texts: int = 0
    bytes: int = 0
    timer: asyncio.TimerHandle | None = None


class Batcher:
    def __init__(self, settings: EmbeddingBatching) -> None:
        self.settings = settings
        self._lanes: dict[tuple[str, bytes], _Lane] = {}
        self._in_flight: dict[str, int] = {}  # calls under way, by group
        self._tasks: set[asyncio.Task] = set()

    def configure(self, settings: EmbeddingBatching) -> None:
        self.settings = settings

    async def submit(
        self,
        group: str,
        params: bytes,
        texts: list[str],
        run: Run,
        trace: Trace,
        batchable: bool = True,
    ) -> Embedded:
        limits = self.settings
        size = sum(len(t.encode()) for t in texts)
        solo = self._alone(group) or len(texts) >= limits.max_batch or size >= limits.max_bytes
        if not limits.enabled or not batchable or solo:
            return await self._now(group, texts, run, trace)
        key = (group, params)
        lane = self._lanes.get(key)
        if lane is not None and (
            lane.texts + len(texts) > limits.max_batch or lane.bytes + size > limits.max_bytes
        ):
            self._flush(group, key, lane)  # full: out it goes, this request opens the next
            lane = None
        if lane is None:
            lane = self._lanes[key] = _Lane()
        loop = asyncio.get_running_loop()
        item = _Item(texts, size, run, trace, loop.create_future(), time.perf_counter())
        lane.pending.append(item)
        lane.texts += len(texts)
        lane.bytes += size
        if lane.texts >= limits.max_batch or lane.bytes >= limits.max_bytes:
            self._flush(group, key, lane)
        elif lane.timer is None:
            lane.timer = loop.call_later(limits.max_wait_ms / 1000, self._flush, group, key, lane)
        return await item.future

    def _alone(self, group: str) -> bool:
        """Nothing for `group` is in flight or queued: no company is coming, no wait."""
        if self._in_flight.get(group):
            return False
        return not any(g == group and lane.pending for (g, _), lane in self._lanes.items())

    def _begin(self, group: str) -> None:
        self._in_flight[group] = self._in_flight.get(group, 0) + 1

    def _end(self, group: str) -> None:
        left = self._in_flight[group] - 1
        if left:
            self._in_flight[group] = left
            return
        del self._in_flight[group]
        # The backend is idle: what queued meanwhile goes now, not at the end of its window.
        for key, lane in [(k, lane) for k, lane in self._lanes.items() if k[0] == group]:
            self._flush(group, key, lane)

    async def _now(self, group: str, texts: list[str], run: Run, trace: Trace) -> Embedded:
        """Sent in the caller's own task, counted in flight so that newcomers batch."""
        self._begin(group)
        metrics.EMBEDDING_BATCH_WAIT.labels(group).observe(0)
        metrics.EMBEDDING_BATCH_SIZE.labels(group).observe(len(texts))
        try:
            return await run(texts, trace)
        finally:
            self._end(group)

    def _flush(self, group: str, key: tuple[str, bytes], lane: _Lane) -> None:
        if lane.timer is not None:
            lane.timer.cancel()
            lane.timer = None
        items = [i for i in lane.pending if not i.future.done()]  # done: the caller left
        del self._lanes[key]  # the next newcomer opens a fresh lane
        if not items:
            return
        self._begin(group)
        task = asyncio.create_task(self._send(group, items))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, group: str, items: list[_Item]) -> None:
        texts = [t for item in items for t in item.texts]
        trace = Trace(items[0].trace.request_id)
        now = time.perf_counter()
        for item in items:
            metrics.EMBEDDING_BATCH_WAIT.labels(group).observe(now - item.queued)
        metrics.EMBEDDING_BATCH_SIZE.labels(group).observe(len(texts))
        try:
            result = await items[0].run(texts, trace)
        except GatewayError as exc:
            if len(items) > 1 and _callers_fault(exc):
                await asyncio.gather(*(self._resend(group, item) for item in items))
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
            self._end(group)

    async def _resend(self, group: str, item: _Item) -> None:
        trace = Trace(item.trace.request_id)
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
