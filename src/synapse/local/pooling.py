"""vLLM's pooling runner on the tiny BERT: an embedding engine that batches requests itself.

Not part of `make run`'s stack: a second vLLM costs ~2.3 GB RSS and ~80 s of start on two
cores and slows the chat vLLM's start beside it, on the way to the first answer. The engine
tier and `make bench-embeddings` start it on its own with `PoolingServer`.
"""

from __future__ import annotations

import os
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

from synapse.local import tinybert
from synapse.local.engines import VLLM_ENV, VLLM_MAX_MODEL_LEN, engine_python, source_root

MODEL_NAME = "tiny-bert"  # what vLLM calls the model
START_TIMEOUT = 600.0  # ~80 s alone on two cores; minutes when the machine is shared


def write_model(vllm_venv: Path, state_dir: Path, seed: int = 0) -> Path:
    """The tiny BERT, written once per VERSION into `state_dir` by the vLLM venv's Python;
    another `seed` is another model of the same shape (its vectors are another space)."""
    out = state_dir / (f"tiny-bert-v{tinybert.VERSION}" + (f"-seed{seed}" if seed else ""))
    if out.exists():
        return out
    env = {**os.environ, "PYTHONPATH": str(source_root())}
    cmd = [str(engine_python(vllm_venv)), "-m", "synapse.local.tinybert", str(out)]
    cmd += ["--seed", str(seed)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"could not write {out}:\n{done.stderr[-2000:]}")
    return out


def argv(vllm_venv: Path, model: Path, port: int, dtype: str = "float32") -> list[str]:
    return [
        str(engine_python(vllm_venv)), "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(model), "--served-model-name", MODEL_NAME, "--runner", "pooling",
        "--host", "127.0.0.1", "--port", str(port),
        "--max-model-len", str(VLLM_MAX_MODEL_LEN), "--dtype", dtype, "--enforce-eager",
    ]  # fmt: skip


class PoolingServer:
    """One vLLM pooling process on 127.0.0.1:`port`, its output in `log`."""

    def __init__(
        self,
        vllm_venv: Path,
        state_dir: Path,
        port: int,
        log: Path,
        dtype: str = "float32",
        seed: int = 0,
    ) -> None:
        self.cmd = argv(vllm_venv, write_model(vllm_venv, state_dir, seed), port, dtype)
        self.url = f"http://127.0.0.1:{port}"
        self.log = log
        self.proc: subprocess.Popen | None = None
        self.start_seconds = 0.0

    def start(self, timeout: float = START_TIMEOUT) -> PoolingServer:
        began = time.monotonic()
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.cmd,
                env={**os.environ, **VLLM_ENV},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its engine core and worker stop with it
            )
        deadline = began + timeout
        while not self._healthy():
            if self.proc.poll() is not None:
                tail = self.log.read_text(errors="replace")[-3000:]
                raise RuntimeError(f"vLLM pooling exited with {self.proc.returncode}:\n{tail}")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"vLLM pooling not ready within {timeout:g}s (log: {self.log})")
            time.sleep(0.5)
        self.start_seconds = time.monotonic() - began
        return self

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=2) as resp:
                return resp.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, 15)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, 9)
            self.proc.wait(timeout=10)
