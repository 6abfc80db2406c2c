"""Process plumbing for the bench: free ports, readiness waits, /proc CPU and RSS readings."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def exit_on_sigterm() -> None:
    """Turn SIGTERM (e.g. from `timeout`) into SystemExit so `finally` stops our servers."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(
    url: str,
    deadline: float,
    proc: subprocess.Popen | None = None,
    headers: dict[str, str] | None = None,
) -> float:
    """Poll until `url` answers 200; returns seconds waited. Fails fast if `proc` died."""
    start = time.monotonic()
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
        try:
            req = urllib.request.Request(url, headers=headers or {})
            with urllib.request.urlopen(req, timeout=2) as resp:
                if resp.status == 200:
                    return time.monotonic() - start
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} not ready in time")


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            kids = Path(f"/proc/{pid}/task/{task}/children").read_text().split()
            out.extend(int(k) for k in kids)
    except OSError:
        pass
    return out


def tree(pid: int) -> list[int]:
    """`pid` and all its descendants (a gateway may fork workers)."""
    seen, todo = [], [pid]
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.append(p)
        todo.extend(_children(p))
    return seen


def cpu_seconds(pid: int) -> float:
    """utime + stime of the process tree, from /proc/<pid>/stat fields 14 and 15."""
    ticks = 0
    for p in tree(pid):
        try:
            stat = Path(f"/proc/{p}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        ticks += int(fields[11]) + int(fields[12])
    return ticks / CLK_TCK


def rss_bytes(pid: int) -> int:
    """Resident set of the process tree, from /proc/<pid>/statm."""
    total = 0
    for p in tree(pid):
        try:
            total += int(Path(f"/proc/{p}/statm").read_text().split()[1]) * PAGE
        except OSError:
            continue
    return total


def cpu_busy(cpus: str | None) -> float:
    """Busy seconds (all processes) on the listed CPUs ("0", "1,2"; None = all) from /proc/stat.

    Compared with a gateway's own CPU time this shows how much of its core something else
    (another user's tests, say) took during a run.
    """
    wanted = None if cpus is None else {f"cpu{c.strip()}" for c in cpus.split(",")}
    total = 0
    for line in Path("/proc/stat").read_text().splitlines():
        name, *vals = line.split()
        if not name.startswith("cpu"):
            break
        if (wanted is None and name == "cpu") or (wanted is not None and name in wanted):
            v = [int(x) for x in vals]
            total += sum(v[:8]) - v[3] - v[4]  # everything except idle and iowait
    return total / CLK_TCK


def loadavg() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


@dataclass
class Service:
    """A started server process (its own process group) with its log file."""

    name: str
    cmd: list[str]
    env: dict[str, str] | None
    log_path: Path
    ready_url: str
    ready_timeout: float = 60.0
    proc: subprocess.Popen | None = field(default=None, repr=False)
    startup_s: float = 0.0

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            self.cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.startup_s = wait_http(
            self.ready_url, deadline=time.monotonic() + self.ready_timeout, proc=self.proc
        )

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self, timeout: float = 40.0) -> int | None:
        """SIGTERM our process group, SIGKILL it if it outlives `timeout`."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            return self.proc.wait(timeout=5)

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""
