"""Issue 25 item 3: `/api/pull` of a model Synapse already serves is Ollama's success, without
a key, on both ports; any other pull stays the operator's (master key, else 403)."""

from __future__ import annotations

from collections.abc import Iterator

import ollama
import pytest

from tests.conftest import MASTER_KEY, Backend, Gateway, routing_config

SERVED_SPELLINGS = [
    "mxbai-embed-large",  # a group
    "mxbai-embed-large:latest",  # Ollama's tag spelling of it
    "llama3.1:8b",  # a visible alias
    "nomic-embed-text",  # a hidden alias
    "nomic-embed-text:latest",
]


@pytest.fixture(scope="module")
def gw(
    openai_backend: Backend, ollama_backend: Backend, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    config = routing_config(openai_backend, ollama_backend)
    config["router_settings"]["model_group_alias"]["nomic-embed-text"] = {
        "model": "mxbai-embed-large",
        "hidden": True,
    }
    gateway = Gateway(config, tmp_path_factory.mktemp("pull"))
    yield gateway
    gateway.stop()


@pytest.mark.parametrize("name", SERVED_SPELLINGS)
@pytest.mark.parametrize("port", ["ollama_url", "url"])
def test_pull_of_a_served_model_succeeds_without_a_key(
    gw: Gateway, ollama_backend: Backend, name: str, port: str
) -> None:
    ollama_backend.control(pulled=None)
    client = ollama.Client(host=getattr(gw, port))  # no key, even on the keyed port
    assert client.pull(name).status == "success"  # stream=False: one {"status": "success"}
    statuses = [p.status for p in client.pull(name, stream=True)]
    assert statuses[0] == "pulling manifest" and statuses[-1] == "success"
    assert ollama_backend.stats().get("pulled") is None  # nothing was asked of Ollama


@pytest.mark.parametrize("port", ["ollama_url", "url"])
def test_other_pulls_stay_master_key_only(gw: Gateway, ollama_backend: Backend, port: str) -> None:
    with pytest.raises(ollama.ResponseError) as err:
        ollama.Client(host=getattr(gw, port)).pull("qwen3:8b")
    assert err.value.status_code == 403 and "master key" in err.value.error
    operator = ollama.Client(
        host=getattr(gw, port), headers={"Authorization": f"Bearer {MASTER_KEY}"}
    )
    assert [p.status for p in operator.pull("qwen3:8b", stream=True)][-1] == "success"
    assert ollama_backend.stats()["pulled"] == "qwen3:8b"


def test_a_pull_if_missing_client_starts(gw: Gateway) -> None:
    """What mem0's Ollama embedder does: pull the model unless /api/tags lists it, then embed.
    A hidden alias is never listed, so the pull must succeed without a key."""
    client = ollama.Client(host=gw.ollama_url)
    model = "nomic-embed-text"
    listed = client.list().models
    assert not any(m.model in (model, f"{model}:latest") for m in listed)
    client.pull(model)
    assert len(client.embed(model=model, input="remember this").embeddings[0]) > 0
