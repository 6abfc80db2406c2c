"""Whether batching pays on a deployment, learned from its live calls.

Batching helps an engine that pays a cost per call (a CPU engine embedding one request at a
time) and can hurt one that batches concurrent requests itself or embeds a long input more
slowly per text. Each call yields its time per text at the concurrency it met: the call's
latency over the texts in flight in the group when it started (its own included) - by Little's
law the inverse of the throughput the engine gave. One moving average for calls of one text,
one for batched calls; batching goes on while the batched average is no worse.
"""

from __future__ import annotations

from dataclasses import dataclass

ALPHA = 0.3  # weight of the newest sample: a change of workload shows within a few calls


@dataclass(slots=True)
class _Averages:
    single: float | None = None  # seconds per text, calls of one text
    batched: float | None = None  # seconds per text, calls of several

    def add(self, texts: int, per_text: float) -> None:
        if texts == 1:
            self.single = per_text if self.single is None else _mix(self.single, per_text)
        else:
            self.batched = per_text if self.batched is None else _mix(self.batched, per_text)

    @property
    def batching_pays(self) -> bool | None:
        """None until both kinds of call have been seen."""
        if self.single is None or self.batched is None:
            return None
        return self.batched <= self.single


def _mix(old: float, new: float) -> float:
    return old + ALPHA * (new - old)


class Tuner:
    def __init__(self) -> None:
        self._by_deployment: dict[str, _Averages] = {}

    def record(self, deployment: str, texts: int, seconds: float, texts_in_flight: int) -> None:
        """A successful call of `texts` texts that took `seconds` (only calls that met a
        backlog are recorded: an idle engine says nothing about batching)."""
        averages = self._by_deployment.setdefault(deployment, _Averages())
        averages.add(texts, seconds / max(texts_in_flight, texts, 1))

    def batching_pays(self, deployments: tuple[str, ...]) -> bool:
        """Batch unless every measured deployment of the group says it loses."""
        verdicts = [
            self._by_deployment[d].batching_pays for d in deployments if d in self._by_deployment
        ]
        known = [v for v in verdicts if v is not None]
        return not known or any(known)

    def forget(self, keep: set[str]) -> None:
        """Deployments gone from the config are forgotten (bounded by the config's size)."""
        for name in set(self._by_deployment) - keep:
            del self._by_deployment[name]
