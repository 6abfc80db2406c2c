"""What an engine still being installed tells its callers, instead of "connection refused".

`make run` installs .venv-engines and compiles llama.cpp in the background (16-22 min at load
5-7 on a shared 2-core machine). Until an engine is installed, its port answers every request
with 503 "installing: ~N min left, see <log>", so the gateway's 503 and /health say why its
group cannot answer; the stack's progress lines use the same words.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

# The compile's progress lines (mk/engines.mk prints ninja's `[n/m] file` steps into the log).
COMPILE_STEP = re.compile(rb"^\s*\[(\d+)/(\d+)\]", re.MULTILINE)
CACHED_WHEEL = b"using the cached wheel"
TAIL_BYTES = 64 * 1024  # only the log's tail is read: it grows to megabytes
COMPILE_MINUTES = 9.0  # llama.cpp on 2 cores, when the log shows no compile rate yet
VENV_MINUTES = 1.5  # .venv-engines' pip install, before the compile starts
DISCARD_LIMIT = 32 << 20  # request bodies read (and dropped) before answering: audio uploads


class InstallProgress:
    """Estimates the time left from the install log's compile steps, read as they advance."""

    def __init__(self, log: Path | None, clock: Callable[[], float] = time.monotonic) -> None:
        self.log = log
        self._clock = clock
        self._first: tuple[float, int] | None = None  # (when, step) of the first step seen
        self._lock = threading.Lock()

    def _tail(self) -> bytes:
        if self.log is None:
            return b""
        try:
            with self.log.open("rb") as f:
                f.seek(max(0, f.seek(0, 2) - TAIL_BYTES))
                return f.read(TAIL_BYTES)
        except OSError:
            return b""

    def minutes_left(self, compile_too: bool = True) -> float:
        """Until the install ends; `compile_too=False`: until .venv-engines is installed (the
        embeddings and audio engines), which comes before llama.cpp's compile."""
        tail = self._tail()
        steps = COMPILE_STEP.findall(tail)
        if not steps:
            if CACHED_WHEEL in tail:
                return 0.5
            return VENV_MINUTES + (COMPILE_MINUTES if compile_too else 0.0)
        done, total = (int(n) for n in steps[-1])
        now = self._clock()
        with self._lock:
            if self._first is None or done < self._first[1]:
                self._first = (now, done)
            since, first = self._first
        if done > first and now > since:
            per_step = (now - since) / (done - first)
            return max(0.0, (total - done) * per_step / 60)
        return COMPILE_MINUTES * max(0, total - done) / max(total, 1)

    def describe(self, compile_too: bool = True) -> str:
        """`installing: ~N min left, see <log>`: one phrase for 503s, /health and the terminal."""
        minutes = max(1, round(self.minutes_left(compile_too)))
        where = f"see {self.log}" if self.log else "see `make run`'s output"
        return f"installing: ~{minutes} min left, {where}"


class Placeholder:
    """Holds a pending engine's port on 127.0.0.1 and answers 503 with `describe()`."""

    def __init__(self, port: int, describe: Callable[[], str]) -> None:
        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if 0 < length <= DISCARD_LIMIT:  # read it: closing on unread bytes resets
                    self.rfile.read(length)
                body = describe().encode()
                self.send_response(503)
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Retry-After", "60")
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(body)
                self.close_connection = True

            do_GET = do_POST = do_PUT = do_DELETE = _answer

            def log_message(self, format: str, *args: object) -> None:
                pass  # the gateway logs the 503s

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Free the port for the engine."""
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)
