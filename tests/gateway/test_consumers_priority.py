"""Consumers (issue 19): when a deployment is at max_parallel_requests, queued interactive
requests go before batch ones, and `batch_aging` keeps batch from waiting for ever.

The stub backend records the order in which requests reach it (by X-Request-ID)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import openai
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Backend
from tests.gateway.test_consumers import CHAT_KEY, KEYS, MEMORY_KEY, consumers_config

CHAT = [{"role": "user", "content": "ping"}]


def saturated_config(openai_backend: Backend, ollama_backend: Backend, aging: float) -> dict:
    config = consumers_config(openai_backend, ollama_backend, batch_aging=aging)
    config["model_list"] = [m for m in config["model_list"] if m["model_name"] == "llama-gpu"]
    config["model_list"][0]["litellm_params"].update(max_parallel_requests=1, timeout=60)
    config["router_settings"].pop("fallbacks")
    consumers = config["synapse_settings"]["consumers"]
    consumers[0]["models"] = consumers[1]["models"] = ["llama-gpu"]
    config["synapse_settings"]["ollama_consumer"] = None
    return config


async def queued(metrics_url: str) -> float:
    async with httpx.AsyncClient() as http:
        text = (await http.get(metrics_url)).text
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "synapse_requests_queued"
    )


async def until_queued(metrics_url: str, n: int) -> None:
    for _ in range(1000):  # the holder's 10 s delay covers this; 20 s at most
        if await queued(metrics_url) >= n:
            return
        await asyncio.sleep(0.02)
    raise TimeoutError(f"{n} requests never queued")


def served_order(openai_backend: Backend, gateway: Any) -> tuple[list[str], list[str]]:
    """One request holds the only slot; two batch, then two interactive requests queue up.
    Returns the order the backend saw and the names, in the order they were sent."""
    openai_backend.control(mode="slow", delay=10, order=[])
    ids = {name: str(uuid.uuid4()) for name in ("hold", "batch1", "batch2", "chat1", "chat2")}

    async def main() -> list[object]:
        keys = {"hold": CHAT_KEY, "batch": MEMORY_KEY, "chat": CHAT_KEY}
        clients = {
            who: openai.AsyncOpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0)
            for who, key in keys.items()
        }

        def send(name: str) -> asyncio.Task:
            who = name.rstrip("12")
            call = clients[who].chat.completions.create(
                model="llama-gpu", messages=CHAT, extra_headers={"X-Request-ID": ids[name]}
            )
            return asyncio.create_task(call)

        tasks = [send("hold")]
        for _ in range(1000):
            if openai_backend.stats()["order"]:
                break
            await asyncio.sleep(0.02)
        for n, name in enumerate(("batch1", "batch2", "chat1", "chat2"), start=1):
            tasks.append(send(name))
            await until_queued(gateway.metrics_url, n)
        openai_backend.control(delay=0)  # the holder finishes; the queue drains at once
        return await asyncio.gather(*tasks, return_exceptions=True)

    results = asyncio.run(main())
    assert not [r for r in results if isinstance(r, Exception)]  # batch is served too
    by_id = {v: k for k, v in ids.items()}
    return [by_id[i] for i in openai_backend.stats()["order"]], list(ids)


def test_interactive_is_served_before_batch_and_batch_still_served(
    openai_backend: Backend, ollama_backend: Backend, make_gateway: Any
) -> None:
    gateway = make_gateway(saturated_config(openai_backend, ollama_backend, 60), env=KEYS)
    order, _ = served_order(openai_backend, gateway)
    assert order == ["hold", "chat1", "chat2", "batch1", "batch2"]


def test_batch_that_waited_longer_than_batch_aging_goes_first(
    openai_backend: Backend, ollama_backend: Backend, make_gateway: Any
) -> None:
    """With no aging allowance batch requests keep their place: the queue is first come,
    first served, which is what a batch request reaches once it has waited `batch_aging`."""
    gateway = make_gateway(saturated_config(openai_backend, ollama_backend, 0), env=KEYS)
    order, sent = served_order(openai_backend, gateway)
    assert order == sent
