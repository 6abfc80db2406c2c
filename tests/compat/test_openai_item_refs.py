"""The `openai` SDK of the tier (2.54) sending `item_reference` to two Synapse replicas
alternately (issue 25 item 1); the main suite's tests/gateway/test_responses_item_refs.py
covers the refusals with the main suite's SDK."""

from __future__ import annotations

import openai
import pytest

from tests.conftest import MASTER_KEY, WEATHER, Backend


@pytest.fixture(scope="module")
def clients(replica_urls: tuple[str, str]) -> list[openai.OpenAI]:
    return [openai.OpenAI(base_url=url, api_key=MASTER_KEY, max_retries=0) for url in replica_urls]


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
