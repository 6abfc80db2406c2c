"""The local stack: real engines plus the gateway in front of them, on 127.0.0.1 only.

Order matters: the engines start (each after its generated model is written) and become
ready, then the effective config (real ports, any local Ollama) is written and the gateway
starts on it. Only vLLM is needed for the first chat answer: an engine whose venv is still
being installed (`make run` installs .venv-engines and compiles llama.cpp in the background on
a first start) is started later, when its install is complete; its group fails over until then,
and its port answers 503 "installing: ~N min left, see <log>" (synapse.local.installing).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from synapse.local import engines, profile, tinyhf, tinyllama
from synapse.local.engines import EngineSpec, Models, Venvs
from synapse.local.installing import InstallProgress, Placeholder
from synapse.local.profile import OLLAMA_URL
from synapse.local.supervisor import (
    Child,
    StartError,
    Supervisor,
    free_port,
    port_is_free,
    write_model,
)

DEFAULT_PROFILE = Path("config/local-engines.yaml")
DEFAULT_ENGINES_VENV = Path(os.environ.get("SYNAPSE_ENGINES_VENV", ".venv-engines"))
DEFAULT_VLLM_VENV = Path(os.environ.get("SYNAPSE_VLLM_VENV", ".venv-vllm"))
METRICS_PORT = 9090
PENDING_POLL = 5.0  # seconds between looks for an engine that is still being installed
PENDING_REMIND = 30.0  # seconds between "still being installed" lines: a line every 30 s


def default_state_dir() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "synapse" / "local"


@dataclass
class StackOptions:
    """Everything `synapse local-stack` can be told; tests use free ports everywhere."""

    profile: Path = DEFAULT_PROFILE
    engines_venv: Path = DEFAULT_ENGINES_VENV
    vllm_venv: Path = DEFAULT_VLLM_VENV
    state_dir: Path = field(default_factory=default_state_dir)
    port: int = 8000  # 0 = any free port
    ollama_port: int | None = None  # None = 11434, or a free one when an Ollama holds it
    metrics_port: int | None = None  # None = 9090 (`synapse usage`'s default) when free; 0 = any
    use_ollama: bool = True
    ollama_url: str = OLLAMA_URL
    default_engine_ports: bool = True  # False = every engine on a free port
    install_log: Path | None = None  # the background install's log (`make run` passes it)
    restart: bool = True


def _pick(port: int, prefer: bool) -> int:
    return port if prefer and port and port_is_free(port) else free_port()


class Stack:
    """Start with `start()`, stop with `stop()`; `urls` and `children` describe what runs."""

    def __init__(self, opts: StackOptions, say: Callable[[str], None] | None = None) -> None:
        self.opts = opts
        self.say = say or (lambda _msg: None)
        self.supervisor = Supervisor(opts.state_dir / "logs", on_event=self.say)
        self.config_path = opts.state_dir / "config.yaml"
        self.ollama_models: list[dict[str, Any]] | None = None
        self.gateway_port = 0
        self.ollama_port = 0
        self.metrics_port = 0
        self.config: dict[str, Any] = {}
        self.timings: dict[str, float] = {}
        self.error: Exception | None = None
        self.pending: list[str] = []  # engines waiting for their venv to be installed
        self._writers: dict[str, tuple[Path, str, Path, str]] = {}  # engine -> model writer
        self._late: threading.Thread | None = None
        self.install = InstallProgress(opts.install_log)
        self._placeholders: dict[str, Placeholder] = {}  # pending engine -> its port's 503
        self._installing: dict[str, Callable[[], str]] = {}  # pending engine -> its progress

    @property
    def children(self) -> dict[str, Child]:
        return self.supervisor.children

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.gateway_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    @property
    def ollama_compat_url(self) -> str:
        return f"http://127.0.0.1:{self.ollama_port}"

    def _check_venvs(self) -> Venvs:
        """vLLM answers the first chat, so its venv must be there; the others may come later."""
        venvs = Venvs(self.opts.engines_venv, self.opts.vllm_venv)
        if not engines.engine_python(venvs.vllm).exists():
            raise StartError(
                f"vLLM venv {venvs.vllm} is missing: run `make vllm` "
                "(or `make run`, which installs it first)"
            )
        return venvs

    def _generate(self, venv: Path, module: str, out: Path, what: str) -> Path:
        """Run a model writer (synapse.local.tiny*) in the venv that has its libraries."""
        if not out.exists():
            self.say(f"writing {what} to {out}")
        return write_model(venv, module, out)

    def _models(self, venvs: Venvs) -> Models:
        """Where the generated models go, and which engine needs which (written at its start)."""
        state = self.opts.state_dir
        models = Models(
            state / f"tiny-llama-hf-v{tinyhf.VERSION}",
            state / f"tiny-llama-v{tinyllama.VERSION}.gguf",
        )
        self._writers = {
            "vllm": (venvs.vllm, "synapse.local.tinyhf", models.hf,
                     "the tiny random-weight Llama for vLLM"),
            "llama-cpu": (venvs.engines, "synapse.local.tinyllama", models.gguf,
                          "the tiny random-weight Llama GGUF for llama.cpp"),
        }  # fmt: skip
        return models

    def _launch(self, spec: EngineSpec, port: int) -> Child:
        """Write the model the engine serves (first start only), then start it."""
        if spec.name in self._writers:
            self._generate(*self._writers[spec.name])
        child = self.supervisor.start(spec, port, restart=self.opts.restart)
        self.say(f"starting {spec.name} on 127.0.0.1:{port} (log {child.log})")
        return child

    def _gateway_spec(self) -> EngineSpec:
        argv = (
            sys.executable, "-m", "synapse", "serve",
            "--config", str(self.config_path),
            "--host", "127.0.0.1", "--port", "{port}",
            "--ollama-port", str(self.ollama_port),
            "--metrics-port", str(self.metrics_port),
        )  # fmt: skip
        return EngineSpec("gateway", self.gateway_port, "/health/readiness", argv, {}, 60.0)

    def start(self) -> None:
        """Bring everything up, or raise StartError (after stopping what did start)."""
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        opts = self.opts
        started = time.monotonic()
        self.gateway_port = opts.port or free_port()
        if not port_is_free(self.gateway_port):  # before anything slow: a second `make run`
            raise StartError(
                f"port {self.gateway_port} is busy: pass --port N (or --port 0); "
                'with make: make run RUN_ARGS="--port N"'
            )
        # 9090 as the README and `synapse usage` expect, unless something (a Prometheus) has it
        if opts.metrics_port is None:
            self.metrics_port = _pick(METRICS_PORT, prefer=True)
        else:
            self.metrics_port = opts.metrics_port or free_port()
        venvs = self._check_venvs()
        base = profile.load(opts.profile)
        models = self._models(venvs)

        if opts.use_ollama:
            self.ollama_models = profile.detect_ollama(opts.ollama_url)
            if self.ollama_models is not None:
                self.say(f"Ollama found at {opts.ollama_url}: {len(self.ollama_models)} model(s)")
        if opts.ollama_port is not None:
            self.ollama_port = opts.ollama_port or free_port()
        else:
            # 11434 as Ollama clients expect, unless a real Ollama has it
            self.ollama_port = next((p for p in (11434, 11435) if port_is_free(p)), free_port())

        ports: dict[int, int] = {}
        later: list[tuple[EngineSpec, int]] = []
        for spec in engines.specs(venvs, models):
            port = _pick(spec.default_port, prefer=opts.default_engine_ports)
            ports[spec.default_port] = port
            if not spec.installed():
                later.append((spec, port))
                describe = partial(self.install.describe, spec.marker == engines.LLAMA_MARKER)
                self._installing[spec.name] = describe
                self._placeholders[spec.name] = Placeholder(port, describe)
                self.say(
                    f"{spec.name} is not installed yet ({spec.venv}/{spec.marker} is written "
                    "when its install completes): it starts then; until then its model group "
                    f"answers 503 {describe()}"
                )
                continue
            self._launch(spec, port)
        for child in list(self.children.values()):
            self.timings[child.spec.name] = self.supervisor.wait_ready(child)
            self.say(f"{child.spec.name} ready in {self.timings[child.spec.name]:.1f} s")

        self.config = profile.effective(base, ports, self.ollama_models, opts.ollama_url)
        profile.write(self.config, self.config_path)
        self.say(f"starting the gateway on {self.url} (config {self.config_path})")
        gateway = self.supervisor.start(
            self._gateway_spec(), self.gateway_port, restart=opts.restart
        )
        self.timings["gateway"] = self.supervisor.wait_ready(gateway)
        self.timings["total"] = time.monotonic() - started
        if later:
            self.pending = [spec.name for spec, _ in later]
            self._late = threading.Thread(target=self._start_later, args=(later,), daemon=True)
            self._late.start()

    def _start_later(self, later: list[tuple[EngineSpec, int]]) -> None:
        """Start each pending engine once its venv is installed (while the stack runs)."""
        waiting = list(later)
        reminded = time.monotonic()
        while waiting and not self.supervisor.stopping:
            if time.monotonic() - reminded >= PENDING_REMIND:
                reminded = time.monotonic()
                self.say(
                    f"still being installed: {', '.join(self.pending)}: {self.install.describe()}"
                )
            for spec, port in list(waiting):
                if not spec.installed():
                    continue
                waiting.remove((spec, port))
                if placeholder := self._placeholders.pop(spec.name, None):
                    placeholder.close()
                try:
                    self.say(f"{spec.name} is installed now")
                    seconds = self.supervisor.wait_ready(self._launch(spec, port))
                except StartError as exc:
                    self.say(str(exc))
                    continue
                finally:
                    self.pending.remove(spec.name)
                still = f"; still installing: {', '.join(self.pending)}" if self.pending else ""
                self.say(
                    f"{spec.name} ready in {seconds:.1f} s: its model group answers now{still}"
                )
            time.sleep(PENDING_POLL)

    def stop(self) -> None:
        self.supervisor.stop_all()
        for placeholder in self._placeholders.values():
            placeholder.close()
        self._placeholders.clear()

    def summary(self) -> dict[str, Any]:
        """What runs where, for the banner and for `--json`."""
        pending = list(self.pending)  # the late starter changes it meanwhile
        return {
            "gateway": self.url,
            "ollama_compatible": self.ollama_compat_url,
            "metrics": self.metrics_url,
            "config": str(self.config_path),
            "models": profile.model_names(self.config) if self.config else [],
            "ollama": self.opts.ollama_url if self.ollama_models is not None else None,
            "processes": {
                name: {"url": c.url, "pid": c.pid, "log": str(c.log)}
                for name, c in self.children.items()
            },
            "pending": pending,
            "installing": {name: self._installing[name]() for name in pending},
            "startup_seconds": {k: round(v, 2) for k, v in self.timings.items()},
        }
