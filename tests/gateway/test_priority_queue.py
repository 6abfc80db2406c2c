"""Issue 24.6: a batch consumer that fills a deployment's wait queue never locks interactive
requests out: an interactive newcomer takes the place of the newest batch waiter, which gets
the 429 it would have got had it come last.

Real gateway and stub backend processes; the `openai` client for every caller.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import openai

from tests.conftest import Backend
from tests.gateway.test_consumers import CHAT_KEY, KEYS, MEMORY_KEY
from tests.gateway.test_consumers_priority import CHAT, saturated_config, until_queued


def test_interactive_request_displaces_the_newest_batch_waiter(
    openai_backend: Backend, ollama_backend: Backend, make_gateway: Any
) -> None:
    config = saturated_config(openai_backend, ollama_backend, aging=60)
    config["synapse_settings"].update(queue_size=2, queue_timeout=60)
    gateway = make_gateway(config, env=KEYS)
    openai_backend.control(mode="slow", delay=10, order=[])
    names = ("hold", "batch1", "batch2", "chat1", "batch3", "chat2", "chat3")
    ids = {name: str(uuid.uuid4()) for name in names}

    async def main() -> dict[str, object]:
        clients = {
            key: openai.AsyncOpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0)
            for key in (CHAT_KEY, MEMORY_KEY)
        }
        tasks: dict[str, asyncio.Task] = {}

        def send(name: str) -> asyncio.Task:
            key = MEMORY_KEY if name.startswith("batch") else CHAT_KEY  # batch | interactive
            call = clients[key].chat.completions.with_raw_response.create(
                model="llama-gpu", messages=CHAT, extra_headers={"X-Request-ID": ids[name]}
            )
            tasks[name] = asyncio.create_task(call)
            return tasks[name]

        send("hold")
        for _ in range(1000):  # the holder's 10 s delay covers this
            if openai_backend.stats()["order"]:
                break
            await asyncio.sleep(0.02)
        send("batch1")
        await until_queued(gateway.metrics_url, 1)
        send("batch2")
        await until_queued(gateway.metrics_url, 2)  # the queue (2) is full of batch
        send("chat1")  # admitted: batch2, the newest batch waiter, makes room
        await asyncio.wait([tasks["batch2"]], timeout=20)
        send("batch3")  # batch never displaces: refused at once
        await asyncio.wait([tasks["batch3"]], timeout=20)
        send("chat2")  # displaces batch1
        await asyncio.wait([tasks["batch1"]], timeout=20)
        send("chat3")  # the queue holds only interactive requests now: refused
        await asyncio.wait([tasks["chat3"]], timeout=20)
        openai_backend.control(delay=0)  # the holder finishes; the queue drains
        results = await asyncio.gather(*tasks.values(), return_exceptions=True)
        return dict(zip(tasks, results, strict=True))

    results = asyncio.run(main())
    for name in ("batch2", "batch3", "batch1", "chat3"):
        error = results[name]
        assert isinstance(error, openai.RateLimitError), (name, error)
        assert error.response.headers["Retry-After"] == "1"
        assert isinstance(error.body, dict) and "queue is full" in error.body["message"]
    for name in ("batch2", "batch1"):
        assert "gives way to interactive" in results[name].body["message"]  # type: ignore[union-attr]
    for name in ("hold", "chat1", "chat2"):
        answer = results[name]
        assert not isinstance(answer, Exception), (name, answer)
        assert answer.parse().choices[0].message.content  # type: ignore[union-attr]
    by_id = {v: k for k, v in ids.items()}
    assert [by_id[i] for i in openai_backend.stats()["order"]] == ["hold", "chat1", "chat2"]
