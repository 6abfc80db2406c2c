"""Consumers (issue 19): a key per consumer, allow-lists, limits and usage, through the
`openai` and `ollama` clients against a real gateway process and real stub backends."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import httpx
import ollama
import openai
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import MASTER_KEY, Backend, Gateway, routing_config

MEMORY_KEY = "sk-memory-0123456789abcdef"
CHAT_KEY = "sk-chat-0123456789abcdef"
KEYS = {"KEY_MEMORY": MEMORY_KEY}
CHAT = [{"role": "user", "content": "ping"}]


def consumers_config(openai_backend: Backend, ollama_backend: Backend, **settings: Any) -> dict:
    return routing_config(
        openai_backend,
        ollama_backend,
        consumers=[
            {
                "name": "ai-memory-system",
                "key": "os.environ/KEY_MEMORY",
                "models": ["mxbai-embed-large", "llama3.1:8b"],  # a group and an alias
                "priority": "batch",
            },
            {
                "name": "chat-ui",
                "key_sha256": hashlib.sha256(CHAT_KEY.encode()).hexdigest(),
                "models": ["llama-cpu"],
            },
        ],
        ollama_consumer="chat-ui",
        **settings,
    )


@pytest.fixture(scope="module")
def gw(
    openai_backend: Backend, ollama_backend: Backend, tmp_path_factory: pytest.TempPathFactory
) -> Any:
    gateway = Gateway(
        consumers_config(openai_backend, ollama_backend),
        tmp_path_factory.mktemp("consumers"),
        env=KEYS,
    )
    yield gateway
    gateway.stop()


def client(gateway: Gateway, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0)


def samples(gateway: Gateway, name: str, **labels: str) -> float:
    text = httpx.get(gateway.metrics_url).text
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


# -- keys and allow-lists ---------------------------------------------------------------------


def test_consumer_key_reaches_its_models_under_any_of_their_names(gw: Gateway) -> None:
    memory = client(gw, MEMORY_KEY)
    assert len(memory.embeddings.create(model="mxbai-embed-large", input=["a", "b"]).data) == 2
    answer = memory.chat.completions.create(model="llama3.1:8b", messages=CHAT)
    assert answer.choices[0].message.content
    # The alias allows its group: both names reach the same backends.
    assert memory.chat.completions.create(model="llama-gpu", messages=CHAT).choices


def test_model_outside_the_allow_list_is_403_naming_it_openai(gw: Gateway) -> None:
    with pytest.raises(openai.PermissionDeniedError) as err:
        client(gw, MEMORY_KEY).chat.completions.create(model="llama-cpu", messages=CHAT)
    body = err.value.body
    assert isinstance(body, dict) and "'llama-cpu'" in body["message"]
    assert "ai-memory-system" in body["message"] and body["code"] == "model_not_allowed"


def test_model_outside_the_allow_list_is_403_naming_it_ollama(
    gw: Gateway, ollama_backend: Backend
) -> None:
    calls = ollama_backend.stats()["calls"]
    keyed = ollama.Client(host=gw.url, headers={"Authorization": f"Bearer {CHAT_KEY}"})
    with pytest.raises(ollama.ResponseError) as err:
        keyed.embed(model="mxbai-embed-large", input="x")
    assert err.value.status_code == 403 and "'mxbai-embed-large'" in err.value.error
    assert keyed.chat(model="llama-cpu", messages=CHAT).message.content
    # The keyless Ollama port is `ollama_consumer` (chat-ui): same allow-list.
    keyless = ollama.Client(host=gw.ollama_url)
    with pytest.raises(ollama.ResponseError) as err:
        keyless.embed(model="mxbai-embed-large", input="x")
    assert err.value.status_code == 403 and "chat-ui" in err.value.error
    assert keyless.chat(model="llama-cpu", messages=CHAT).message.content
    assert ollama_backend.stats()["calls"] == calls + 2  # the refused ones touched nothing


def test_unknown_key_is_401_and_master_key_does_everything(gw: Gateway) -> None:
    with pytest.raises(openai.AuthenticationError):
        client(gw, "sk-not-a-consumer-key-000").models.list()
    with pytest.raises(openai.AuthenticationError):
        client(gw, hashlib.sha256(CHAT_KEY.encode()).hexdigest()).models.list()  # the hash
    master = client(gw, MASTER_KEY)
    for model in ("llama-cpu", "llama-gpu", "llama3.1:8b"):
        assert master.chat.completions.create(model=model, messages=CHAT).choices
    assert master.embeddings.create(model="mxbai-embed-large", input="x").data
    # Model management stays the operator's.
    pull = httpx.post(
        gw.url + "/api/pull",
        json={"model": "mxbai-embed-large", "stream": False},
        headers={"Authorization": f"Bearer {CHAT_KEY}"},
    )
    assert pull.status_code == 403


def test_usage_is_counted_per_consumer_in_metrics_and_the_log(gw: Gateway) -> None:
    labels = {"model": "llama-gpu", "consumer": "ai-memory-system"}
    before = samples(gw, "synapse_requests_total", status="200", **labels)
    tokens = samples(gw, "synapse_completion_tokens_total", **labels)
    memory = client(gw, MEMORY_KEY)
    memory.chat.completions.create(model="llama-gpu", messages=CHAT)
    with pytest.raises(openai.PermissionDeniedError):
        memory.chat.completions.create(model="llama-cpu", messages=CHAT)
    assert samples(gw, "synapse_requests_total", status="200", **labels) == before + 1
    assert samples(gw, "synapse_completion_tokens_total", **labels) == tokens + 6
    assert samples(gw, "synapse_requests_total", status="403", consumer="ai-memory-system") >= 1
    assert samples(gw, "synapse_request_duration_seconds_count", **labels) >= before + 1
    lines = [json.loads(line) for line in gw.log.splitlines() if line.startswith("{")]
    refused = [r for r in lines if r.get("status") == 403 and r.get("model") == "llama-cpu"]
    assert refused and refused[-1]["consumer"] == "ai-memory-system"


def test_reload_revokes_a_removed_key_at_once(
    openai_backend: Backend, ollama_backend: Backend, make_gateway: Any
) -> None:
    config = consumers_config(openai_backend, ollama_backend)
    gateway = make_gateway(config, env=KEYS)
    chat = client(gateway, CHAT_KEY)
    assert chat.chat.completions.create(model="llama-cpu", messages=CHAT).choices
    config["synapse_settings"]["consumers"].pop()  # chat-ui's key is revoked
    config["synapse_settings"]["ollama_consumer"] = "ai-memory-system"
    gateway.config_path.write_text(yaml.safe_dump(config))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            chat.models.list()
        except openai.AuthenticationError:
            break
        time.sleep(0.1)
    else:
        pytest.fail("the revoked key still works 20 s after the reload")
    with pytest.raises(openai.AuthenticationError):
        chat.chat.completions.create(model="llama-cpu", messages=CHAT)
    assert client(gateway, MEMORY_KEY).embeddings.create(model="mxbai-embed-large", input="x")


# -- limits -----------------------------------------------------------------------------------


def limited(openai_backend: Backend, ollama_backend: Backend, **limits: int) -> dict:
    config = consumers_config(openai_backend, ollama_backend)
    config["synapse_settings"]["consumers"][0].update(limits)
    return config


def test_rpm_refuses_with_429_and_retry_after_before_the_backend(
    openai_backend: Backend, ollama_backend: Backend, make_gateway: Any
) -> None:
    gateway = make_gateway(limited(openai_backend, ollama_backend, rpm=2), env=KEYS)
    memory = client(gateway, MEMORY_KEY)
    for _ in range(2):
        memory.embeddings.create(model="mxbai-embed-large", input="x")
    calls = ollama_backend.stats()["calls"]
    with pytest.raises(openai.RateLimitError) as err:
        memory.embeddings.create(model="mxbai-embed-large", input="x")
    assert 1 <= int(err.value.response.headers["Retry-After"]) <= 60
    assert "ai-memory-system" in err.value.message
    assert ollama_backend.stats()["calls"] == calls
    # Another consumer and the master key are not limited by it.
    client(gateway, MASTER_KEY).embeddings.create(model="mxbai-embed-large", input="x")


def test_max_parallel_refuses_the_request_beyond_it(
    openai_backend: Backend, ollama_backend: Backend, make_gateway: Any
) -> None:
    gateway = make_gateway(limited(openai_backend, ollama_backend, max_parallel=2), env=KEYS)
    openai_backend.control(mode="slow", delay=1.5, max_active=0)

    async def main() -> list[object]:
        memory = openai.AsyncOpenAI(base_url=gateway.url + "/v1", api_key=MEMORY_KEY, max_retries=0)
        calls = [memory.chat.completions.create(model="llama-gpu", messages=CHAT) for _ in range(3)]
        return await asyncio.gather(*calls, return_exceptions=True)

    results = asyncio.run(main())
    refused = [r for r in results if isinstance(r, openai.RateLimitError)]
    assert len(refused) == 1 and "max_parallel" in refused[0].message
    assert sum(1 for r in results if not isinstance(r, Exception)) == 2
    assert openai_backend.stats()["max_active"] <= 2


def test_rpm_holds_for_the_whole_deployment_of_two_gateways(
    openai_backend: Backend, ollama_backend: Backend, tmp_path: Path
) -> None:
    """Each of `replicas` pods enforces its share: 4 rpm over 2 gateways is 2 on each, so a
    consumer whose requests are spread over both is served 4 times in all, never more."""
    config = limited(openai_backend, ollama_backend, rpm=4)
    config["synapse_settings"]["replicas"] = 2
    gateways = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        gateways.append(Gateway(config, tmp_path / name, env=KEYS))
    try:
        served = refused = 0
        for _ in range(4):
            for gateway in gateways:
                try:
                    client(gateway, MEMORY_KEY).embeddings.create(
                        model="mxbai-embed-large", input="x"
                    )
                    served += 1
                except openai.RateLimitError:
                    refused += 1
        assert (served, refused) == (4, 4)
    finally:
        for gateway in gateways:
            gateway.stop()
