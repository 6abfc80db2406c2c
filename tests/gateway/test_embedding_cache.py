"""The embedding cache: repeats skip the backend, the byte bound holds, reloads invalidate.

The stub backend logs every embedding call, so "served from the cache" is an observed
absence of a call, not a timing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import ollama
import openai
import pytest
import yaml

from synapse.config import ConfigError, load_config
from synapse.config.schema import EmbeddingCache
from synapse.embeddings import cache as cache_module
from synapse.embeddings.cache import VectorCache
from tests.conftest import Backend, Gateway, routing_config
from tests.gateway.embedding_helpers import (
    calls,
    close_to,
    metric,
    ollama_client,
    openai_client,
    sync,
    unique,
)
from tests.stubs.backend import legacy_vector

MODEL = "mxbai-embed-large"
ENTRY = 8 * 8 + 200  # an 8-float vector as doubles plus the entry overhead (cache.py)


@pytest.fixture(scope="module")
def backends() -> Iterator[tuple[Backend, Backend]]:
    pair = Backend("ollama"), Backend("openai")
    yield pair
    for backend in pair:
        backend.stop()


@pytest.fixture(autouse=True)
def _fresh(backends) -> None:
    for backend in backends:
        backend.control(mode="ok", embed_calls=[], embed_delay=0, reject_text=None)


@pytest.fixture
def stack(backends, make_gateway) -> tuple[Gateway, Backend, Backend]:
    ollama_b, openai_b = backends
    return make_gateway(routing_config(openai_b, ollama_b)), ollama_b, openai_b


@sync
async def test_repeats_are_served_without_a_backend_call_across_both_apis(stack) -> None:
    gw, ollama_b, openai_b = stack
    ol, oa = ollama_client(gw), openai_client(gw)
    text, other = unique("repeat"), unique("other")
    first = await ol.embed(model=MODEL, input=text)
    again = await ol.embed(model=MODEL, input=[other, text])  # one hit, one miss
    as_openai = await oa.embeddings.create(model=MODEL, input=text)  # base64: decoded by the SDK
    as_float = await oa.embeddings.create(model=MODEL, input=[text], encoding_format="float")
    assert [c["texts"] for c in calls(ollama_b)] == [[text], [other]]
    assert first.embeddings[0] == again.embeddings[1] == as_float.data[0].embedding
    assert close_to(as_openai.data[0].embedding, text) and close_to(again.embeddings[0], other)
    assert as_float.usage.prompt_tokens == 1  # the stub's count for the text, kept with it
    assert metric(gw, "synapse_embedding_cache_total", result="hit") == 3
    assert metric(gw, "synapse_embedding_cache_total", result="miss") == 2

    await oa.embeddings.create(model="embed-openai", input=text)  # another group: its own entry
    await ol.embed(model=MODEL, input=text, dimensions=4)  # other parameters: their own entry
    for _ in range(2):  # the deprecated endpoint's vectors differ: their own entry, then hits
        await ol.embeddings(model=MODEL, prompt=text)
    assert [c["texts"] for c in calls(openai_b)] == [[text]]
    assert [(c["path"], c["dimensions"]) for c in calls(ollama_b)] == [
        ("/api/embed", None),
        ("/api/embed", None),
        ("/api/embed", 4),
        ("/api/embeddings", None),
    ]


@sync
async def test_failures_are_not_stored(stack) -> None:
    gw, ollama_b, _ = stack
    ol = ollama_client(gw)
    text = unique("refused")
    ollama_b.control(reject_text=text)
    with pytest.raises(ollama.ResponseError) as refused:
        await ol.embeddings(model=MODEL, prompt=text)
    assert refused.value.status_code == 400
    ollama_b.control(reject_text=None)
    answer = await ol.embeddings(model=MODEL, prompt=text)
    assert answer.embedding == pytest.approx(legacy_vector(text)) and len(calls(ollama_b)) == 2


@sync
async def test_the_cache_stays_within_its_byte_bound_evicting_the_oldest(
    backends, make_gateway
) -> None:
    ollama_b, openai_b = backends
    texts = [f"bound-{i:02d}" for i in range(12)]  # equal lengths: equal entry sizes
    size = ENTRY + len(texts[0]) + len(b"{}")
    room = 3
    config = routing_config(openai_b, ollama_b, embedding_cache={"max_mb": room * size / 2**20})
    gw = make_gateway(config)
    ol = ollama_client(gw)
    for text in texts:
        await ol.embed(model=MODEL, input=text)
    assert 0 < metric(gw, "synapse_embedding_cache_bytes") <= room * size
    assert metric(gw, "synapse_embedding_cache_total", result="eviction") == len(texts) - room
    before = len(calls(ollama_b))
    await ol.embed(model=MODEL, input=texts[-1])  # recent: still held
    assert len(calls(ollama_b)) == before
    await ol.embed(model=MODEL, input=texts[0])  # the oldest: evicted, asked again
    assert len(calls(ollama_b)) == before + 1


@sync
async def test_a_reload_that_changes_a_group_clears_only_that_group(backends, make_gateway) -> None:
    ollama_b, openai_b = backends
    config = routing_config(openai_b, ollama_b)
    gw = make_gateway(config)
    ol, oa = ollama_client(gw), openai_client(gw)
    text = unique("reload")
    await ol.embeddings(model=MODEL, prompt=text)
    await oa.embeddings.create(model="embed-openai", input=text)

    entry = next(m for m in config["model_list"] if m["model_name"] == MODEL)
    entry["litellm_params"]["timeout"] = 7  # the deployment changed: its vectors may too
    gw.config_path.write_text(yaml.safe_dump(config))
    deadline = time.monotonic() + 10
    while gw.log.count("config reloaded") < 1:
        assert time.monotonic() < deadline, "the gateway did not reload"
        await asyncio.sleep(0.05)

    await ol.embeddings(model=MODEL, prompt=text)
    await oa.embeddings.create(model="embed-openai", input=text)
    assert [c["texts"] for c in calls(ollama_b)] == [[text], [text]]  # cleared: asked again
    assert [c["texts"] for c in calls(openai_b)] == [[text]]  # unchanged group: still cached


@sync
async def test_disabled_cache_always_asks_the_backend(backends, make_gateway) -> None:
    ollama_b, openai_b = backends
    gw = make_gateway(routing_config(openai_b, ollama_b, embedding_cache={"enabled": False}))
    oa = openai_client(gw)
    for _ in range(2):
        await oa.embeddings.create(model=MODEL, input="same")
    assert len(calls(ollama_b)) == 2
    with pytest.raises(openai.NotFoundError):
        await oa.embeddings.create(model="no-such-model", input="same")


def test_entries_expire_after_ttl(monkeypatch: pytest.MonkeyPatch) -> None:
    """In process, with the clock moved by hand: expiry is a rule, not a timing."""
    now = [1000.0]
    monkeypatch.setattr(cache_module.time, "monotonic", lambda: now[0])
    cache = VectorCache(EmbeddingCache(ttl=60))
    key = ("group", b"{}", "text")
    cache.put(key, [0.5, 0.25], 3)
    now[0] += 59
    hit = cache.get(key)
    assert hit is not None and hit.vector.tolist() == [0.5, 0.25] and hit.tokens == 3
    now[0] += 2
    assert cache.get(key) is None and len(cache) == 0 and cache.bytes == 0


@pytest.mark.parametrize(
    ("settings", "where"),
    [
        ({"embedding_cache": {"max_mb": 0}}, "embedding_cache.max_mb"),
        ({"embedding_batching": {"max_batch": 0}}, "embedding_batching.max_batch"),
        ({"embedding_batching": {"window_ms": 5}}, "embedding_batching.window_ms"),
    ],
)
def test_bad_settings_are_refused_at_load_naming_the_key(tmp_path, settings, where) -> None:
    config = routing_config(None, None, **settings)
    config["model_list"] = [
        {"model_name": "e", "litellm_params": {"model": "openai/e", "api_base": "http://x/v1"}}
    ]
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError) as err:
        load_config(path, {"SYNAPSE_MASTER_KEY": "k" * 32})
    assert where in str(err.value)
