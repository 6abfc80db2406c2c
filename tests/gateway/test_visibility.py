"""A consumer sees, and is answered by, only the models it may use (issue 24.8, 24.9), and
an error suggests only models that can serve the route (issue 25.4).

Real gateway and stub backend processes on loopback; the `openai` and `ollama` clients.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import ollama
import openai
import pytest

from tests.conftest import MASTER_KEY, Backend, Gateway, routing_config

NARROW_KEY = "sk-narrow-0123456789abcdef"  # chat on llama-gpu and embeddings on embed-openai
CHAT = [{"role": "user", "content": "ping"}]
EVERY_MODEL = ("llama-gpu", "llama-cpu", "mxbai-embed-large", "embed-openai", "tts")


def visibility_config(openai_backend: Backend, ollama_backend: Backend) -> dict[str, Any]:
    """`narrow` may use llama-gpu (also as its alias llama3.1:8b) and embed-openai, whose
    fallbacks it may not use; keyless callers of the Ollama port are `narrow` too. A hidden
    alias and a speech model complete the list of what it must never be offered."""
    config = routing_config(
        openai_backend,
        ollama_backend,
        consumers=[
            {"name": "narrow", "key": NARROW_KEY, "models": ["llama3.1:8b", "embed-openai"]}
        ],
        ollama_consumer="narrow",
    )
    config["model_list"].append(
        {
            "model_name": "tts",
            "litellm_params": {"model": "openai/piper", "api_base": openai_backend.url + "/v1"},
            "model_info": {"id": "tts", "mode": "audio_speech"},
        }
    )
    router = config["router_settings"]
    router["model_group_alias"]["secret-alias"] = {"model": "llama-gpu", "hidden": True}
    router["fallbacks"] = [{"llama-gpu": ["llama-cpu"]}, {"embed-openai": ["mxbai-embed-large"]}]
    for entry in config["model_list"]:  # an embedding fallback must stay in one vector space
        if entry["model_name"] in ("embed-openai", "mxbai-embed-large"):
            entry.setdefault("model_info", {})["embedding_space"] = "test-space"
    return config


@pytest.fixture(scope="module")
def gw(
    openai_backend: Backend, ollama_backend: Backend, tmp_path_factory: pytest.TempPathFactory
) -> Any:
    gateway = Gateway(
        visibility_config(openai_backend, ollama_backend), tmp_path_factory.mktemp("visibility")
    )
    yield gateway
    gateway.stop()


def client(gateway: Gateway, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0)


def offered(message: str) -> set[str]:
    """The model names an error message suggests (after its last ': ' or '(...: ')."""
    tail = message.rpartition(": ")[2].rstrip(")")
    return {name.strip().removesuffix(":latest") for name in tail.split(",")} - {""}


# -- 24.9: topology is for the master key ----------------------------------------------------


def test_health_is_for_the_master_key_probes_stay_keyless(gw: Gateway) -> None:
    refused = httpx.get(gw.url + "/health", headers={"Authorization": f"Bearer {NARROW_KEY}"})
    assert refused.status_code == 403
    error = refused.json()["error"]
    assert error["type"] == "permission_error" and "master key" in error["message"]
    assert "api_base" not in refused.text and "127.0.0.1" not in refused.text
    health = httpx.get(gw.url + "/health", headers={"Authorization": f"Bearer {MASTER_KEY}"})
    assert health.status_code == 200 and health.json()["healthy_count"] == 5
    assert httpx.get(gw.url + "/health").status_code == 401
    for base in (gw.url, gw.ollama_url):
        assert httpx.get(base + "/health/liveliness").status_code == 200
        assert httpx.get(base + "/health/readiness").status_code == 200


def test_retrieve_is_404_for_disallowed_and_hidden_models(gw: Gateway) -> None:
    narrow, master = client(gw, NARROW_KEY), client(gw, MASTER_KEY)
    assert narrow.models.retrieve("llama-gpu").id == "llama-gpu"
    assert narrow.models.retrieve("llama3.1:8b").id == "llama3.1:8b"  # its alias, listed
    for name in ("llama-cpu", "mxbai-embed-large", "secret-alias", "secret-alias:latest"):
        with pytest.raises(openai.NotFoundError):
            narrow.models.retrieve(name)
    assert master.models.retrieve("llama-cpu").id == "llama-cpu"
    with pytest.raises(openai.NotFoundError):
        master.models.retrieve("secret-alias")  # hidden from everyone's list
    # The hidden alias still serves requests (hidden is about listings, not access).
    assert master.chat.completions.create(model="secret-alias", messages=CHAT).choices
    listed = {m.id for m in narrow.models.list()}
    assert listed == {"llama-gpu", "llama3.1:8b", "embed-openai"}


def test_not_found_lists_only_the_callers_models(gw: Gateway) -> None:
    with pytest.raises(openai.NotFoundError) as err:
        client(gw, NARROW_KEY).chat.completions.create(model="nope", messages=CHAT)
    assert offered(err.value.body["message"]) == {"llama-gpu", "llama3.1:8b"}  # type: ignore[index]
    keyed = ollama.Client(host=gw.url, headers={"Authorization": f"Bearer {NARROW_KEY}"})
    keyless = ollama.Client(host=gw.ollama_url)  # the Ollama port's consumer: narrow
    for ollama_client in (keyed, keyless):
        with pytest.raises(ollama.ResponseError) as oerr:
            ollama_client.chat(model="nope", messages=CHAT)
        assert oerr.value.status_code == 404
        assert offered(oerr.value.error) == {"llama-gpu", "llama3.1:8b"}
        with pytest.raises(ollama.ResponseError) as oerr:
            ollama_client.embed(model="nope", input="x")
        assert offered(oerr.value.error) == {"embed-openai"}


# -- 25.4: an error suggests only models that can serve the route ----------------------------


def test_not_found_lists_only_models_that_serve_the_route(gw: Gateway) -> None:
    master = client(gw, MASTER_KEY)
    with pytest.raises(openai.NotFoundError) as err:
        master.chat.completions.create(model="nope", messages=CHAT)
    assert offered(err.value.body["message"]) == {"llama-gpu", "llama-cpu", "llama3.1:8b"}  # type: ignore[index]
    with pytest.raises(openai.NotFoundError) as err:
        master.embeddings.create(model="nope", input="x")
    assert offered(err.value.body["message"]) == {"mxbai-embed-large", "embed-openai"}  # type: ignore[index]
    with pytest.raises(ollama.ResponseError) as oerr:
        ollama.Client(host=gw.url, headers={"Authorization": f"Bearer {MASTER_KEY}"}).show("nope")
    assert offered(oerr.value.error) == {*EVERY_MODEL, "llama3.1:8b"}  # show takes any model


def test_wrong_mode_names_the_mode_with_its_article(gw: Gateway) -> None:
    master = client(gw, MASTER_KEY)
    cases = (("mxbai-embed-large", "an embedding model"), ("tts", "an audio_speech model"))
    for model, kind in cases:
        with pytest.raises(openai.BadRequestError) as err:
            master.chat.completions.create(model=model, messages=CHAT)
        message = err.value.body["message"]  # type: ignore[index]
        assert f"model '{model}' is {kind} (model_info.mode)" in message
        assert offered(message) == {"llama-gpu", "llama-cpu", "llama3.1:8b"}
    with pytest.raises(openai.BadRequestError) as err:
        master.embeddings.create(model="llama-gpu", input="x")
    assert "is a chat model" in err.value.body["message"]  # type: ignore[index]
    # A consumer is offered only its own models that fit, or told there are none.
    with pytest.raises(openai.BadRequestError) as err:
        client(gw, NARROW_KEY).embeddings.create(model="llama-gpu", input="x")
    assert offered(err.value.body["message"]) == {"embed-openai"}  # type: ignore[index]


# -- 24.8: fallbacks never lead outside the allow-list ---------------------------------------


def test_fallbacks_skip_groups_the_consumer_may_not_use(
    ollama_backend: Backend, make_gateway: Any
) -> None:
    primary = Backend("openai")
    gw = make_gateway(visibility_config(primary, ollama_backend))
    primary.kill()  # llama-gpu and embed-openai are down; their fallbacks (Ollama) are up
    before = ollama_backend.stats()
    narrow = client(gw, NARROW_KEY)
    with pytest.raises(openai.InternalServerError) as err:
        narrow.chat.completions.create(model="llama-gpu", messages=CHAT)
    assert err.value.status_code == 503 and "llama-cpu" not in err.value.message
    with pytest.raises(openai.InternalServerError) as err:
        narrow.embeddings.create(model="embed-openai", input=["a", "b"])
    assert err.value.status_code == 503
    with pytest.raises(ollama.ResponseError) as oerr:  # keyless: the Ollama port's consumer
        ollama.Client(host=gw.ollama_url).chat(model="llama3.1:8b", messages=CHAT)
    assert oerr.value.status_code == 503
    after = ollama_backend.stats()
    assert after["calls"] == before["calls"]  # the fallbacks' backend was never asked
    assert len(after["embed_calls"]) == len(before["embed_calls"])
    # The master key may use every group: the same requests fall back and are answered.
    master = client(gw, MASTER_KEY)
    answer = master.chat.completions.create(model="llama-gpu", messages=CHAT)
    assert answer.model == "llama3.1:8b"  # llama-cpu's backend model
    assert len(master.embeddings.create(model="embed-openai", input=["a", "b"]).data) == 2


def test_batched_embeddings_keep_each_callers_fallbacks(
    ollama_backend: Backend, make_gateway: Any
) -> None:
    """Requests queued while a call is in flight are sent as one batch: a caller shares it
    only with callers of the same fallback chain, so neither gets the other's."""
    primary = Backend("openai")
    try:
        config = visibility_config(primary, ollama_backend)
        config["synapse_settings"]["embedding_batching"] = {"max_in_flight": 1}
        gw = make_gateway(config)
        primary.control(mode="error500", embed_delay=1)  # embed-openai fails, slowly
        before = len(ollama_backend.stats()["embed_calls"])

        async def main() -> list[httpx.Response]:
            async with httpx.AsyncClient(timeout=60) as http:

                def embed(key: str, text: str) -> asyncio.Task:
                    body = {"model": "embed-openai", "input": text}
                    auth = {"Authorization": f"Bearer {key}"}
                    return asyncio.create_task(
                        http.post(gw.url + "/v1/embeddings", json=body, headers=auth)
                    )

                first = embed(MASTER_KEY, "first")  # in flight: what follows queues
                for _ in range(200):
                    if primary.stats()["embed_calls"]:
                        break
                    await asyncio.sleep(0.02)
                narrow = embed(NARROW_KEY, "narrow's text")  # first in the queue
                await asyncio.sleep(0.2)
                master = embed(MASTER_KEY, "master's text")
                return await asyncio.gather(first, narrow, master)

        first, narrow, master = asyncio.run(main())
        assert first.status_code == 200 and master.status_code == 200, master.text
        assert narrow.status_code == 502, narrow.text  # the primary's 500s, no fallback
        fallback_texts = [
            t for call in ollama_backend.stats()["embed_calls"][before:] for t in call["texts"]
        ]
        assert "narrow's text" not in fallback_texts and "master's text" in fallback_texts
        primary_calls = [call["texts"] for call in primary.stats()["embed_calls"]]
        assert ["narrow's text"] in primary_calls  # sent alone, not with master's text
    finally:
        primary.stop()
