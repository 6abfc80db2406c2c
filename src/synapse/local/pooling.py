"""vLLM's pooling runner on the tiny BERT: an embedding engine that batches requests itself.

Not part of `make run`'s stack: a second vLLM costs ~2.3 GB RSS and ~80 s of start on two
cores and slows the chat vLLM's start beside it, on the way to the first answer. The engine
tier and `make bench-embeddings` start it on its own with `PoolingServer`.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from synapse.local import supervisor, tinybert
from synapse.local.engines import (
    VLLM_ENV,
    VLLM_MAX_MODEL_LEN,
    EngineSpec,
    engine_python,
)

MODEL_NAME = "tiny-bert"  # what vLLM calls the model
START_TIMEOUT = 600.0  # ~80 s alone on two cores; minutes when the machine is shared


def write_model(vllm_venv: Path, state_dir: Path, seed: int = 0) -> Path:
    """The tiny BERT, written once per VERSION into `state_dir` by the vLLM venv's Python;
    another `seed` is another model of the same shape (its vectors are another space)."""
    out = state_dir / (f"tiny-bert-v{tinybert.VERSION}" + (f"-seed{seed}" if seed else ""))
    return supervisor.write_model(vllm_venv, "synapse.local.tinybert", out, "--seed", str(seed))


def argv(vllm_venv: Path, model: Path, port: int, dtype: str = "float32") -> list[str]:
    return [
        str(engine_python(vllm_venv)), "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(model), "--served-model-name", MODEL_NAME, "--runner", "pooling",
        "--host", "127.0.0.1", "--port", str(port),
        "--max-model-len", str(VLLM_MAX_MODEL_LEN), "--dtype", dtype, "--enforce-eager",
    ]  # fmt: skip


class PoolingServer:
    """One vLLM pooling process on 127.0.0.1:`port`, its output in `log`, run by a
    `Supervisor` of its own (process group, parent-death signal, open-files limit)."""

    def __init__(
        self,
        vllm_venv: Path,
        state_dir: Path,
        port: int,
        log: Path,
        dtype: str = "float32",
        seed: int = 0,
    ) -> None:
        model = write_model(vllm_venv, state_dir, seed)
        cmd = tuple(argv(vllm_venv, model, port, dtype))
        # the supervisor names the log after the engine: `log`'s stem keeps the caller's path
        self.spec = EngineSpec(log.stem, port, "/health", cmd, VLLM_ENV, START_TIMEOUT)
        self.url = f"http://127.0.0.1:{port}"
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.start_seconds = 0.0
        self._supervisor: supervisor.Supervisor | None = None

    def start(self, timeout: float = START_TIMEOUT) -> PoolingServer:
        self._supervisor = supervisor.Supervisor(self.log.parent)
        child = self._supervisor.start(self.spec, self.spec.default_port, restart=False)
        self.proc = child.proc
        try:
            self.start_seconds = self._supervisor.wait_ready(child, timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self._supervisor is not None:
            self._supervisor.stop_all(grace=30)
            self._supervisor = None
