"""Live state of one deployment: in-flight count, bounded wait queue, circuit breaker.

The queue serves `interactive` requests before `batch` ones: a batch waiter ranks as if it
had arrived `batch_aging` seconds later than it did, so it goes after interactive requests
that arrive within that time but before any arriving later; batch is delayed, never starved.
When the queue is full an interactive newcomer takes the place of the newest batch waiter
(which gets the 429 it would have got had it come last), so a bulk indexer that fills the
queue never locks chat out.

State outlives config reloads when the deployment is unchanged, so limits and breakers
stay correct for requests that straddle a reload.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time

from synapse import metrics
from synapse.config import Deployment
from synapse.errors import Overloaded
from synapse.routing.breaker import Breaker, State


class DeploymentState:
    def __init__(
        self,
        deployment: Deployment,
        *,
        allowed_fails: int,
        cooldown: float,
        queue_size: int,
        queue_timeout: float,
        batch_aging: float = 10.0,
    ) -> None:
        self.deployment = deployment
        self.breaker = Breaker(allowed_fails, cooldown)
        self.in_flight = 0
        self.queue_size = queue_size
        self.queue_timeout = queue_timeout
        self.batch_aging = batch_aging
        # (rank, arrival number, waiter, batch): the smallest rank is served first.
        self._waiters: list[tuple[float, int, asyncio.Future[None], bool]] = []
        self._arrivals = itertools.count()
        self.last_failure: tuple[str, float] | None = None  # (reason, unix time)
        self._g_in_flight = metrics.IN_FLIGHT.labels(deployment.id)
        self._g_queued = metrics.QUEUED.labels(deployment.id)
        self._g_up = metrics.DEPLOYMENT_UP.labels(
            deployment.group, deployment.id, deployment.provider
        )
        self._g_breaker = metrics.BREAKER_STATE.labels(deployment.id)
        self.publish_health()

    @property
    def id(self) -> str:
        return self.deployment.id

    @property
    def full(self) -> bool:
        limit = self.deployment.max_parallel_requests
        return limit is not None and self.in_flight >= limit

    @property
    def queue_full(self) -> bool:
        return len(self._waiters) >= self.queue_size

    async def acquire(self, priority: str = "interactive") -> None:
        """Take a slot, waiting in a bounded queue with a deadline; Overloaded otherwise."""
        if not self.full:
            self.in_flight += 1
            self._g_in_flight.set(self.in_flight)
            return
        batch = priority == "batch"
        if self.queue_full and (batch or not self._displace_batch()):
            raise self._queue_full()
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        rank = time.monotonic() + (self.batch_aging if batch else 0.0)
        entry = (rank, next(self._arrivals), waiter, batch)
        heapq.heappush(self._waiters, entry)
        self._g_queued.set(len(self._waiters))
        # Not asyncio.wait_for: on 3.11 it can swallow a cancellation that arrives as the slot
        # is handed over, so a request whose client has gone would still reach the backend.
        try:
            async with asyncio.timeout(self.queue_timeout):
                await waiter
        except TimeoutError:
            if _handed_over(waiter):
                self.release()  # handed over just as the deadline passed
            raise Overloaded(
                f"deployment {self.id}: no free slot within {self.queue_timeout:g}s",
                headers={"Retry-After": str(max(1, round(self.queue_timeout)))},
            ) from None
        except asyncio.CancelledError:
            if _handed_over(waiter):
                self.release()  # the slot was handed to us as we were cancelled
            raise
        finally:
            if entry in self._waiters:  # timed out or cancelled while queued
                self._waiters.remove(entry)
                heapq.heapify(self._waiters)
            self._g_queued.set(len(self._waiters))
        # The releasing request handed its slot over: in_flight is unchanged.

    def _queue_full(self, why: str = "") -> Overloaded:
        return Overloaded(
            f"deployment {self.id} is at max_parallel_requests and its queue is full{why}",
            headers={"Retry-After": "1"},
        )

    def _displace_batch(self) -> bool:
        """Refuse the newest batch waiter to make room; False when none is queued."""
        queued = [e for e in self._waiters if e[3] and not e[2].done()]
        if not queued:
            return False
        newest = max(queued, key=lambda e: e[1])
        self._waiters.remove(newest)
        heapq.heapify(self._waiters)
        newest[2].set_exception(self._queue_full(": a batch request gives way to interactive"))
        return True

    def release(self) -> None:
        while self._waiters:
            waiter = heapq.heappop(self._waiters)[2]
            if not waiter.done():
                waiter.set_result(None)
                return
        self.in_flight -= 1
        self._g_in_flight.set(self.in_flight)

    def record(self, ok: bool, reason: str | None = None) -> None:
        """A request's verdict on the backend; a failure's `reason` is kept for /health."""
        before = self.breaker.state
        if ok:
            self.breaker.succeeded()
        else:
            self.note_failure(reason or "failed")
            self.breaker.failed()
        if self.breaker.state is not before:
            self.publish_health()

    def note_failure(self, reason: str) -> None:
        self.last_failure = (reason, time.time())

    def failure_text(self) -> str | None:
        """`reason, N s ago` for the last failure, naming no internal address."""
        if self.last_failure is None:
            return None
        reason, at = self.last_failure
        return f"{reason}, {max(0, round(time.time() - at))}s ago"

    def publish_health(self) -> None:
        state = self.breaker.state
        self._g_up.set(0 if state is State.OPEN else 1)
        self._g_breaker.set(int(state))

    def snapshot(self) -> dict[str, object]:
        d = self.deployment
        return {
            "id": d.id,
            "model": d.group,
            "provider": d.provider,
            "backend_model": d.backend_model,
            "api_base": d.public_api_base,
            "state": self.breaker.state.name.lower().replace("_", "-"),
            "since": self.breaker.since,
            "consecutive_failures": self.breaker.failures,
            "in_flight": self.in_flight,
            "queued": len(self._waiters),
            "max_parallel_requests": d.max_parallel_requests,
            "last_failure": None
            if self.last_failure is None
            else {"reason": self.last_failure[0], "at": self.last_failure[1]},
        }


def _handed_over(waiter: asyncio.Future[None]) -> bool:
    """A slot was given to this waiter (not refused by displacement, not cancelled)."""
    return waiter.done() and not waiter.cancelled() and waiter.exception() is None
