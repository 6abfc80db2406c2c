"""A liveness probe that runs beside a hostile request: the loop answering others is the
property every bounded-work test checks (issue 24), so there is one probe for all of them."""

from __future__ import annotations

import http.client
import os
import threading
import time
from pathlib import Path

from tests.conftest import Gateway


def proc_status_bytes(pid: int, field: str) -> int:
    """A size field of /proc/PID/status (VmRSS, VmHWM: the peak), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """User and system CPU time a process has used (/proc/PID/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class LivenessProbe:
    """Asks `/health/liveliness` on `ports` (default: the main one) every `every` seconds in a
    thread, each time on a fresh connection waited for up to `wait` (so a stall is measured, not
    cut off). Keeps the slowest answer, failures, answers, the largest RSS seen; on exit, the
    gateway's CPU time used meanwhile and its peak RSS (VmHWM)."""

    def __init__(
        self,
        gateway: Gateway,
        ports: tuple[int, ...] | None = None,
        every: float = 0.05,
        wait: float = 300.0,
    ) -> None:
        self.ports = ports or (gateway.port,)
        self.pid = gateway.proc.pid
        self.every, self.wait = every, wait
        self.slowest = 0.0
        self.answers = 0
        self.failures: list[str] = []
        self.rss_before = proc_status_bytes(self.pid, "VmRSS")
        self.rss_max = self.rss_before
        self.rss_peak = self.rss_before
        self._cpu_before = cpu_seconds(self.pid)
        self.cpu = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> LivenessProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.cpu = cpu_seconds(self.pid) - self._cpu_before
        self.rss_peak = proc_status_bytes(self.pid, "VmHWM")

    @property
    def rss_growth(self) -> int:
        """Peak resident memory above what the gateway held when the probe began."""
        return self.rss_peak - self.rss_before

    def answered_within(self, limit: float) -> bool:
        return self.answers > 0 and not self.failures and self.slowest <= limit

    def _run(self) -> None:
        while not self._stop.is_set():
            for port in self.ports:
                self.ask(port)
            self.rss_max = max(self.rss_max, proc_status_bytes(self.pid, "VmRSS"))
            self._stop.wait(self.every)

    def ask(self, port: int) -> None:
        """One liveness request; how long it took counts whatever its outcome."""
        started = time.monotonic()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=self.wait)
        try:
            conn.request("GET", "/health/liveliness")
            status = conn.getresponse().status
        except OSError as exc:
            self.failures.append(f"port {port}: {type(exc).__name__}")
            status = 0
        finally:
            conn.close()
        self.slowest = max(self.slowest, time.monotonic() - started)
        if status == 200:
            self.answers += 1
        elif status:
            self.failures.append(f"port {port}: status {status}")
