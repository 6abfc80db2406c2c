"""Saturation-aware batching (issue 27): requests are held only while the group's backend is at
its capacity, leave together when it has room, in priority order, within a bounded queue and a
deadline; the calls in flight per group are bounded; the batcher learns per deployment whether
batching pays and stops where it loses.

The stub holds a first call (`embed_delay`) so the rest must queue; call structure is read from
the calls the stub logs, never from a clock.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import MASTER_KEY, Backend, Gateway, routing_config
from tests.gateway.embedding_helpers import (
    calls,
    close_to,
    in_flight,
    ollama_client,
    openai_client,
    sync,
    unique,
)
from tests.gateway.test_consumers import KEYS, MEMORY_KEY

MODEL = "mxbai-embed-large"
HOLD = 2.0
PER_CALL = 0.05  # each call's cost at the stub, as a CPU engine's: batching pays on `serial`


def _config(ollama_b: Backend, parallel: int | None = 1, **settings: object) -> dict:
    config = routing_config(
        None,
        ollama_b,
        embedding_cache={"enabled": False},
        consumers=[
            {"name": "memory", "key": "os.environ/KEY_MEMORY", "priority": "batch"},
        ],
        **settings,
    )
    if parallel is not None:
        config["model_list"][0]["litellm_params"]["max_parallel_requests"] = parallel
    return config


def _stack(
    tmp_path_factory: pytest.TempPathFactory, name: str, **options: Any
) -> Iterator[tuple[Gateway, Backend]]:
    """A gateway on one Ollama stub (`_config(backend, **options)`), both stopped after."""
    backend = Backend("ollama")
    try:
        gw = Gateway(_config(backend, **options), tmp_path_factory.mktemp(name), env=KEYS)
        yield gw, backend
        gw.stop()
    finally:
        backend.stop()


@pytest.fixture(scope="module")
def serial(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Gateway, Backend]]:
    """An Ollama that embeds one call at a time (max_parallel_requests: 1, as declared)."""
    yield from _stack(tmp_path_factory, "serial")


@pytest.fixture(autouse=True)
def _fresh(serial) -> None:
    serial[1].control(
        mode="ok", embed_calls=[], embed_delay=PER_CALL, embed_text_delay=0, max_active=0
    )


async def _hold(gw: Gateway, backend: Backend) -> asyncio.Task:
    backend.control(embed_delay=HOLD)
    task = asyncio.create_task(ollama_client(gw).embed(model=MODEL, input=unique("first")))
    await in_flight(backend, 1)
    backend.control(embed_delay=PER_CALL)
    return task


@sync
async def test_requests_wait_while_the_backend_is_busy_and_leave_as_one_call(serial) -> None:
    """Arriving 50 ms apart while the only slot is busy, six requests become one call when it
    frees (a window-based batcher sent them as six calls queued behind the first)."""
    gw, backend = serial
    first = await _hold(gw, backend)
    ol = ollama_client(gw)
    texts = [unique("spread") for _ in range(6)]
    tasks = []
    for text in texts:
        tasks.append(asyncio.create_task(ol.embed(model=MODEL, input=text)))
        await asyncio.sleep(0.05)
    answers = await asyncio.gather(*tasks)
    await first
    assert [c["items"] for c in calls(backend)] == [1, 6]
    assert sorted(calls(backend)[1]["texts"]) == sorted(texts)
    assert backend.stats()["max_active"] == 1  # never more than the backend's one slot
    for text, answer in zip(texts, answers, strict=True):
        assert close_to(answer.embeddings[0], text)


@sync
async def test_batch_consumer_embeddings_do_not_jump_the_queue(serial) -> None:
    """Queued behind a busy slot: a batch consumer's texts, then an interactive one. The
    interactive request leaves first, alone; the batch lane after it (issue 24 finding 6)."""
    gw, backend = serial
    first = await _hold(gw, backend)
    memory = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key=MEMORY_KEY, max_retries=0)
    chat = openai_client(gw)
    bulk = [unique("bulk") for _ in range(3)]
    urgent = unique("urgent")
    tasks = []
    for text in bulk:
        tasks.append(asyncio.create_task(memory.embeddings.create(model=MODEL, input=text)))
        await asyncio.sleep(0.05)
    tasks.append(asyncio.create_task(chat.embeddings.create(model=MODEL, input=urgent)))
    answers = await asyncio.gather(*tasks)
    await first
    assert [c["texts"] for c in calls(backend)[1:]] == [[urgent], bulk]
    for text, answer in zip([*bulk, urgent], answers, strict=True):
        assert close_to(answer.data[0].embedding, text)


async def _drive(gw: Gateway, clients: int, rounds: int) -> None:
    """`clients` callers, one unique text per request, `rounds` requests each."""
    oa = openai_client(gw)

    async def caller() -> None:
        for _ in range(rounds):
            text = unique("load")
            answer = await oa.embeddings.create(model=MODEL, input=text)
            assert close_to(answer.data[0].embedding, text)

    await asyncio.gather(*(caller() for _ in range(clients)))


@sync
async def test_batching_continues_where_the_backend_pays_per_call(serial) -> None:
    """A per-call cost and one slot (a CPU engine): batched calls win and stay batched."""
    gw, backend = serial
    backend.control(embed_delay=0.02)
    await _drive(gw, clients=12, rounds=15)
    sizes = [c["items"] for c in calls(backend)]
    late = sizes[len(sizes) // 2 :]
    # Most texts travel in shared calls (stragglers go alone while a full call is out); had
    # the tuner turned batching off, calls would carry one text (two when exploring).
    assert sum(n for n in late if n > 2) >= 0.6 * sum(late), sizes
    assert backend.stats()["max_active"] == 1


@pytest.fixture(scope="module")
def padded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Gateway, Backend]]:
    """Four slots and a batch that costs more per text than single calls (padding)."""
    yield from _stack(tmp_path_factory, "padded", parallel=4)


@sync
async def test_batching_stops_where_it_loses(padded) -> None:
    gw, backend = padded
    backend.control(embed_calls=[], embed_delay=0.01, embed_text_delay=0.03)
    await _drive(gw, clients=16, rounds=20)
    sizes = [c["items"] for c in calls(backend)]
    assert any(n > 1 for n in sizes[:40]), "the batcher never tried batching"
    late = sizes[-40:]
    assert sum(n == 1 for n in late) >= 30, late  # single calls, a few exploring pairs
    assert max(late) <= 2, late


@pytest.fixture(scope="module")
def bounded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Gateway, Backend]]:
    """No max_parallel_requests declared: `max_in_flight` bounds the group; a short deadline."""
    yield from _stack(
        tmp_path_factory,
        "bounded",
        parallel=None,
        embedding_batching={"enabled": False, "max_in_flight": 2},
        queue_timeout=0.5,
        queue_size=6,
    )


@sync
async def test_one_callers_flood_gets_the_groups_bound_not_the_pool(bounded) -> None:
    gw, backend = bounded
    backend.control(embed_calls=[], embed_delay=0.1, max_active=0)
    oa = openai_client(gw)
    texts = [unique("flood") for _ in range(8)]
    answers = await asyncio.gather(*(oa.embeddings.create(model=MODEL, input=t) for t in texts))
    assert backend.stats()["max_active"] == 2
    assert sorted(c["items"] for c in calls(backend)) == [1] * 8  # batching off: each alone
    for text, answer in zip(texts, answers, strict=True):
        assert close_to(answer.data[0].embedding, text)


@sync
async def test_a_held_request_gets_a_429_at_its_deadline_and_the_queue_is_bounded(bounded) -> None:
    gw, backend = bounded
    backend.control(embed_calls=[], embed_delay=HOLD, max_active=0)
    oa = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key=MASTER_KEY, max_retries=0)
    results = await asyncio.gather(
        *(oa.embeddings.create(model=MODEL, input=unique("late")) for _ in range(10)),
        return_exceptions=True,
    )
    refused = [r for r in results if isinstance(r, openai.RateLimitError)]
    assert len(refused) == 8, results  # 2 in flight; 6 queued past 0.5 s, 2 over queue_size
    assert sum("queue_size" in r.message for r in refused) == 2
    assert sum("no free call within 0.5s" in r.message for r in refused) == 6
    assert all(r.body["type"] == "rate_limit_error" for r in refused)
    assert len(calls(backend)) == 2  # the refused never reached the backend


@sync
async def test_a_caller_that_leaves_while_held_is_never_sent(serial) -> None:
    gw, backend = serial
    first = await _hold(gw, backend)
    gone, kept = unique("gone"), unique("kept")
    async with httpx.AsyncClient(timeout=0.5) as http:
        with pytest.raises(httpx.ReadTimeout):
            await http.post(gw.ollama_url + "/api/embed", json={"model": MODEL, "input": gone})
    answer = await ollama_client(gw).embed(model=MODEL, input=kept)
    await first
    assert [c["texts"] for c in calls(backend)[1:]] == [[kept]]
    assert close_to(answer.embeddings[0], kept)
