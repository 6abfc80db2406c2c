"""The `openai` SDK of the tier (2.54) sending `item_reference` to two Synapse replicas
alternately (issue 25 item 1); the main suite's tests/gateway/test_responses_item_refs.py
covers the refusals with the main suite's SDK."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest

from tests.conftest import MASTER_KEY, Backend, Gateway, routing_config

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}


@pytest.fixture(scope="module")
def clients(
    openai_backend: Backend, ollama_backend: Backend, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[openai.OpenAI]]:
    config = routing_config(openai_backend, ollama_backend)
    gateways = [Gateway(config, tmp_path_factory.mktemp("replica")) for _ in range(2)]
    yield [
        openai.OpenAI(base_url=gw.url + "/v1", api_key=MASTER_KEY, max_retries=0) for gw in gateways
    ]
    for gw in gateways:
        gw.stop()


def test_conversation_and_tool_loop_by_reference(
    clients: list[openai.OpenAI], ollama_backend: Backend
) -> None:
    a, b = clients
    history: list[dict] = [{"role": "user", "content": "remember 42"}]
    first = a.responses.create(model="llama-cpu", input=history)  # type: ignore[arg-type]
    history += [{"type": "item_reference", "id": first.output[0].id}]
    history += [{"role": "user", "content": "weather in Paris?"}]
    step = b.responses.create(model="llama-cpu", input=history, tools=[WEATHER])  # type: ignore[arg-type]
    call = step.output[0]
    assert call.type == "function_call"
    history += [{"type": "item_reference", "id": call.id}]
    history += [{"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}]
    done = a.responses.create(model="llama-cpu", input=history, tools=[WEATHER])  # type: ignore[arg-type]
    assert done.output_text.endswith("You said: sunny")
    sent = ollama_backend.stats()["last_chat_body"]["messages"]
    assert sent[1] == {"role": "assistant", "content": first.output_text}
    assert sent[3]["tool_calls"][0]["id"] == sent[4]["tool_call_id"] == call.call_id
