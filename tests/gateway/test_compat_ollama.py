"""What the `ollama` client (and browsers) send to the Ollama port works: tool-call ids,
`think`, token counts of translated streams, /api/show, load/unload, /api/ps, CORS."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import ollama
import pytest

from tests.conftest import Backend, Gateway, routing_config

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": name,
            "description": f"{name} of a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
    for name in ("get_weather", "get_time")
]


@pytest.fixture(scope="module")
def client(gateway: Gateway) -> ollama.Client:
    return ollama.Client(host=gateway.ollama_url)


@pytest.fixture
def no_usage(openai_backend: Backend) -> Iterator[None]:
    """A backend that never reports token usage in streams."""
    openai_backend.control(omit_usage=True)
    yield
    openai_backend.control(omit_usage=False)


# -- issue 20.4: token counts of translated streams --------------------------------------------


def test_translated_stream_reports_backend_usage(
    client: ollama.Client, openai_backend: Backend
) -> None:
    *_, last = client.chat(
        model="llama-gpu", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    assert last.done and last.prompt_eval_count == 7 and last.eval_count == 6
    sent = openai_backend.stats()["last_chat_body"]
    assert sent["stream_options"] == {"include_usage": True}


@pytest.mark.usefixtures("no_usage")
def test_unknown_counts_are_left_out_not_zero(gateway: Gateway) -> None:
    with httpx.stream(
        "POST",
        gateway.ollama_url + "/api/generate",
        json={"model": "llama-gpu", "prompt": "hi"},
        timeout=10,
    ) as response:
        lines = [line for line in response.iter_lines() if line]
    final = httpx.Response(200, content=lines[-1]).json()
    assert final["done"] is True
    assert "prompt_eval_count" not in final and "eval_count" not in final


# -- item 8: tool-call ids -------------------------------------------------------------------


def test_tool_calls_round_trip_through_the_ollama_client(client: ollama.Client) -> None:
    question = {"role": "user", "content": "weather in Paris?"}
    first = client.chat(model="llama-gpu", messages=[question], tools=TOOLS[:1], stream=False)
    call = first.message.tool_calls[0]
    assert call.function.name == "get_weather" and call.function.arguments == {"city": "stub"}
    # The client keeps no call id: the tool result is matched to its call by name.
    second = client.chat(
        model="llama-gpu",
        messages=[
            question,
            first.message,
            {"role": "tool", "content": "sunny", "tool_name": "get_weather"},
        ],
        tools=TOOLS[:1],
        stream=False,
    )
    assert second.message.content.endswith("You said: sunny")


def test_parallel_tool_call_ids_kept_both_ways(gateway: Gateway, openai_backend: Backend) -> None:
    openai_backend.control(parallel_calls=2)
    try:
        question = {"role": "user", "content": "weather and time in Paris?"}
        first = httpx.post(
            gateway.ollama_url + "/api/chat",
            json={"model": "llama-gpu", "messages": [question], "tools": TOOLS, "stream": False},
            timeout=10,
        ).json()
        calls = first["message"]["tool_calls"]
        assert [c["id"] for c in calls] == ["call_stub0", "call_stub1"]
        streamed = httpx.post(
            gateway.ollama_url + "/api/chat",
            json={"model": "llama-gpu", "messages": [question], "tools": TOOLS},
            timeout=10,
        )
        last = httpx.Response(200, content=streamed.text.strip().split("\n")[-1]).json()
        assert [c["id"] for c in last["message"]["tool_calls"]] == ["call_stub0", "call_stub1"]
        # Results answered out of order, by id: the strict backend accepts them.
        answer = httpx.post(
            gateway.ollama_url + "/api/chat",
            json={
                "model": "llama-gpu",
                "stream": False,
                "tools": TOOLS,
                "messages": [
                    question,
                    first["message"],
                    {"role": "tool", "content": "noon", "tool_call_id": "call_stub1"},
                    {"role": "tool", "content": "sunny", "tool_call_id": "call_stub0"},
                ],
            },
            timeout=10,
        )
        assert answer.status_code == 200, answer.text
        sent = openai_backend.stats()["last_chat_body"]["messages"]
        assert [m.get("tool_call_id") for m in sent[2:]] == ["call_stub1", "call_stub0"]
    finally:
        openai_backend.control(parallel_calls=1)


# -- item 10: think ----------------------------------------------------------------------------


def test_think_maps_to_reasoning(client: ollama.Client, openai_backend: Backend) -> None:
    messages = [{"role": "user", "content": "why?"}]
    answer = client.chat(model="llama-gpu", messages=messages, think=True, stream=False)
    assert answer.message.thinking == "The stub considers the question."
    sent = openai_backend.stats()["last_chat_body"]
    assert sent["chat_template_kwargs"] == {"enable_thinking": True}
    parts = list(client.chat(model="llama-gpu", messages=messages, think=True, stream=True))
    assert "".join(p.message.thinking or "" for p in parts) == "The stub considers the question."
    plain = client.chat(model="llama-gpu", messages=messages, think=False, stream=False)
    assert plain.message.thinking is None
    assert openai_backend.stats()["last_chat_body"]["chat_template_kwargs"] == {
        "enable_thinking": False
    }


# -- item 6: /api/show for OpenAI-compatible backends ------------------------------------------


def test_show_reports_tools_and_context_length(
    client: ollama.Client, openai_backend: Backend
) -> None:
    openai_backend.control(served="meta-llama/Llama-3.1-8B-Instruct")
    try:
        shown = client.show("llama-gpu")
    finally:
        openai_backend.control(served="stub-model")
    assert "tools" in shown.capabilities and "completion" in shown.capabilities
    assert shown.modelinfo["general.context_length"] == 4096
    assert client.show("embed-openai").capabilities == ["embedding"]


# -- item 7: load/unload conventions and /api/ps ------------------------------------------------


def test_load_and_unload_reach_ollama(client: ollama.Client, ollama_backend: Backend) -> None:
    before = ollama_backend.stats().get("load_requests", 0)
    assert client.generate(model="llama-cpu").done_reason == "load"
    assert ollama_backend.stats()["load_requests"] == before + 1
    assert "llama-cpu:latest" in {m.model for m in client.ps().models}
    loaded = next(m for m in client.ps().models if m.model == "llama-cpu:latest")
    assert loaded.size == 5137025024  # what Ollama reports, under Synapse's name
    assert client.chat(model="llama-cpu", messages=[], keep_alive=0).done_reason == "unload"
    assert ollama_backend.stats()["load_requests"] == before + 2
    assert "llama-cpu:latest" not in {m.model for m in client.ps().models}


def test_promptless_embed_loads(client: ollama.Client, gateway: Gateway) -> None:
    answer = httpx.post(
        gateway.ollama_url + "/api/embed", json={"model": "mxbai-embed-large"}, timeout=10
    )
    assert answer.status_code == 200 and answer.json()["embeddings"] == []
    assert "mxbai-embed-large:latest" in {m.model for m in client.ps().models}
    other = httpx.post(gateway.ollama_url + "/api/embed", json={"model": "embed-openai"})
    assert other.status_code == 200 and other.json()["embeddings"] == []


def test_load_on_openai_backend_answered_by_synapse(
    client: ollama.Client, openai_backend: Backend
) -> None:
    calls = openai_backend.stats()["calls"]
    assert client.generate(model="llama-gpu").done_reason == "load"
    assert client.chat(model="llama-gpu", messages=[]).done_reason == "load"
    assert client.generate(model="llama-gpu", keep_alive=0).done_reason == "unload"
    assert openai_backend.stats()["calls"] == calls
    assert "llama-gpu:latest" in {m.model for m in client.ps().models}  # vLLM: always loaded


def test_unknown_model_hint_does_not_say_pull(client: ollama.Client) -> None:
    with pytest.raises(ollama.ResponseError) as err:
        client.chat(model="nope", messages=[{"role": "user", "content": "x"}])
    assert err.value.status_code == 404 and "pull" not in err.value.error


# -- item 9: CORS on the Ollama port ------------------------------------------------------------


def test_cors_default_origins(gateway: Gateway) -> None:
    for origin in ("http://localhost:3000", "app://obsidian.md", "vscode-webview://abc"):
        answer = httpx.get(gateway.ollama_url + "/api/tags", headers={"Origin": origin})
        assert answer.status_code == 200
        assert answer.headers["Access-Control-Allow-Origin"] == origin
    foreign = httpx.get(
        gateway.ollama_url + "/api/tags", headers={"Origin": "https://evil.example"}
    )
    assert foreign.status_code == 403 and "ollama_origins" in foreign.json()["error"]


def test_cors_preflight_and_stream(gateway: Gateway) -> None:
    origin = "http://127.0.0.1:5173"
    preflight = httpx.options(
        gateway.ollama_url + "/api/chat",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },
    )
    assert preflight.status_code == 204
    assert "POST" in preflight.headers["Access-Control-Allow-Methods"]
    assert "Content-Type" in preflight.headers["Access-Control-Allow-Headers"]
    with httpx.stream(
        "POST",
        gateway.ollama_url + "/api/chat",
        headers={"Origin": origin},
        json={"model": "llama-cpu", "messages": [{"role": "user", "content": "hi"}]},
    ) as stream:
        assert stream.headers["Access-Control-Allow-Origin"] == origin
        assert stream.read()


def test_cors_configured_origins(
    openai_backend: Backend, ollama_backend: Backend, make_gateway
) -> None:
    config = routing_config(
        openai_backend,
        ollama_backend,
        ollama_origins=["https://chat.example.com", "chrome-extension://*"],
    )
    gw = make_gateway(config)
    for origin in ("https://chat.example.com", "chrome-extension://abcdef"):
        answer = httpx.get(gw.ollama_url + "/api/version", headers={"Origin": origin})
        assert answer.headers["Access-Control-Allow-Origin"] == origin
    refused = httpx.get(gw.ollama_url + "/api/version", headers={"Origin": "https://a.example"})
    assert refused.status_code == 403


@pytest.mark.parametrize(
    ("keep_alive", "reason"), [("0s", "unload"), ("5m", "load"), (0, "unload")]
)
def test_keep_alive_spellings(gateway: Gateway, keep_alive: object, reason: str) -> None:
    answer = httpx.post(
        gateway.ollama_url + "/api/generate",
        json={"model": "llama-gpu", "keep_alive": keep_alive},
        timeout=10,
    )
    assert answer.json()["done_reason"] == reason
