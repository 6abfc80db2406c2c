"""No request stalls the gateway (issue 24): every hostile shape (tests/gateway/hostile.py), on
both listeners and every route it applies to, up to its full size, while a probe checks that
`/health/liveliness` answers on both ports within PROBE_TIMEOUT and the gateway's memory stays
bounded.

Each shape runs against a gateway of its own (a stall or a peak of one shape must not be
blamed on the next), once at full size (an explicit example) and EXAMPLES times at a random
fraction of it on a random route. No shrinking: a failing example of these sizes takes seconds,
and the shape and size already say what failed. Random on each run; no example database.
"""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from tests.conftest import MASTER_KEY, Backend, Gateway
from tests.gateway import hostile

PROBE_TIMEOUT = 1.0  # seconds: the stalls of issue 24 were 4-60 s
PROBE_EVERY = 0.1
STALL_WAIT = 300.0  # how long a late probe is waited for, to report the stall's length
RSS_BOUND = 512 * 1024 * 1024  # peak resident memory: half the pod's 1 GiB limit
UNREAD_GROWTH = 64 * 1024 * 1024  # memory a client that does not read may make us hold
EXAMPLES = 3  # random examples per shape, besides the one at full size
FRACTIONS = (1 / 8, 1 / 4, 1 / 2)


def status_kib(pid: int, field: str) -> int:
    """A /proc/<pid>/status size field (VmRSS, VmHWM) in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} for pid {pid}")


class Probe:
    """Liveness on both ports every PROBE_EVERY, each on a fresh connection, and RSS, in a
    thread while an example runs: the slowest answer and the largest RSS seen."""

    def __init__(self, gateway: Gateway) -> None:
        self.ports = (gateway.port, gateway.ollama_port)
        self.pid = gateway.proc.pid
        self.slowest = 0.0
        self.failures: list[str] = []
        self.rss_max = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Probe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            for port in self.ports:
                self._probe(port)
            self.rss_max = max(self.rss_max, status_kib(self.pid, "VmRSS"))
            self._stop.wait(PROBE_EVERY)

    def _probe(self, port: int) -> None:
        """One liveness request, waited for up to STALL_WAIT so a failure says how long."""
        started = time.monotonic()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=STALL_WAIT)
        try:
            conn.request("GET", "/health/liveliness")
            status = conn.getresponse().status
        except OSError as exc:
            self.failures.append(f"port {port}: {type(exc).__name__}")
            status = 0
        finally:
            conn.close()
        self.slowest = max(self.slowest, time.monotonic() - started)
        if status != 200:
            self.failures.append(f"port {port}: status {status}")


def wait_until_live(gateway: Gateway, timeout: float = 120.0) -> None:
    """Before an example: the gateway answers quickly again (an earlier one may still run)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        probe = Probe(gateway)
        for port in probe.ports:
            probe._probe(port)
        if not probe.failures and probe.slowest < PROBE_TIMEOUT / 2:
            return
        time.sleep(0.2)
    raise TimeoutError("the gateway did not recover from the previous example")


@pytest.fixture(scope="module")
def backends() -> Iterator[tuple[Backend, Backend]]:
    openai, ollama = Backend("openai"), Backend("ollama")
    yield openai, ollama
    openai.stop()
    ollama.stop()


@pytest.mark.parametrize("shape", list(hostile.SHAPES.values()), ids=list(hostile.SHAPES))
def test_no_shape_stalls_the_loop_or_holds_unbounded_memory(
    shape: hostile.Shape, backends: tuple[Backend, Backend], tmp_path: Path
) -> None:
    gateway = Gateway(hostile.config(*backends), tmp_path)
    try:
        _explore(shape, gateway)
    finally:
        gateway.stop()


def _explore(shape: hostile.Shape, gateway: Gateway) -> None:
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        phases=(Phase.explicit, Phase.generate),
        suppress_health_check=list(HealthCheck),
    )
    @given(target=st.sampled_from(shape.targets), fraction=st.sampled_from(FRACTIONS))
    @example(target=shape.targets[0], fraction=1.0)
    def one(target: hostile.Target, fraction: float) -> None:
        size = max(1, int(shape.full * fraction))
        data = shape.build(size, target, MASTER_KEY)
        port = gateway.port if target.listener == "openai" else gateway.ollama_port
        wait_until_live(gateway)
        rss_before = status_kib(gateway.proc.pid, "VmRSS")
        with Probe(gateway) as probe, ThreadPoolExecutor(shape.connections) as pool:
            outcomes = list(
                pool.map(
                    lambda _: hostile.deliver(port, data, reads=shape.reads),
                    range(shape.connections),
                )
            )
        what = f"{shape.name} x{size} ({len(data)} bytes) to {target}"
        assert probe.failures == [] and probe.slowest <= PROBE_TIMEOUT, (
            f"{what}: liveness answered in {probe.slowest:.2f}s at worst; {probe.failures[:3]}"
        )
        peak = status_kib(gateway.proc.pid, "VmHWM")
        assert peak <= RSS_BOUND, f"{what}: peak RSS {peak >> 20} MiB"
        if not shape.reads:
            grown = probe.rss_max - rss_before
            assert grown <= UNREAD_GROWTH, f"{what}: RSS grew {grown >> 20} MiB while unread"
        for outcome in outcomes:
            assert 500 not in outcome.statuses, f"{what}: 500"

    one()
