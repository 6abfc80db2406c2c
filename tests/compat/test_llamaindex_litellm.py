"""LlamaIndex (Ollama, OllamaEmbedding, OpenAILike) and the litellm SDK as clients of Synapse."""

from __future__ import annotations

import litellm
from llama_index.core.llms import ChatMessage
from llama_index.core.tools import FunctionTool
from llama_index.embeddings.ollama import OllamaEmbedding
from llama_index.llms.ollama import Ollama
from llama_index.llms.openai_like import OpenAILike

from tests.conftest import MASTER_KEY, Backend, Gateway

HI = [ChatMessage(role="user", content="hi")]


def get_weather(city: str) -> str:
    """Weather in a city."""
    return "sunny"


# -- LlamaIndex --------------------------------------------------------------------------------


def test_llamaindex_ollama_chat_complete_stream(gateway: Gateway) -> None:
    for model in ("llama-cpu", "llama-gpu"):  # native, translated
        llm = Ollama(model=model, base_url=gateway.ollama_url, request_timeout=10)
        assert llm.chat(HI).message.content.startswith("Hello from the stub backend.")
        assert llm.complete("hi").text.startswith("Hello from the stub backend.")
        streamed = "".join(r.delta or "" for r in llm.stream_chat(HI))
        assert streamed == "Hello from the stub backend."


def test_llamaindex_ollama_json_mode(gateway: Gateway) -> None:
    llm = Ollama(model="llama-gpu", base_url=gateway.ollama_url, request_timeout=10, json_mode=True)
    assert llm.complete("x").text == '{"answer": "stub"}'  # format "json" → response_format


def test_llamaindex_ollama_context_window_from_show(
    gateway: Gateway, openai_backend: Backend
) -> None:
    openai_backend.control(served="meta-llama/Llama-3.1-8B-Instruct")
    try:
        llm = Ollama(model="llama-gpu", base_url=gateway.ollama_url, request_timeout=10)
        assert llm.get_context_window() == 4096  # the backend's max_model_len
    finally:
        openai_backend.control(served="stub-model")


def test_llamaindex_ollama_tools(gateway: Gateway) -> None:
    llm = Ollama(model="llama-gpu", base_url=gateway.ollama_url, request_timeout=10)
    response = llm.chat_with_tools([FunctionTool.from_defaults(get_weather)], "weather in Paris?")
    calls = llm.get_tool_calls_from_response(response, error_on_no_tool_call=True)
    assert calls[0].tool_name == "get_weather" and calls[0].tool_kwargs == {"city": "stub"}


def test_llamaindex_ollama_embedding(gateway: Gateway) -> None:
    for model in ("mxbai-embed-large", "embed-openai"):  # native, translated
        emb = OllamaEmbedding(model_name=model, base_url=gateway.ollama_url)
        assert len(emb.get_text_embedding_batch(["a", "b"])) == 2
        assert len(emb.get_query_embedding("a")) == 8


def test_llamaindex_openai_like(gateway: Gateway) -> None:
    llm = OpenAILike(
        model="llama-gpu",
        api_base=gateway.url + "/v1",
        api_key=MASTER_KEY,
        is_chat_model=True,
        is_function_calling_model=True,
        context_window=4096,
    )
    assert llm.chat(HI).message.content.endswith("You said: hi")
    assert "".join(r.delta or "" for r in llm.stream_chat(HI)) == "Hello from the stub backend."
    response = llm.chat_with_tools([FunctionTool.from_defaults(get_weather)], "weather?")
    assert llm.get_tool_calls_from_response(response)[0].tool_name == "get_weather"
    plain = OpenAILike(model="llama-gpu", api_base=gateway.url + "/v1", api_key=MASTER_KEY)
    assert plain.complete("hi").text.endswith("You said: hi")  # /v1/completions


# -- the litellm SDK ---------------------------------------------------------------------------


def _openai(gateway: Gateway) -> dict[str, str]:
    return {"api_base": gateway.url + "/v1", "api_key": MASTER_KEY}


def test_litellm_completion_stream_tools(gateway: Gateway) -> None:
    messages = [{"role": "user", "content": "hi"}]
    answer = litellm.completion(model="openai/llama-gpu", messages=messages, **_openai(gateway))
    assert answer.choices[0].message.content.endswith("You said: hi")
    assert answer.usage.prompt_tokens == 7
    chunks = litellm.completion(
        model="openai/llama-gpu", messages=messages, stream=True, **_openai(gateway)
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == (
        "Hello from the stub backend."
    )
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"],
                },
            },
        }
    ]
    called = litellm.completion(
        model="openai/llama-gpu", messages=messages, tools=tools, **_openai(gateway)
    )
    assert called.choices[0].message.tool_calls[0].function.name == "get_weather"


def test_litellm_structured_output(gateway: Gateway) -> None:
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}}
    answer = litellm.completion(
        model="openai/llama-gpu",
        messages=[{"role": "user", "content": "x"}],
        response_format={"type": "json_schema", "json_schema": {"name": "a", "schema": schema}},
        **_openai(gateway),
    )
    assert answer.choices[0].message.content == '{"answer": "stub"}'


def test_litellm_embedding(gateway: Gateway) -> None:
    answer = litellm.embedding(
        model="openai/mxbai-embed-large", input=["a", "b"], **_openai(gateway)
    )
    assert len(answer.data) == 2


def test_litellm_ollama_chat_provider(gateway: Gateway) -> None:
    """LiteLLM's own Ollama provider, pointed at Synapse's Ollama port."""
    answer = litellm.completion(
        model="ollama_chat/llama-gpu",
        messages=[{"role": "user", "content": "hi"}],
        api_base=gateway.ollama_url,
    )
    assert answer.choices[0].message.content.startswith("Hello from the stub backend.")
    embedded = litellm.embedding(
        model="ollama/mxbai-embed-large", input=["a"], api_base=gateway.ollama_url
    )
    assert len(embedded.data[0]["embedding"]) == 8


def test_litellm_responses(gateway: Gateway) -> None:
    for model in ("llama-cpu", "llama-gpu"):  # translated, passed through
        response = litellm.responses(model=f"openai/{model}", input="hi", **_openai(gateway))
        text = response.output[0].content[0].text
        assert text.endswith("You said: hi")
