"""The OpenAI surface through the official `openai` SDK, against real stub backends."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.conftest import MASTER_KEY, Gateway


@pytest.fixture
def client(gateway: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=MASTER_KEY, max_retries=0)


def test_models_lists_groups_and_aliases(client: openai.OpenAI) -> None:
    ids = {m.id for m in client.models.list()}
    assert ids == {"mxbai-embed-large", "llama-cpu", "llama-gpu", "embed-openai", "llama3.1:8b"}


def test_chat_non_streaming_reaches_backend_with_its_model_id(client: openai.OpenAI) -> None:
    answer = client.chat.completions.create(
        model="llama-gpu", messages=[{"role": "user", "content": "ping"}]
    )
    assert answer.choices[0].message.content == "Hello from the stub backend. You said: ping"
    assert answer.model == "meta-llama/Llama-3.1-8B-Instruct"  # rewritten for the backend
    assert answer.usage is not None and answer.usage.completion_tokens == 6


def test_chat_streaming_arrives_chunk_by_chunk(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="llama-gpu", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    deltas = [
        c.choices[0].delta.content for c in stream if c.choices and c.choices[0].delta.content
    ]
    assert deltas == ["Hello", " from", " the", " stub", " backend", "."]


def test_alias_routes_to_its_group(client: openai.OpenAI) -> None:
    answer = client.chat.completions.create(
        model="llama3.1:8b", messages=[{"role": "user", "content": "x"}]
    )
    assert answer.model == "meta-llama/Llama-3.1-8B-Instruct"


def test_chat_on_ollama_deployment_uses_its_openai_layer(client: openai.OpenAI) -> None:
    answer = client.chat.completions.create(
        model="llama-cpu", messages=[{"role": "user", "content": "cpu"}]
    )
    assert answer.model == "llama3.1:8b"
    assert answer.choices[0].message.content.endswith("You said: cpu")


def test_completions(client: openai.OpenAI) -> None:
    answer = client.completions.create(model="llama-gpu", prompt="Once")
    assert answer.choices[0].text.endswith("You said: Once")


@pytest.mark.parametrize("model", ["mxbai-embed-large", "embed-openai"])
def test_embeddings_single_and_batch(client: openai.OpenAI, model: str) -> None:
    one = client.embeddings.create(model=model, input="alpha")  # SDK asks for base64
    batch = client.embeddings.create(model=model, input=["alpha", "beta", "gamma"])
    assert len(one.data) == 1 and len(batch.data) == 3
    assert [d.index for d in batch.data] == [0, 1, 2]
    assert batch.data[0].embedding == pytest.approx(one.data[0].embedding, abs=1e-6)
    assert batch.data[1].embedding != batch.data[0].embedding
    assert len(one.data[0].embedding) == 8


def test_embeddings_float_format_from_ollama(gateway: Gateway) -> None:
    response = httpx.post(
        gateway.url + "/v1/embeddings",
        json={"model": "mxbai-embed-large", "input": "alpha", "encoding_format": "float"},
        headers={"Authorization": f"Bearer {MASTER_KEY}"},
    )
    body = response.json()
    assert response.status_code == 200
    assert body["object"] == "list" and body["model"] == "mxbai-embed-large"
    assert isinstance(body["data"][0]["embedding"][0], float)
    assert body["usage"] == {"prompt_tokens": 1, "total_tokens": 1}


def test_unprefixed_routes_work_like_litellm(gateway: Gateway) -> None:
    response = httpx.post(
        gateway.url + "/chat/completions",
        json={"model": "llama-gpu", "messages": [{"role": "user", "content": "x"}]},
        headers={"Authorization": f"Bearer {MASTER_KEY}"},
    )
    assert response.status_code == 200
    assert response.json()["object"] == "chat.completion"


def test_unknown_model_is_not_found_and_lists_models(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as err:
        client.chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": "x"}])
    message = err.value.body["message"]  # type: ignore[index]
    assert "gpt-9" in message and "llama-gpu" in message


def test_wrong_key_is_rejected(gateway: Gateway) -> None:
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        client.models.list()


def test_missing_key_is_rejected(gateway: Gateway) -> None:
    assert httpx.get(gateway.url + "/v1/models").status_code == 401


def test_malformed_json_is_400_in_openai_shape(gateway: Gateway) -> None:
    response = httpx.post(
        gateway.url + "/v1/chat/completions",
        content=b'{"model": "llama-gpu", "messages": [',
        headers={"Authorization": f"Bearer {MASTER_KEY}", "Content-Type": "application/json"},
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and "not valid JSON" in error["message"]


def test_missing_messages_is_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="llama-gpu", messages=[])
    assert err.value.body["param"] == "messages"  # type: ignore[index]


def test_body_too_large_is_413(make_gateway, openai_backend, ollama_backend) -> None:
    from tests.conftest import routing_config

    gw = make_gateway(routing_config(openai_backend, ollama_backend, max_body_bytes=2048))
    response = httpx.post(
        gw.url + "/v1/chat/completions",
        json={"model": "llama-gpu", "messages": [{"role": "user", "content": "x" * 4096}]},
        headers={"Authorization": f"Bearer {MASTER_KEY}"},
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"


def test_backend_4xx_is_passed_through_without_retry(client: openai.OpenAI, openai_backend) -> None:
    openai_backend.control(mode="error400")
    calls = openai_backend.stats()["calls"]
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(
            model="llama-gpu", messages=[{"role": "user", "content": "x"}]
        )
    assert err.value.body["message"] == "stub rejects this request"  # type: ignore[index]
    assert openai_backend.stats()["calls"] == calls + 1


def test_request_id_is_honoured_and_logged(gateway: Gateway) -> None:
    response = httpx.get(
        gateway.url + "/v1/models",
        headers={"Authorization": f"Bearer {MASTER_KEY}", "X-Request-ID": "trace-42"},
    )
    assert response.headers["X-Request-ID"] == "trace-42"
    import json
    import time

    for _ in range(50):
        lines = [json.loads(x) for x in gateway.log.splitlines() if "trace-42" in x]
        if lines:
            break
        time.sleep(0.05)
    (line,) = lines
    assert line["msg"] == "request" and line["status"] == 200 and line["path"] == "/v1/models"
    assert {"latency_ms", "model", "deployment", "retries", "fallback"} <= set(line)


def test_health_endpoints(gateway: Gateway) -> None:
    assert httpx.get(gateway.url + "/health/liveliness").status_code == 200
    assert httpx.get(gateway.url + "/health/readiness").json() == {"status": "ready"}
    assert httpx.get(gateway.url + "/health").status_code == 401
    health = httpx.get(
        gateway.url + "/health", headers={"Authorization": f"Bearer {MASTER_KEY}"}
    ).json()
    ids = {d["id"] for d in health["healthy_endpoints"]}
    assert ids == {"ollama-embed", "ollama-chat", "vllm-chat", "openai-embed"}
    assert all(d["state"] == "closed" for d in health["healthy_endpoints"])


def test_x_api_key_header_is_accepted(gateway: Gateway) -> None:
    """For callers behind the Kubernetes API proxy, which strips Authorization."""
    assert (
        httpx.get(gateway.url + "/v1/models", headers={"X-Api-Key": MASTER_KEY}).status_code == 200
    )
    assert httpx.get(gateway.url + "/v1/models", headers={"X-Api-Key": "nope"}).status_code == 401


AUTH_HEADERS = {"Authorization": f"Bearer {MASTER_KEY}"}


def test_request_ids_backends_can_take(gateway: Gateway, openai_backend) -> None:
    """A non-UUID caller id is kept for the caller and the log; backends get a UUID."""
    import uuid

    response = httpx.get(gateway.url + "/v1/models", headers=AUTH_HEADERS)
    uuid.UUID(response.headers["X-Request-ID"])  # generated ids are UUIDs
    chat = {"model": "llama-gpu", "messages": [{"role": "user", "content": "x"}]}
    kept = httpx.post(
        gateway.url + "/v1/chat/completions",
        json=chat,
        headers={**AUTH_HEADERS, "X-Request-ID": "my-trace-7"},
    )
    assert kept.headers["X-Request-ID"] == "my-trace-7"
    uuid.UUID(openai_backend.stats()["last_request_id"])
    given = str(uuid.uuid4())
    httpx.post(
        gateway.url + "/v1/chat/completions",
        json=chat,
        headers={**AUTH_HEADERS, "X-Request-ID": given},
    )
    assert openai_backend.stats()["last_request_id"] == given


def test_backend_error_without_json_body_gets_openai_shape(
    gateway: Gateway, openai_backend
) -> None:
    openai_backend.control(mode="error400_empty")
    response = httpx.post(
        gateway.url + "/v1/chat/completions",
        headers=AUTH_HEADERS,
        json={"model": "llama-gpu", "messages": [{"role": "user", "content": "x"}]},
    )
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "vllm-chat: answered 400 with no detail"
