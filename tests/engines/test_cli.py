"""`synapse local-stack` as `make run` starts it: a real child process and real signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from synapse.local.supervisor import free_port

ROOT = Path(__file__).resolve().parents[2]
ENGINES_VENV = Path(os.environ.get("SYNAPSE_ENGINES_VENV", ROOT / ".venv-engines"))
VLLM_VENV = Path(os.environ.get("SYNAPSE_VLLM_VENV", ROOT / ".venv-vllm"))


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "synapse", "local-stack", *args]


@pytest.fixture
def local_ollama() -> Iterator[str]:
    """The gateway tests' Ollama stand-in, playing a developer's own Ollama."""
    port = free_port()
    cmd = [sys.executable, "-m", "tests.stubs.backend", "--kind", "ollama", "--port", str(port)]
    proc = subprocess.Popen(cmd, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    try:
        while True:
            assert proc.poll() is None, "the Ollama stand-in exited"
            try:
                httpx.get(url + "/api/tags", timeout=0.5).raise_for_status()
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "the Ollama stand-in did not answer"
                time.sleep(0.05)
        yield url
    finally:
        proc.kill()
        proc.wait()


def test_missing_vllm_venv_fails_with_the_install_hint(tmp_path: Path) -> None:
    """Only vLLM's venv is required up front: .venv-engines may still be installing."""
    done = subprocess.run(
        _cli("--vllm-venv", str(tmp_path / "nope"), "--state-dir", str(tmp_path), "--port", "0"),
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1
    assert "make vllm" in " ".join(done.stderr.split())


@pytest.mark.engines
def test_stack_uses_local_ollama_and_stops_everything_on_sigterm(
    tmp_path: Path, local_ollama: str
) -> None:
    cmd = _cli(
        "--engines-venv", str(ENGINES_VENV), "--vllm-venv", str(VLLM_VENV),
        "--state-dir", str(tmp_path),
        "--port", "0", "--ollama-port", "0", "--metrics-port", "0", "--free-ports", "--ollama-url", local_ollama,
        "--json",
    )  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        summary = json.loads(proc.stdout.readline())
        gateway = summary["gateway"]
        assert gateway.startswith("http://127.0.0.1:")
        assert summary["ollama"] == local_ollama
        assert set(summary["processes"]) == {
            "vllm", "embeddings", "audio", "llama-cpu", "gateway",
        }  # fmt: skip
        assert all(p["url"].startswith("http://127.0.0.1:") for p in summary["processes"].values())
        client = openai.OpenAI(base_url=gateway + "/v1", api_key="local", max_retries=0)
        ids = {m.id for m in client.models.list()}
        assert {"llama3.1-8b", "e5-small", "mxbai-embed-large:latest"} <= ids
        answer = client.embeddings.create(model="mxbai-embed-large:latest", input="from Ollama")
        assert len(answer.data[0].embedding) > 0
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    for p in summary["processes"].values():
        with pytest.raises(ProcessLookupError):
            os.killpg(p["pid"], 0)  # each child leads a group: vLLM's engine core went too
