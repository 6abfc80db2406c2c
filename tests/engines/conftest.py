"""Engine tier: tests marked `engines` need .venv-engines and run only under `make test-engines`.

The default `make test` stays independent of the engines (a 9-minute llama.cpp build and
~1 GB of weights), whatever happens to be installed; SYNAPSE_ENGINE_TESTS=1 turns them on.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from synapse.local.stack import Stack, StackOptions

ROOT = Path(__file__).resolve().parents[2]
ENGINES_VENV = Path(os.environ.get("SYNAPSE_ENGINES_VENV", ROOT / ".venv-engines"))
VLLM_VENV = Path(os.environ.get("SYNAPSE_VLLM_VENV", ROOT / ".venv-vllm"))
ENABLED = os.environ.get("SYNAPSE_ENGINE_TESTS") == "1"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "engines: needs the real engines (make test-engines)")


# The first engine test also pays for the session's stack: generating the models and
# starting vLLM take minutes on a busy 2-core machine, more than the suite's 120 s per test.
ENGINE_TEST_TIMEOUT = 900


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if ENABLED:
        for item in items:
            if item.get_closest_marker("engines") is not None:
                item.add_marker(pytest.mark.timeout(ENGINE_TEST_TIMEOUT))
        return
    skip = pytest.mark.skip(reason="engine tier: `make test-engines` (SYNAPSE_ENGINE_TESTS=1)")
    for item in items:
        if item.get_closest_marker("engines") is not None:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The local stack as `make run` starts it, but on free ports, ignoring any local Ollama,
    and without restarts (a test kills an engine and expects it to stay dead)."""
    for venv in (ENGINES_VENV, VLLM_VENV):
        if not (venv / "bin" / "python").exists():
            pytest.fail(f"{venv} is missing: run `make test-engines`, which installs it")
    opts = StackOptions(
        profile=ROOT / "config" / "local-engines.yaml",
        engines_venv=ENGINES_VENV,
        vllm_venv=VLLM_VENV,
        state_dir=tmp_path_factory.mktemp("local-stack"),
        port=0,
        ollama_port=0,
        metrics_port=0,
        use_ollama=False,
        default_engine_ports=False,
        restart=False,
    )
    s = Stack(opts)
    s.start()
    yield s
    s.stop()


@pytest.fixture
def client(stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.url + "/v1", api_key="local", max_retries=0)
