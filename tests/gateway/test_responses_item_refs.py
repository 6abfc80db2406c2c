"""Issue 25 item 1: Responses `item_reference` resolved statelessly, on any replica.

Two gateway processes share one config (and so one master key); every second request goes
to the other one, as behind the cluster's Service. The `openai` SDK drives them.
"""

from __future__ import annotations

import os
from pathlib import Path

import openai
import pytest

from tests.conftest import MASTER_KEY, WEATHER, Backend, Gateway, routing_config


@pytest.fixture(scope="module")
def replicas(replica_urls: tuple[str, str]) -> tuple[openai.OpenAI, openai.OpenAI]:
    first, second = (
        openai.OpenAI(base_url=url, api_key=MASTER_KEY, max_retries=0) for url in replica_urls
    )
    return first, second


def _refused(client: openai.OpenAI, **request: object) -> str:
    with pytest.raises(openai.BadRequestError) as err:
        client.responses.create(model="llama-cpu", **request)  # type: ignore[call-overload]
    assert err.value.body["param"] == "input"  # type: ignore[index]
    return err.value.message


def test_message_reference_resolves_on_the_other_replica(
    replicas: tuple[openai.OpenAI, openai.OpenAI], ollama_backend: Backend
) -> None:
    a, b = replicas
    first = a.responses.create(model="llama-cpu", input="remember 42")
    message = first.output[0]
    assert message.type == "message" and first.output_text.endswith("You said: remember 42")
    second = b.responses.create(
        model="llama-cpu",
        input=[
            {"role": "user", "content": "remember 42"},
            {"type": "item_reference", "id": message.id},
            {"role": "user", "content": "what number?"},
        ],
    )
    assert second.output_text.endswith("You said: what number?")
    sent = ollama_backend.stats()["last_chat_body"]["messages"]
    assert sent == [
        {"role": "user", "content": "remember 42"},
        {"role": "assistant", "content": first.output_text},
        {"role": "user", "content": "what number?"},
    ]


def test_tool_loop_by_reference_across_replicas(
    replicas: tuple[openai.OpenAI, openai.OpenAI], ollama_backend: Backend
) -> None:
    a, b = replicas
    first = a.responses.create(model="llama-cpu", input="weather in Paris?", tools=[WEATHER])
    call = first.output[0]
    assert call.type == "function_call" and call.call_id == "call_stub0"
    second = b.responses.create(
        model="llama-cpu",
        tools=[WEATHER],
        input=[
            {"role": "user", "content": "weather in Paris?"},
            {"type": "item_reference", "id": call.id},
            {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"},
        ],
    )
    assert second.output_text.endswith("You said: sunny")  # the backend matched the call id
    assistant = ollama_backend.stats()["last_chat_body"]["messages"][1]
    assert assistant["tool_calls"] == [
        {
            "id": "call_stub0",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city":"stub"}'},
        }
    ]
    third = a.responses.create(  # and the answer after the tool, referenced on the first one
        model="llama-cpu",
        input=[
            {"role": "user", "content": "weather in Paris?"},
            {"type": "item_reference", "id": call.id},
            {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"},
            {"type": "item_reference", "id": second.output[0].id},
            {"role": "user", "content": "thanks"},
        ],
    )
    assert third.output_text.endswith("You said: thanks")


def test_tampered_or_foreign_ids_are_a_clear_400(
    replicas: tuple[openai.OpenAI, openai.OpenAI],
) -> None:
    a, b = replicas
    item_id = a.responses.create(model="llama-cpu", input="hi").output[0].id
    flipped = item_id[:-3] + ("A" if item_id[-3] != "A" else "B") + item_id[-2:]
    for foreign in (flipped, "msg_67ccd3acc8d48190a77525dc6de64b4104becb25c18e0c9c", "rs_1"):
        message = _refused(b, input=[{"type": "item_reference", "id": foreign}])
        assert "was not issued by this Synapse deployment, or was changed" in message
        assert "'store' to false" in message


def test_ids_of_a_deployment_with_another_key_are_refused(
    replicas: tuple[openai.OpenAI, openai.OpenAI],
    openai_backend: Backend,
    ollama_backend: Backend,
    tmp_path: Path,
) -> None:
    other_key = "sk-another-master-key"
    other = Gateway(
        routing_config(openai_backend, ollama_backend),
        tmp_path,
        env={"SYNAPSE_MASTER_KEY": other_key},
    )
    try:
        client = openai.OpenAI(base_url=other.url + "/v1", api_key=other_key, max_retries=0)
        item_id = client.responses.create(model="llama-cpu", input="hi").output[0].id
    finally:
        other.stop()
    message = _refused(replicas[0], input=[{"type": "item_reference", "id": item_id}])
    assert "was not issued by this Synapse deployment" in message


def test_items_too_large_to_carry_say_so(replicas: tuple[openai.OpenAI, openai.OpenAI]) -> None:
    a, b = replicas
    noise = os.urandom(20_000).hex()  # 40 KB that compresses to ~20 KB: over the 16 KiB id bound
    first = a.responses.create(model="llama-cpu", input=noise)
    assert first.output_text.endswith(noise) and len(first.output[0].id) < 100
    message = _refused(b, input=[{"type": "item_reference", "id": first.output[0].id}])
    assert "does not carry its content" in message and "16384 characters" in message
    assert "'store' to false" in message
    short = a.responses.create(model="llama-cpu", input="short")  # a small item is carried
    assert len(short.output[0].id) > 40


def test_streamed_items_say_why_they_cannot_be_referenced(
    replicas: tuple[openai.OpenAI, openai.OpenAI],
) -> None:
    a, b = replicas
    with a.responses.stream(model="llama-cpu", input="hi") as stream:
        final = stream.get_final_response()  # the SDK checks one id per item throughout
    message = _refused(b, input=[{"type": "item_reference", "id": final.output[0].id}])
    assert "it was streamed" in message and "'store' to false" in message


def test_previous_response_id_names_the_alternatives(
    replicas: tuple[openai.OpenAI, openai.OpenAI],
) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        replicas[0].responses.create(model="llama-cpu", input="and?", previous_response_id="r")
    assert "does not store responses" in err.value.message
    assert "item_reference" in err.value.message and "'store' to false" in err.value.message


def test_unknown_item_types_are_named_without_blaming_hosted_tools_alone(
    replicas: tuple[openai.OpenAI, openai.OpenAI],
) -> None:
    message = _refused(replicas[0], input=[{"type": "mcp_call", "id": "x"}])
    assert "'mcp_call' are not supported" in message and "item_reference" in message


def test_passed_through_backends_get_the_references_as_sent(
    replicas: tuple[openai.OpenAI, openai.OpenAI], openai_backend: Backend
) -> None:
    items = [
        {"role": "user", "content": "hi"},
        {"type": "item_reference", "id": "msg_from_vllm_itself"},
        {"role": "user", "content": "again"},
    ]
    replicas[1].responses.create(model="llama-gpu", input=items)  # type: ignore[arg-type]
    assert openai_backend.stats()["last_responses_body"]["input"] == items


def test_passed_through_backends_get_this_deployments_items_resolved(
    replicas: tuple[openai.OpenAI, openai.OpenAI], openai_backend: Backend
) -> None:
    """The cluster's shape: an answer from the Ollama fallback, the next turn on vLLM again.
    vLLM cannot resolve Synapse's ids, so it gets the items; its own ids stay references."""
    a, b = replicas
    first = a.responses.create(model="llama-cpu", input="hi")
    items = [
        {"role": "user", "content": "hi"},
        {"type": "item_reference", "id": first.output[0].id},
        {"type": "item_reference", "id": "msg_from_vllm_itself"},
        {"role": "user", "content": "again"},
    ]
    b.responses.create(model="llama-gpu", input=items)  # type: ignore[arg-type]
    sent = openai_backend.stats()["last_responses_body"]["input"]
    assert sent == [
        items[0],
        {"type": "message", "role": "assistant", "content": first.output_text},
        *items[2:],
    ]
