"""What the `openai` SDK sends works: the Ollama port's /v1, models.retrieve, route 404s,
token-array embeddings, and the Responses API (translated and passed through)."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.conftest import MASTER_KEY, WEATHER, Backend, Gateway, routing_config


@pytest.fixture(scope="module")
def client(gateway: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=MASTER_KEY, max_retries=0)


@pytest.fixture(scope="module")
def ollama_port(gateway: Gateway) -> openai.OpenAI:
    """As consumers of real Ollama do: OpenAI(base_url=OLLAMA_BASE_URL + "/v1"), no key."""
    return openai.OpenAI(base_url=gateway.ollama_url + "/v1", api_key="ollama", max_retries=0)


# -- item 1: the Ollama port serves OpenAI's API -----------------------------------------------


def test_ollama_port_serves_openai_routes(ollama_port: openai.OpenAI) -> None:
    answer = ollama_port.chat.completions.create(
        model="llama-cpu", messages=[{"role": "user", "content": "hi"}]
    )
    assert answer.choices[0].message.content.endswith("You said: hi")
    chunks = ollama_port.chat.completions.create(
        model="llama-gpu", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello from the stub backend."
    vectors = ollama_port.embeddings.create(model="mxbai-embed-large", input=["a", "b"])
    assert len(vectors.data) == 2
    assert "llama-gpu" in {m.id for m in ollama_port.models.list()}
    assert ollama_port.completions.create(model="llama-gpu", prompt="x").choices[0].text


def test_ollama_port_openai_routes_follow_its_key_policy(
    openai_backend: Backend, ollama_backend: Backend, make_gateway
) -> None:
    config = routing_config(openai_backend, ollama_backend, ollama_requires_key=True)
    gw = make_gateway(config)
    keyless = openai.OpenAI(base_url=gw.ollama_url + "/v1", api_key="ollama", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        keyless.models.list()
    keyed = openai.OpenAI(base_url=gw.ollama_url + "/v1", api_key=MASTER_KEY, max_retries=0)
    assert keyed.models.list().data


# -- items 3 and 4: models.retrieve, and a missing route is not a missing model ---------------


def test_models_retrieve(client: openai.OpenAI) -> None:
    assert client.models.retrieve("llama-gpu").id == "llama-gpu"
    assert client.models.retrieve("llama3.1:8b").id == "llama3.1:8b"  # an alias
    with pytest.raises(openai.NotFoundError) as err:
        client.models.retrieve("no-such-model")
    assert err.value.code == "model_not_found"


def test_unknown_route_names_the_route(client: openai.OpenAI, gateway: Gateway) -> None:
    with pytest.raises(openai.NotFoundError) as err:
        client.post("/assistants/nothing", cast_to=object, body={})
    assert err.value.code != "model_not_found"
    assert "POST /v1/assistants/nothing" in err.value.message
    raw = httpx.get(gateway.ollama_url + "/api/nothing")
    assert raw.status_code == 404 and "/api/nothing" in raw.json()["error"]


# -- item 5: token-array embedding input ------------------------------------------------------


def test_token_arrays_refused_for_ollama_with_the_fix(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client.embeddings.create(model="mxbai-embed-large", input=[[1, 2, 3]])
    assert "check_embedding_ctx_length=False" in err.value.message


def test_token_arrays_pass_to_openai_backends(client: openai.OpenAI) -> None:
    assert len(client.embeddings.create(model="embed-openai", input=[[1, 2], [3]]).data) == 2


# -- item 2: /v1/responses ---------------------------------------------------------------------


def test_responses_translated_for_ollama(client: openai.OpenAI, ollama_backend: Backend) -> None:
    response = client.responses.create(
        model="llama-cpu", instructions="Be brief.", input="hi", max_output_tokens=50
    )
    assert response.status == "completed" and response.output_text.endswith("You said: hi")
    assert response.usage.input_tokens == 7 and response.usage.output_tokens == 6
    sent = ollama_backend.stats()["last_chat_body"]
    assert sent["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hi"},
    ]
    assert sent["model"] == "llama3.1:8b" and sent["max_tokens"] == 50


def test_responses_function_tools_round_trip(client: openai.OpenAI) -> None:
    first = client.responses.create(model="llama-cpu", input="weather in Paris?", tools=[WEATHER])
    call = first.output[0]
    assert call.type == "function_call" and call.name == "get_weather"
    assert call.arguments == '{"city":"stub"}' and call.call_id == "call_stub0"
    second = client.responses.create(
        model="llama-cpu",
        tools=[WEATHER],
        input=[
            {"role": "user", "content": "weather in Paris?"},
            call.model_dump(include={"type", "call_id", "name", "arguments"}),
            {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"},
        ],
    )
    assert second.output_text.endswith("You said: sunny")  # the backend accepted the ids


def test_responses_multi_turn_items_and_structured_output(
    client: openai.OpenAI, ollama_backend: Backend
) -> None:
    response = client.responses.create(
        model="llama-cpu",
        input=[
            {"role": "developer", "content": "Answer in JSON."},
            {"role": "user", "content": [{"type": "input_text", "text": "first"}]},
            {"role": "assistant", "content": [{"type": "output_text", "text": "ok"}]},
            {"role": "user", "content": "second"},
        ],
        text={
            "format": {
                "type": "json_schema",
                "name": "answer",
                "schema": {"type": "object", "properties": {"answer": {"type": "string"}}},
            }
        },
    )
    assert response.output_text == '{"answer": "stub"}'
    sent = ollama_backend.stats()["last_chat_body"]
    assert [m["role"] for m in sent["messages"]] == ["system", "user", "assistant", "user"]
    assert sent["response_format"]["json_schema"]["name"] == "answer"


def test_responses_stream_translated(client: openai.OpenAI) -> None:
    events = list(client.responses.create(model="llama-cpu", input="hi", stream=True))
    kinds = [e.type for e in events]
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    final = events[-1].response
    assert text == "Hello from the stub backend." and final.output_text == text
    assert final.usage.output_tokens == 6
    with client.responses.stream(model="llama-cpu", input="hi") as stream:  # the SDK's helper
        assert stream.get_final_response().output_text == text


def test_responses_stream_function_call(client: openai.OpenAI) -> None:
    with client.responses.stream(model="llama-cpu", input="weather?", tools=[WEATHER]) as stream:
        kinds = [e.type for e in stream]
        final = stream.get_final_response()
    assert "response.function_call_arguments.delta" in kinds
    assert "response.function_call_arguments.done" in kinds
    call = final.output[0]
    assert call.type == "function_call" and call.arguments == '{"city":"stub"}'


def test_responses_passed_through_to_vllm(client: openai.OpenAI, openai_backend: Backend) -> None:
    response = client.responses.create(model="llama-gpu", input="hi")
    assert response.id == "resp_stub" and response.output_text.endswith("You said: hi")
    assert openai_backend.stats()["last_responses_body"]["model"] == (
        "meta-llama/Llama-3.1-8B-Instruct"
    )
    with client.responses.stream(model="llama-gpu", input="hi") as stream:
        assert stream.get_final_response().output_text.endswith("You said: hi")


def test_responses_cut_stream_is_an_error(client: openai.OpenAI, openai_backend: Backend) -> None:
    openai_backend.control(mode="cut_stream")
    with pytest.raises(openai.APIError, match="broke"):
        list(client.responses.create(model="llama-gpu", input="hi", stream=True))


def test_responses_stream_without_final_event_is_an_error(
    client: openai.OpenAI, openai_backend: Backend
) -> None:
    openai_backend.control(responses_unfinished=True)
    try:
        with pytest.raises(openai.APIError, match="before its final response event"):
            list(client.responses.create(model="llama-gpu", input="hi", stream=True))
    finally:
        openai_backend.control(responses_unfinished=False)


def test_responses_hosted_tools_passed_to_backends_that_serve_them(
    client: openai.OpenAI, openai_backend: Backend
) -> None:
    client.responses.create(model="llama-gpu", input="x", tools=[{"type": "web_search"}])
    assert openai_backend.stats()["last_responses_body"]["tools"] == [{"type": "web_search"}]


def test_previous_response_id_is_a_clear_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client.responses.create(model="llama-cpu", input="and?", previous_response_id="resp_1")
    assert err.value.param == "previous_response_id"
    assert "does not store responses" in err.value.message


def test_responses_hosted_tools_refused(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="only function tools"):
        client.responses.create(model="llama-cpu", input="x", tools=[{"type": "web_search"}])


def test_responses_tokens_counted(client: openai.OpenAI, gateway: Gateway) -> None:
    def tokens() -> float:
        text = httpx.get(gateway.metrics_url).text
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("synapse_completion_tokens_total{") and 'model="llama-cpu"' in line
        )

    before = tokens()
    client.responses.create(model="llama-cpu", input="hi")  # translated
    list(client.responses.create(model="llama-cpu", input="hi", stream=True))
    assert tokens() - before == 12
