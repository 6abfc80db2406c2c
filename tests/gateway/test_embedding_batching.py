"""Micro-batching: concurrent embedding requests share backend calls, split back per caller.

A first request is held in flight by the stub (`embed_delay`); the group's bound is one call
(`max_in_flight: 1`), so requests arriving meanwhile queue and go out together when it returns,
at most `max_batch` texts a call: the call structure the backend logs is deterministic.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import ollama
import openai
import pytest

from tests.conftest import Backend, Gateway, routing_config
from tests.gateway.embedding_helpers import (
    calls,
    close_to,
    in_flight,
    metric,
    ollama_client,
    openai_client,
    sync,
    unique,
)
from tests.stubs.backend import legacy_vector

BATCH = 4
HOLD = 2.0  # seconds the first call is held: ample for the rest to arrive on a busy machine
# Every other call costs the stub this long, as a CPU engine pays per call: the batcher's tuner
# (module-wide, learning from every call) then always finds batching pays, however loaded the
# machine (with free calls, scheduling noise once made it send a batch's requests alone).
PER_CALL = 0.05
MODEL = "mxbai-embed-large"
HELD = "synapse_embedding_requests_held"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Gateway, Backend, ...]]:
    ollama_b, openai_b, spare = Backend("ollama"), Backend("openai"), Backend("openai")
    config = routing_config(
        openai_b,
        ollama_b,
        embedding_batching={"max_batch": BATCH, "max_in_flight": 1},
        embedding_cache={"enabled": False},
    )
    # A group whose only deployment fails, falling back to a healthy one.
    config["model_list"] += [
        {
            "model_name": "embed-primary",
            "litellm_params": {"model": "openai/e5-small", "api_base": spare.url},
            "model_info": {"id": "primary-embed", "mode": "embedding"},
        }
    ]
    config["router_settings"]["fallbacks"] = [{"embed-primary": ["mxbai-embed-large"]}]
    # The stubs' vectors are one function of the text: declared one space, as check-config asks
    for entry in config["model_list"]:
        if entry["model_name"] in ("embed-primary", "mxbai-embed-large"):
            entry["model_info"]["embedding_space"] = "stub-sha256"
    config["router_settings"]["num_retries"] = 0
    try:
        gw = Gateway(config, tmp_path_factory.mktemp("batching"))
        yield gw, ollama_b, openai_b, spare
        gw.stop()
    finally:  # also when the gateway refuses the config: no stub outlives the module
        for backend in (ollama_b, openai_b, spare):
            backend.stop()


@pytest.fixture(autouse=True)
def _fresh(stack) -> None:
    for backend in stack[1:]:
        backend.control(mode="ok", embed_calls=[], embed_delay=PER_CALL, reject_text=None)


async def _first_in_flight(gw: Gateway, backend: Backend, model: str = MODEL) -> asyncio.Task:
    """A lone request the backend holds, so that the next ones must queue."""
    task = asyncio.create_task(ollama_client(gw).embeddings(model=model, prompt=unique("first")))
    await in_flight(backend, 1)
    return task


async def _held(gw: Gateway, count: int) -> None:
    """Until the gateway reports `count` embedding requests held (10 s at most)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while (now := await asyncio.to_thread(metric, gw, HELD, model=MODEL)) != count:
        assert loop.time() < deadline, f"{now} requests held, never {count}"
        await asyncio.sleep(0.02)


@sync
async def test_concurrent_requests_from_both_apis_share_one_call_in_order(stack) -> None:
    gw, ollama_b, _, _ = stack
    ol, oa = ollama_client(gw), openai_client(gw)
    ollama_b.control(embed_delay=HOLD)
    first = await _first_in_flight(gw, ollama_b)
    ollama_b.control(embed_delay=PER_CALL)
    single, openai_text, pair = unique("embed"), unique("openai"), [unique("a"), unique("b")]
    sent = asyncio.gather(
        ol.embed(model=MODEL, input=single),
        oa.embeddings.create(model=MODEL, input=openai_text),  # base64, as the SDK asks
        ol.embed(model=MODEL, input=pair),  # one caller, two texts: 4 texts in all
    )
    await _held(gw, 3)  # visible while they wait: three requests, whatever their texts
    answers = await sent
    await first
    await _held(gw, 0)  # and none once they have left
    assert [(c["path"], c["items"]) for c in calls(ollama_b)] == [
        ("/api/embeddings", 1),
        ("/api/embed", BATCH),
    ]
    assert sorted(calls(ollama_b)[1]["texts"]) == sorted([single, openai_text, *pair])
    assert close_to(answers[0].embeddings[0], single)
    assert close_to(answers[1].data[0].embedding, openai_text)
    assert close_to(answers[2].embeddings[0], pair[0]) and close_to(
        answers[2].embeddings[1], pair[1]
    )


@sync
async def test_legacy_requests_keep_their_own_endpoint_on_ollama(stack) -> None:
    """/api/embeddings vectors are not normalized, /api/embed's are: never batched into it."""
    gw, ollama_b, _, _ = stack
    ol = ollama_client(gw)
    ollama_b.control(embed_delay=HOLD)
    first = await _first_in_flight(gw, ollama_b)
    ollama_b.control(embed_delay=PER_CALL)
    texts = [unique("legacy") for _ in range(3)]
    answers = await asyncio.gather(*(ol.embeddings(model=MODEL, prompt=t) for t in texts))
    await first
    assert [(c["path"], c["items"]) for c in calls(ollama_b)] == [("/api/embeddings", 1)] * 4
    for text, answer in zip(texts, answers, strict=True):
        assert answer.embedding == pytest.approx(legacy_vector(text), abs=1e-6)


@sync
async def test_openai_backends_get_one_list_call_too(stack) -> None:
    gw, _, openai_b, _ = stack
    ol, oa = ollama_client(gw), openai_client(gw)
    openai_b.control(embed_delay=HOLD)
    task = asyncio.create_task(oa.embeddings.create(model="embed-openai", input=unique("first")))
    await in_flight(openai_b, 1)
    openai_b.control(embed_delay=PER_CALL)
    texts = [unique(f"t{i}") for i in range(BATCH)]
    answers = await asyncio.gather(
        *(oa.embeddings.create(model="embed-openai", input=t) for t in texts[:2]),
        *(ol.embeddings(model="embed-openai", prompt=t) for t in texts[2:]),
    )
    await task
    # on an OpenAI backend legacy requests batch too, among themselves (their own cache key)
    batches = sorted(calls(openai_b)[1:], key=lambda c: c["texts"][0])
    assert [(c["path"], sorted(c["texts"])) for c in batches] == [
        ("/v1/embeddings", sorted(texts[:2])),
        ("/v1/embeddings", sorted(texts[2:])),
    ]
    assert close_to(answers[0].data[0].embedding, texts[0])
    assert close_to(answers[1].data[0].embedding, texts[1])
    assert close_to(answers[2].embedding, texts[2]) and close_to(answers[3].embedding, texts[3])


@sync
async def test_different_parameters_never_share_a_batch(stack) -> None:
    gw, ollama_b, _, _ = stack
    ol, oa = ollama_client(gw), openai_client(gw)
    ollama_b.control(embed_delay=HOLD)
    first = await _first_in_flight(gw, ollama_b)
    ollama_b.control(embed_delay=PER_CALL)
    short = [unique("short") for _ in range(BATCH)]
    full = [unique("full") for _ in range(BATCH)]
    answers = await asyncio.gather(
        *(ol.embed(model=MODEL, input=t, dimensions=4) for t in short[:2]),
        *(oa.embeddings.create(model=MODEL, input=t, dimensions=4) for t in short[2:]),
        *(ol.embed(model=MODEL, input=t) for t in full),
    )
    await first
    batches = calls(ollama_b)[1:]
    assert sorted((c["items"], c["dimensions"] or 0) for c in batches) == [(BATCH, 0), (BATCH, 4)]
    for batch in batches:
        assert set(batch["texts"]) == set(short if batch["dimensions"] == 4 else full)
    # /api/embed truncates to `dimensions` and renormalizes, as Ollama does
    assert close_to(answers[0].embeddings[0], short[0], 4, unit=True)
    assert close_to(answers[2].data[0].embedding, short[2], 4)
    assert close_to(answers[4].embeddings[0], full[0])


@sync
async def test_a_lone_request_is_sent_at_once_with_no_added_wait(stack) -> None:
    gw, ollama_b, _, _ = stack
    ol = ollama_client(gw)
    waited = metric(gw, "synapse_embedding_batch_wait_seconds_sum", model=MODEL)
    counted = metric(gw, "synapse_embedding_batch_wait_seconds_count", model=MODEL)
    texts = [unique("lone") for _ in range(3)]
    for text in texts:  # one after another: never company, never a wait
        answer = await ol.embed(model=MODEL, input=text)
        assert close_to(answer.embeddings[0], text)
    assert [(c["items"], c["texts"]) for c in calls(ollama_b)] == [(1, [t]) for t in texts]
    assert metric(gw, "synapse_embedding_batch_wait_seconds_count", model=MODEL) == counted + 3
    assert metric(gw, "synapse_embedding_batch_wait_seconds_sum", model=MODEL) == waited
    assert metric(gw, "synapse_embedding_batch_size_bucket", model=MODEL, le="1.0") >= 3


@sync
async def test_one_bad_text_fails_only_its_own_request(stack) -> None:
    gw, ollama_b, _, _ = stack
    ol, oa = ollama_client(gw), openai_client(gw)
    bad = unique("too-long")
    ollama_b.control(embed_delay=HOLD)
    first = await _first_in_flight(gw, ollama_b)
    ollama_b.control(embed_delay=PER_CALL, reject_text=bad)
    good = [unique("good") for _ in range(2)]
    results = await asyncio.gather(
        ol.embed(model=MODEL, input=good[0]),
        ol.embed(model=MODEL, input=bad),
        oa.embeddings.create(model=MODEL, input=good[1]),
        oa.embeddings.create(model=MODEL, input=bad),
        return_exceptions=True,
    )
    await first
    assert close_to(results[0].embeddings[0], good[0])
    assert close_to(results[2].data[0].embedding, good[1])
    assert isinstance(results[1], ollama.ResponseError) and results[1].status_code == 400
    assert "context length" in results[1].error
    assert isinstance(results[3], openai.BadRequestError)
    assert "context length" in results[3].message
    assert results[3].body["type"] == "invalid_request_error"
    # the batch of four, then each request on its own
    assert sorted(c["items"] for c in calls(ollama_b)[1:]) == [1, 1, 1, 1, BATCH]


@sync
async def test_a_failed_batch_reaches_every_caller_in_its_own_protocol(stack) -> None:
    gw, ollama_b, _, _ = stack
    ol, oa = ollama_client(gw), openai_client(gw)
    ollama_b.control(embed_delay=HOLD)
    first = await _first_in_flight(gw, ollama_b)
    ollama_b.control(mode="error500")
    results = await asyncio.gather(
        ol.embed(model=MODEL, input=unique("a")),
        ol.embed(model=MODEL, input=[unique("b"), unique("c")]),
        oa.embeddings.create(model=MODEL, input=unique("d")),
        return_exceptions=True,
    )
    with pytest.raises(ollama.ResponseError):
        await first  # held in flight, then failed like the rest
    assert [c["items"] for c in calls(ollama_b)] == [1, BATCH]
    for failed in results[:2]:
        assert isinstance(failed, ollama.ResponseError) and failed.status_code == 502
        assert "stub failure" in failed.error
    assert isinstance(results[2], openai.APIStatusError) and results[2].status_code == 502
    assert results[2].body["type"] == "api_error" and "stub failure" in results[2].message


@sync
async def test_a_failed_batch_falls_back_as_one_request_would(stack) -> None:
    gw, ollama_b, _, spare = stack
    ol, oa = ollama_client(gw), openai_client(gw)
    spare.control(mode="error500", embed_delay=HOLD)
    task = asyncio.create_task(ol.embeddings(model="embed-primary", prompt=unique("first")))
    await in_flight(spare, 1)
    texts = [unique("fb") for _ in range(BATCH)]
    answers = await asyncio.gather(
        *(ol.embed(model="embed-primary", input=t) for t in texts[:2]),
        *(oa.embeddings.create(model="embed-primary", input=t) for t in texts[2:]),
    )
    await task
    assert [c["items"] for c in calls(spare)] == [1, BATCH]
    assert sorted(c["items"] for c in calls(ollama_b)) == [1, BATCH]  # the fallback group's
    assert close_to(answers[0].embeddings[0], texts[0])
    assert close_to(answers[1].embeddings[0], texts[1])
    assert close_to(answers[2].data[0].embedding, texts[2])
    assert close_to(answers[3].data[0].embedding, texts[3])
