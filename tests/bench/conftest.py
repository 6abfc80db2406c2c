"""Fixtures for the bench tests: the bench/ harness on sys.path, stub backends on free ports."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench"
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))

STUB = Path(__file__).with_name("stub_backend.py")


def start_stub(tmp: Path, name: str, *extra: str) -> tuple[subprocess.Popen, str]:
    """An aiohttp OpenAI stub in its own process; returns (process, base URL with /v1)."""
    port_file = tmp / f"{name}.port"
    proc = subprocess.Popen([sys.executable, str(STUB), str(port_file), *extra])
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if port_file.exists() and port_file.read_text().strip():
            return proc, f"http://127.0.0.1:{port_file.read_text().strip()}/v1"
        if proc.poll() is not None:
            raise RuntimeError(f"stub {name} exited with {proc.returncode}")
        time.sleep(0.05)
    proc.kill()
    raise TimeoutError(f"stub {name} did not start")


@pytest.fixture
def stubs(tmp_path: Path) -> Iterator[dict[str, str]]:
    """Two stub servers: 'gateway' (needs key sk-test) and 'direct' (no key)."""
    procs = []
    try:
        gw, gw_url = start_stub(tmp_path, "gateway", "--key", "sk-test")
        procs.append(gw)
        direct, direct_url = start_stub(tmp_path, "direct")
        procs.append(direct)
        yield {"gateway": gw_url, "direct": direct_url}
    finally:
        for p in procs:
            p.terminate()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
