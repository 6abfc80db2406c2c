"""Real processes on loopback: stub backends and the gateway itself, started as users would."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
MASTER_KEY = "sk-test-master-key"
# The Python that runs the gateway and stub backends: the compatibility tier's own venv holds
# only the clients (tests/compat, `make test-compat`), so it points here at .venv's.
PYTHON = os.environ.get("SYNAPSE_TEST_PYTHON", sys.executable)
# tests/compat needs the clients of .venv-compat; `make test-compat` runs it there.
collect_ignore = [] if os.environ.get("SYNAPSE_TEST_PYTHON") else ["compat"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
        try:
            if httpx.get(url, timeout=0.5).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer within {timeout}s")


class Backend:
    """A stub backend process (tests/stubs/backend.py) speaking OpenAI or Ollama."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [PYTHON, "-m", "tests.stubs.backend", "--kind", kind, "--port", str(self.port)],
            cwd=ROOT,
        )
        wait_http(self.url + "/_stats", self.proc)

    def control(self, **state: Any) -> None:
        httpx.post(self.url + "/_control", json=state, timeout=5).raise_for_status()

    def stats(self) -> dict[str, Any]:
        return httpx.get(self.url + "/_stats", timeout=5).json()

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.kill()


class Gateway:
    """`synapse serve` in a child process on a config written for the test."""

    def __init__(
        self,
        config: dict[str, Any],
        tmp: Path,
        env: dict[str, str] | None = None,
        module: str = "synapse",  # or a test's launcher taking the same arguments
    ) -> None:
        self.port = free_port()
        self.ollama_port = free_port()
        self.metrics_port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ollama_url = f"http://127.0.0.1:{self.ollama_port}"
        self.config_path = tmp / "config.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.log_path = tmp / f"gateway-{self.port}.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [
                PYTHON,
                "-m",
                module,
                "serve",
                "--config",
                str(self.config_path),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--ollama-port",
                str(self.ollama_port),
                "--metrics-port",
                str(self.metrics_port),
            ],
            cwd=ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "SYNAPSE_MASTER_KEY": MASTER_KEY, **(env or {})},
        )
        wait_http(self.url + "/health/readiness", self.proc)

    @property
    def metrics_url(self) -> str:
        """Where this gateway serves Prometheus metrics."""
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    @property
    def log(self) -> str:
        return self.log_path.read_text()

    def signal(self, sig: int = signal.SIGTERM) -> None:
        self.proc.send_signal(sig)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self._log.close()


def routing_config(openai: Backend | None, ollama: Backend | None, **settings: Any) -> dict:
    """The cluster's shape in miniature: embeddings on Ollama, chat on an OpenAI backend
    falling back to Ollama, an alias as Ollama clients spell the model."""
    models: list[dict[str, Any]] = []
    if ollama is not None:
        models += [
            {
                "model_name": "mxbai-embed-large",
                "litellm_params": {"model": "ollama/mxbai-embed-large", "api_base": ollama.url},
                "model_info": {"id": "ollama-embed", "mode": "embedding"},
            },
            {
                "model_name": "llama-cpu",
                "litellm_params": {"model": "ollama_chat/llama3.1:8b", "api_base": ollama.url},
                "model_info": {"id": "ollama-chat", "mode": "chat"},
            },
        ]
    if openai is not None:
        models += [
            {
                "model_name": "llama-gpu",
                "litellm_params": {
                    "model": "hosted_vllm/meta-llama/Llama-3.1-8B-Instruct",
                    "api_base": openai.url + "/v1",
                    "timeout": 2,
                },
                "model_info": {"id": "vllm-chat", "mode": "chat"},
            },
            {
                "model_name": "embed-openai",
                "litellm_params": {
                    "model": "openai/e5-small",
                    "api_base": openai.url,
                    "api_key": "backend-key",
                },
                "model_info": {"id": "openai-embed", "mode": "embedding"},
            },
        ]
    router: dict[str, Any] = {"num_retries": 1, "allowed_fails": 3, "cooldown_time": 30}
    if openai is not None:
        router["model_group_alias"] = {"llama3.1:8b": "llama-gpu"}
        if ollama is not None:
            router["fallbacks"] = [{"llama-gpu": ["llama-cpu"]}]
    return {
        "model_list": models,
        "router_settings": router,
        "general_settings": {"master_key": "os.environ/SYNAPSE_MASTER_KEY"},
        "synapse_settings": {
            "health_check_interval": 0,
            "drain_delay": 0,
            "shutdown_grace": 10,
            "reload_interval": 0.2,
            "retry_backoff": 0.01,
            **settings,
        },
    }


def impatient_gateway(openai: Backend, ollama: Backend, directory: Path, seconds: float) -> Gateway:
    """A gateway whose request heads and bodies must arrive within `seconds` (framing tests)."""
    config = routing_config(openai, ollama, header_read_timeout=seconds, body_read_timeout=seconds)
    return Gateway(config, directory)


def one_chat_deployment(backend: Backend, **params: Any) -> list[dict[str, Any]]:
    """A model_list of one OpenAI-compatible chat deployment (`llama-gpu`) on `backend`."""
    return [
        {
            "model_name": "llama-gpu",
            "litellm_params": {
                "model": "hosted_vllm/llama",
                "api_base": backend.url + "/v1",
                **params,
            },
            "model_info": {"id": "vllm-chat", "mode": "chat"},
        }
    ]


@pytest.fixture(scope="module")
def openai_backend() -> Iterator[Backend]:
    backend = Backend("openai")
    yield backend
    backend.stop()


@pytest.fixture(scope="module")
def ollama_backend() -> Iterator[Backend]:
    backend = Backend("ollama")
    yield backend
    backend.stop()


@pytest.fixture(autouse=True)
def _reset_backends(request: pytest.FixtureRequest) -> None:
    for name in ("openai_backend", "ollama_backend"):
        if name in request.fixturenames:
            backend = request.getfixturevalue(name)
            if backend.proc.poll() is None:
                backend.control(mode="ok", delay=0, chunk_delay=0)


@pytest.fixture(scope="module")
def gateway(
    openai_backend: Backend, ollama_backend: Backend, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    gw = Gateway(routing_config(openai_backend, ollama_backend), tmp_path_factory.mktemp("gateway"))
    yield gw
    gw.stop()


# A Responses API function tool, as the SDKs send it.
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather in a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}


@pytest.fixture(scope="module")
def replica_urls(
    openai_backend: Backend, ollama_backend: Backend, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str]]:
    """The /v1 base URLs of two gateway processes on one config: Synapse's replicas, which
    share nothing but the config (its master key included)."""
    config = routing_config(openai_backend, ollama_backend)
    gateways = [Gateway(config, tmp_path_factory.mktemp("replica")) for _ in range(2)]
    yield gateways[0].url + "/v1", gateways[1].url + "/v1"
    for gw in gateways:
        gw.stop()


@pytest.fixture
def make_gateway(tmp_path: Path) -> Iterator[Any]:
    """A gateway of the test's own, for tests that break or reconfigure it."""
    started: list[Gateway] = []

    def make(config: dict[str, Any], **kw: Any) -> Gateway:
        gw = Gateway(config, tmp_path, **kw)
        started.append(gw)
        return gw

    yield make
    for gw in started:
        gw.stop()
