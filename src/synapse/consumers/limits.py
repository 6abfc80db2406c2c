"""Per-consumer `rpm` and `max_parallel`, checked before a request reaches any handler.

Each pod enforces its share of the deployment-wide limit (`Consumer.rpm` and
`Consumer.max_parallel` are already divided by `synapse_settings.replicas`), so the sum over
the pods never exceeds the configured limit without any shared store; see README
"Consumers" for the trade-off. Counts are kept by consumer name, so they survive reloads.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from synapse.config.model import Consumer
from synapse.errors import Overloaded

WINDOW = 60.0  # seconds: rpm is "requests in any 60 s window", not per calendar minute


@dataclass(slots=True)
class _Usage:
    started: deque[float] = field(default_factory=deque)  # monotonic times, last WINDOW s
    in_flight: int = 0


class Limits:
    def __init__(self) -> None:
        self._usage: dict[str, _Usage] = {}

    @contextmanager
    def hold(self, consumer: Consumer, now: float | None = None) -> Iterator[None]:
        """Admit one request of `consumer` for the duration of the block, or raise 429."""
        usage = self._usage.setdefault(consumer.name, _Usage())
        now = time.monotonic() if now is None else now
        started = usage.started
        while started and now - started[0] >= WINDOW:
            started.popleft()
        if consumer.rpm is not None and len(started) >= consumer.rpm:
            wait = max(1, math.ceil(started[-consumer.rpm] + WINDOW - now))
            raise Overloaded(
                f"consumer {consumer.name!r} is over its limit of requests per minute",
                code="rate_limit_exceeded",
                headers={"Retry-After": str(wait)},
            )
        if consumer.max_parallel is not None and usage.in_flight >= consumer.max_parallel:
            raise Overloaded(
                f"consumer {consumer.name!r} already has {usage.in_flight} requests in "
                "progress (its max_parallel)",
                code="parallel_limit_exceeded",
                headers={"Retry-After": "1"},
            )
        if consumer.rpm is not None:
            started.append(now)
        usage.in_flight += 1
        try:
            yield
        finally:
            usage.in_flight -= 1


LIMITS = Limits()
