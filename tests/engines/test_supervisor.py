"""The supervisor on plain `http.server` children: readiness, restart after a kill, stop."""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from synapse.local.engines import EngineSpec
from synapse.local.supervisor import StartError, Supervisor, free_port

HTTP = (sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "{port}")


def _spec(name: str, argv: tuple[str, ...] = HTTP, timeout: float = 30.0) -> EngineSpec:
    return EngineSpec(name, 0, "/", argv, {}, timeout)


def _wait_for(predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def test_killed_child_is_restarted_and_serves_again(tmp_path: Path) -> None:
    events: list[str] = []
    sup = Supervisor(tmp_path, on_event=events.append)
    try:
        child = sup.start(_spec("web"), free_port())
        sup.wait_ready(child)
        first = child.pid
        sup.kill("web", signal.SIGKILL)
        _wait_for(lambda: child.restarts == 1 and child.running())
        assert child.pid != first
        sup.wait_ready(child)
        assert any("web exited" in e and "restarting" in e for e in events)
        assert "start:" in child.log.read_text()
    finally:
        sup.stop_all()
    assert not child.running()


def test_child_that_dies_during_start_is_reported_with_its_log(tmp_path: Path) -> None:
    sup = Supervisor(tmp_path)
    argv = (sys.executable, "-c", "import sys; print('no weights here'); sys.exit(3)")
    try:
        child = sup.start(_spec("broken", argv), free_port())  # restart on: still fails fast
        with pytest.raises(StartError, match=r"(?s)broken exited with code 3.*no weights here"):
            sup.wait_ready(child)
    finally:
        sup.stop_all()


def test_child_that_never_answers_is_reported_not_ready(tmp_path: Path) -> None:
    sup = Supervisor(tmp_path)
    argv = (sys.executable, "-c", "import time; time.sleep(120)")
    try:
        child = sup.start(_spec("silent", argv), free_port())
        with pytest.raises(StartError, match="silent not ready"):
            sup.wait_ready(child, timeout=1)
    finally:
        sup.stop_all(grace=5)
    assert not child.running()


def test_stop_all_ends_every_child_and_refuses_new_ones(tmp_path: Path) -> None:
    sup = Supervisor(tmp_path)
    children = [sup.start(_spec(f"web{i}"), free_port()) for i in range(3)]
    for child in children:
        sup.wait_ready(child)
    sup.stop_all(grace=10)
    assert not any(c.running() for c in children)
    assert all(c.proc is not None and c.proc.returncode is not None for c in children)
    with pytest.raises(StartError, match="stopping"):
        sup.start(_spec("late"), free_port())
