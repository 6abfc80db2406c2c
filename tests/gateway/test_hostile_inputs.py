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

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from tests.conftest import MASTER_KEY, Backend, Gateway
from tests.gateway import hostile
from tests.gateway.liveness import LivenessProbe

PROBE_TIMEOUT = 1.0  # seconds: the stalls of issue 24 were 4-60 s
PROBE_EVERY = 0.1
STALL_WAIT = 300.0  # how long a late probe is waited for, to report the stall's length
RSS_BOUND = 512 * 1024 * 1024  # peak resident memory: half the pod's 1 GiB limit
UNREAD_GROWTH = 64 * 1024 * 1024  # memory a client that does not read may make us hold
EXAMPLES = 3  # random examples per shape, besides the one at full size
FRACTIONS = (1 / 8, 1 / 4, 1 / 2)


def probe(gateway: Gateway) -> LivenessProbe:
    """Liveness on both ports every PROBE_EVERY, each waited for up to STALL_WAIT (so a
    failure says how long the stall was)."""
    ports = (gateway.port, gateway.ollama_port)
    return LivenessProbe(gateway, ports, every=PROBE_EVERY, wait=STALL_WAIT)


def wait_until_live(gateway: Gateway, timeout: float = 120.0) -> None:
    """Before an example: the gateway answers quickly again (an earlier one may still run)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        check = probe(gateway)
        for port in check.ports:
            check.ask(port)
        if not check.failures and check.slowest < PROBE_TIMEOUT / 2:
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
        with probe(gateway) as watch, ThreadPoolExecutor(shape.connections) as pool:
            outcomes = list(
                pool.map(
                    lambda _: hostile.deliver(port, data, reads=shape.reads),
                    range(shape.connections),
                )
            )
        what = f"{shape.name} x{size} ({len(data)} bytes) to {target}"
        assert watch.answered_within(PROBE_TIMEOUT), (
            f"{what}: liveness answered in {watch.slowest:.2f}s at worst; {watch.failures[:3]}"
        )
        peak = watch.rss_peak
        assert peak <= RSS_BOUND, f"{what}: peak RSS {peak >> 20} MiB"
        if not shape.reads:
            grown = watch.rss_max - watch.rss_before
            assert grown <= UNREAD_GROWTH, f"{what}: RSS grew {grown >> 20} MiB while unread"
        for outcome in outcomes:
            assert 500 not in outcome.statuses, f"{what}: 500"

    one()
