"""Shared by the embedding batching and cache tests: clients, waits, metric reads."""

from __future__ import annotations

import asyncio
import functools
import math
import time
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

import httpx
import ollama
import openai
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import MASTER_KEY, Backend, Gateway
from tests.stubs.backend import vector


def sync(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """An async test run on its own event loop (the suite has no asyncio plugin)."""

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(test(*args, **kwargs))

    return run


def unique(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex[:8]}"


def ollama_client(gateway: Gateway) -> ollama.AsyncClient:
    return ollama.AsyncClient(host=gateway.ollama_url, timeout=30)


def openai_client(gateway: Gateway) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=gateway.url + "/v1", api_key=MASTER_KEY, max_retries=0)


def calls(backend: Backend) -> list[dict]:
    """Embedding calls the backend received (load calls with no input left out)."""
    return [c for c in backend.stats()["embed_calls"] if c["items"]]


async def in_flight(backend: Backend, count: int) -> None:
    """Until the backend has received `count` embedding calls (the last one held open)."""
    deadline = time.monotonic() + 10
    while len(await asyncio.to_thread(calls, backend)) < count:
        assert time.monotonic() < deadline, "the backend never received the call"
        await asyncio.sleep(0.01)


def metric(gateway: Gateway, name: str, **labels: str) -> float:
    total = 0.0
    for family in text_string_to_metric_families(httpx.get(gateway.metrics_url).text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def close_to(
    got: list[float], text: str, dimensions: int | None = None, unit: bool = False
) -> bool:
    """`got` is the stub's vector for `text` (cut to `dimensions`; renormalized if `unit`)."""
    want = vector(text)[:dimensions] if dimensions else vector(text)
    if unit:
        norm = math.sqrt(sum(x * x for x in want))
        want = [x / norm for x in want]
    return len(got) == len(want) and all(abs(a - b) < 1e-6 for a, b in zip(got, want, strict=True))
