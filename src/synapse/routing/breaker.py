"""Circuit breaker per deployment, with LiteLLM's knobs: `allowed_fails` and `cooldown_time`.

Closed → (allowed_fails consecutive failures or a failed health check) → open for
cooldown_time → half-open: one trial request (or a passing health check) decides.
"""

from __future__ import annotations

import time
from enum import IntEnum


class State(IntEnum):
    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2


class Breaker:
    __slots__ = ("_opened_at", "_trial", "allowed_fails", "cooldown", "failures", "since", "state")

    def __init__(self, allowed_fails: int, cooldown: float) -> None:
        self.allowed_fails = allowed_fails
        self.cooldown = cooldown
        self.state = State.CLOSED
        self.failures = 0
        self.since = time.time()
        self._opened_at = 0.0
        self._trial = False

    def allows(self) -> bool:
        """Whether a request may go to this deployment now (may move open → half-open)."""
        if self.state is State.CLOSED:
            return True
        if self.state is State.OPEN:
            if time.monotonic() - self._opened_at < self.cooldown:
                return False
            self._set(State.HALF_OPEN)
        return not self._trial

    def begin(self) -> None:
        """A request is sent; in half-open it is the one trial."""
        if self.state is State.HALF_OPEN:
            self._trial = True

    def abandon(self) -> None:
        """The request ended without a verdict on the backend (client gone, bad input)."""
        self._trial = False

    def succeeded(self) -> None:
        self.failures = 0
        self._trial = False
        if self.state is not State.CLOSED:
            self._set(State.CLOSED)

    def failed(self) -> None:
        self.failures += 1
        self._trial = False
        if self.state is State.HALF_OPEN or self.failures >= self.allowed_fails:
            self.trip()

    def trip(self) -> None:
        self._opened_at = time.monotonic()
        self._trial = False
        if self.state is not State.OPEN:
            self._set(State.OPEN)

    def _set(self, state: State) -> None:
        self.state = state
        self.since = time.time()
