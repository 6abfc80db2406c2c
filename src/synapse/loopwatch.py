"""Event-loop lag, measured and named: every caller shares one loop, so a stall is everyone's.

A timer task on the loop wakes every `TICK` seconds and records how late it woke in
`synapse_event_loop_lag_seconds`. That tells how long a stall was, but only after it ends. A
daemon thread therefore watches the timer's last beat: when the loop is late by more than
`loop_stall_threshold`, it logs one line, while the stall is still happening, with the loop
thread's stack (the code running now) and the request that code serves.

Which request: Python 3.11's C tasks expose neither their context nor a per-task attribute to
another thread, so `Surface` registers (`serving`) the task answering a request with its trace
and route, and unregisters it when the request is finished (`done`); the watchdog reads
`asyncio.current_task(loop)` (a lookup in asyncio's own per-loop table) and this registry.
A stall outside any task (a protocol callback parsing bytes, say) has no request: the stack
still names the code.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING

from synapse import metrics

if TYPE_CHECKING:
    from synapse.routing import Trace

log = logging.getLogger("synapse.loopwatch")

TICK = 0.1  # seconds between the timer's wakes: 10 histogram samples a second
STACK_FRAMES = 30  # innermost frames logged (the log keeps lists of up to 32 items)
LOG_GAP = 1.0  # seconds between two stall lines: a loop late on every wake is not a flood

# Task answering a request → (its trace, its route). Set and cleared on the loop thread only;
# read by the watchdog thread (dict lookups are atomic under the GIL).
_SERVING: dict[asyncio.Task, tuple[Trace, str]] = {}


def serving(trace: Trace, route: str) -> None:
    """The running task now answers this request (called by the request middleware)."""
    task = asyncio.current_task()
    if task is not None:
        _SERVING[task] = (trace, route)


def done() -> None:
    """The running task's request is finished."""
    task = asyncio.current_task()
    if task is not None:
        _SERVING.pop(task, None)


class LoopWatch:
    """The lag timer (`run`, a task on the loop) and the stall watchdog (a daemon thread).

    `threshold()` is read at every check, so a config reload changes it; 0 turns the
    watchdog's line off (the metric is always measured).
    """

    def __init__(self, threshold: Callable[[], float]) -> None:
        self._threshold = threshold
        self._beat = 0.0  # monotonic time of the timer's last wake
        self._reported = 0.0  # the beat whose stall was logged: once per stall
        self._logged_at = -LOG_GAP  # monotonic time of the last line
        self._unlogged = 0  # stalls seen within LOG_GAP of a line, told in the next one
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._stopped = threading.Event()

    async def run(self) -> None:
        """Wake every TICK, record the lateness; start the watchdog thread first."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._beat = time.monotonic()
        thread = threading.Thread(target=self._watch, name="synapse-loopwatch", daemon=True)
        thread.start()
        lag = metrics.EVENT_LOOP_LAG
        try:
            while True:
                await asyncio.sleep(TICK)
                now = time.monotonic()
                lag.observe(max(0.0, now - self._beat - TICK))
                self._beat = now
        finally:
            self._stopped.set()

    def _watch(self) -> None:
        """Poll the beat a few times per threshold; log a stall once, while it lasts."""
        while not self._stopped.wait(self._poll_interval()):
            threshold = self._threshold()
            beat = self._beat
            late = time.monotonic() - beat - TICK
            if threshold > 0 and late > threshold and beat != self._reported:
                self._reported = beat
                if time.monotonic() - self._logged_at < LOG_GAP:
                    self._unlogged += 1
                    continue
                self._log_stall(late, threshold)
                self._logged_at, self._unlogged = time.monotonic(), 0

    def _poll_interval(self) -> float:
        threshold = self._threshold()
        return min(0.05, threshold / 4) if threshold > 0 else 0.5

    def _log_stall(self, late: float, threshold: float) -> None:
        frame = sys._current_frames().get(self._loop_thread)
        stack = traceback.extract_stack(frame)[-STACK_FRAMES:] if frame is not None else []
        task = asyncio.current_task(self._loop) if self._loop is not None else None
        trace, route = _SERVING.get(task, (None, None)) if task is not None else (None, None)
        fields: dict[str, object] = {
            "event": "loop_stall",
            "late_ms": round(late * 1000, 1),
            "threshold_ms": round(threshold * 1000, 1),
            "request_id": trace.request_id if trace else None,
            "route": route,
            "consumer": trace.consumer if trace else None,
            "task": task.get_name() if task is not None else None,
            "stalls_not_logged": self._unlogged,  # since the previous line (LOG_GAP)
            # most recent call last, as in a traceback
            "stack": [f"{f.filename}:{f.lineno} in {f.name}: {f.line}" for f in stack],
        }
        log.warning("event loop stalled", extra={"fields": fields})
