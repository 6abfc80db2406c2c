"""LangChain (langchain-openai, langchain-ollama) against a real Synapse."""

from __future__ import annotations

import openai
import pytest
from langchain_core.messages import HumanMessage, ToolMessage
from langchain_core.tools import tool
from langchain_ollama import ChatOllama, OllamaEmbeddings
from langchain_openai import ChatOpenAI, OpenAIEmbeddings
from pydantic import BaseModel

from tests.conftest import MASTER_KEY, Backend, Gateway


@tool
def get_weather(city: str) -> str:
    """Weather in a city."""
    return "sunny"


class Answer(BaseModel):
    answer: str


def chat_openai(gateway: Gateway, model: str = "llama-gpu", **kw: object) -> ChatOpenAI:
    return ChatOpenAI(
        model=model, base_url=gateway.url + "/v1", api_key=MASTER_KEY, max_retries=0, **kw
    )


def test_chat_openai_invoke_stream(gateway: Gateway) -> None:
    llm = chat_openai(gateway)
    assert llm.invoke("hi").content.endswith("You said: hi")
    assert "".join(c.content for c in llm.stream("hi")) == "Hello from the stub backend."


def test_chat_openai_on_the_ollama_port(gateway: Gateway) -> None:
    llm = ChatOpenAI(model="llama-cpu", base_url=gateway.ollama_url + "/v1", api_key="ollama")
    assert llm.invoke("hi").content.endswith("You said: hi")


def test_chat_openai_tools_round_trip(gateway: Gateway) -> None:
    llm = chat_openai(gateway).bind_tools([get_weather])
    question = HumanMessage("weather in Paris?")
    first = llm.invoke([question])
    call = first.tool_calls[0]
    assert call["name"] == "get_weather" and call["args"] == {"city": "stub"}
    result = ToolMessage("sunny", tool_call_id=call["id"])
    assert llm.invoke([question, first, result]).content.endswith("You said: sunny")


def test_chat_openai_structured_output(gateway: Gateway) -> None:
    assert chat_openai(gateway).with_structured_output(Answer).invoke("x") == Answer(answer="stub")


@pytest.mark.parametrize("model", ["llama-cpu", "llama-gpu"])  # translated, passed through
def test_chat_openai_responses_api(gateway: Gateway, model: str) -> None:
    llm = chat_openai(gateway, model, use_responses_api=True)
    assert llm.invoke("hi").text.endswith("You said: hi")
    assert "".join(c.text for c in llm.stream("hi")).startswith("Hello from the stub backend.")


def test_chat_openai_responses_api_tools(gateway: Gateway) -> None:
    llm = chat_openai(gateway, "llama-cpu", use_responses_api=True).bind_tools([get_weather])
    question = HumanMessage("weather in Paris?")
    first = llm.invoke([question])
    call = first.tool_calls[0]
    assert call["name"] == "get_weather"
    second = llm.invoke([question, first, ToolMessage("sunny", tool_call_id=call["id"])])
    assert second.text.endswith("You said: sunny")


def test_missing_model_is_not_found(gateway: Gateway) -> None:
    with pytest.raises(openai.NotFoundError):
        chat_openai(gateway, "no-such-model").invoke("hi")


def test_openai_embeddings(gateway: Gateway) -> None:
    plain = OpenAIEmbeddings(
        model="mxbai-embed-large",
        base_url=gateway.url + "/v1",
        api_key=MASTER_KEY,
        check_embedding_ctx_length=False,
    )
    assert len(plain.embed_documents(["a", "b"])) == 2 and len(plain.embed_query("a")) == 8
    # The default sends token ids: fine for OpenAI-compatible backends, a 400 naming the fix
    # for Ollama ones.
    tokens = OpenAIEmbeddings(
        model="embed-openai", base_url=gateway.url + "/v1", api_key=MASTER_KEY
    )
    assert len(tokens.embed_documents(["a", "b"])) == 2
    refused = OpenAIEmbeddings(
        model="mxbai-embed-large", base_url=gateway.url + "/v1", api_key=MASTER_KEY, max_retries=0
    )
    with pytest.raises(openai.BadRequestError, match="check_embedding_ctx_length=False"):
        refused.embed_documents(["a"])


def test_chat_ollama(gateway: Gateway) -> None:
    for model in ("llama-cpu", "llama-gpu"):  # native, translated
        llm = ChatOllama(model=model, base_url=gateway.ollama_url, validate_model_on_init=True)
        assert llm.invoke("hi").content.startswith("Hello from the stub backend.")
        assert "".join(c.content for c in llm.stream("hi")) == "Hello from the stub backend."


def test_chat_ollama_tools_round_trip(gateway: Gateway, openai_backend: Backend) -> None:
    llm = ChatOllama(model="llama-gpu", base_url=gateway.ollama_url).bind_tools([get_weather])
    question = HumanMessage("weather in Paris?")
    first = llm.invoke([question])
    call = first.tool_calls[0]
    assert call["name"] == "get_weather" and call["args"] == {"city": "stub"}
    second = llm.invoke([question, first, ToolMessage("sunny", tool_call_id=call["id"])])
    assert second.content  # the strict backend took the result: its id matches the call's
    sent = openai_backend.stats()["last_chat_body"]["messages"]
    assert sent[-1]["tool_call_id"] == sent[-2]["tool_calls"][0]["id"]


def test_chat_ollama_structured_output_and_reasoning(gateway: Gateway) -> None:
    llm = ChatOllama(model="llama-gpu", base_url=gateway.ollama_url)
    assert llm.with_structured_output(Answer, method="json_schema").invoke("x") == Answer(
        answer="stub"
    )
    thinking = ChatOllama(model="llama-gpu", base_url=gateway.ollama_url, reasoning=True)
    answer = thinking.invoke("why?")
    assert answer.additional_kwargs["reasoning_content"] == "The stub considers the question."


def test_ollama_embeddings(gateway: Gateway) -> None:
    for model in ("mxbai-embed-large", "embed-openai"):  # native, translated
        emb = OllamaEmbeddings(model=model, base_url=gateway.ollama_url)
        assert len(emb.embed_documents(["a", "b"])) == 2 and len(emb.embed_query("a")) == 8
