"""The Ollama surface through the official `ollama` client, on the keyless Ollama listener."""

from __future__ import annotations

import httpx
import ollama
import pytest

from tests.conftest import MASTER_KEY, Gateway


@pytest.fixture
def client(gateway: Gateway) -> ollama.Client:
    return ollama.Client(host=gateway.ollama_url)


def test_root_says_ollama_is_running(gateway: Gateway) -> None:
    assert httpx.get(gateway.ollama_url + "/").text == "Ollama is running"
    assert httpx.head(gateway.ollama_url + "/").status_code == 200


def test_embed_batch(client: ollama.Client) -> None:
    answer = client.embed(model="mxbai-embed-large", input=["alpha", "beta"])
    assert len(answer.embeddings) == 2 and len(answer.embeddings[0]) == 8
    assert answer.embeddings[0] != answer.embeddings[1]


def test_embeddings_legacy_and_latest_tag(client: ollama.Client) -> None:
    plain = client.embeddings(model="mxbai-embed-large", prompt="alpha")
    tagged = client.embeddings(model="mxbai-embed-large:latest", prompt="alpha")
    assert plain.embedding == tagged.embedding and len(plain.embedding) == 8


def test_curl_shaped_consumer_request(gateway: Gateway) -> None:
    """Exactly what ai-memory-system's indexer sends today."""
    response = httpx.post(
        gateway.ollama_url + "/api/embeddings",
        content=b'{"model":"mxbai-embed-large","prompt":"test"}',
    )
    assert response.status_code == 200
    assert list(response.json()) == ["embedding"] and len(response.json()["embedding"]) == 8


def test_chat_native_non_stream_and_stream(client: ollama.Client) -> None:
    answer = client.chat(
        model="llama-cpu", messages=[{"role": "user", "content": "hi"}], stream=False
    )
    assert answer.message.content == "Hello from the stub backend." and answer.done
    parts = list(
        client.chat(model="llama-cpu", messages=[{"role": "user", "content": "hi"}], stream=True)
    )
    assert parts[-1].done is True and parts[-1].eval_count == 6
    assert "".join(p.message.content for p in parts) == "Hello from the stub backend."


def test_chat_translated_to_openai_backend(client: ollama.Client) -> None:
    answer = client.chat(
        model="llama-gpu",
        messages=[{"role": "user", "content": "hi"}],
        stream=False,
        options={"temperature": 0.1, "num_predict": 20},
    )
    assert answer.model == "llama-gpu"
    assert answer.message.role == "assistant"
    assert answer.message.content == "Hello from the stub backend. You said: hi"
    assert answer.done and answer.done_reason == "stop"
    assert answer.prompt_eval_count == 7 and answer.eval_count == 6
    assert answer.total_duration and answer.total_duration > 0


def test_chat_translated_stream_ends_with_done(client: ollama.Client) -> None:
    parts = list(
        client.chat(model="llama-gpu", messages=[{"role": "user", "content": "yo"}], stream=True)
    )
    assert [p.done for p in parts] == [False] * 6 + [True]
    assert "".join(p.message.content for p in parts) == "Hello from the stub backend."
    assert parts[-1].eval_count == 6 and parts[-1].prompt_eval_count == 7


def test_alias_as_ollama_clients_spell_it(client: ollama.Client) -> None:
    answer = client.chat(
        model="llama3.1:8b", messages=[{"role": "user", "content": "x"}], stream=False
    )
    assert answer.message.content.endswith("You said: x")  # vLLM stub, via the alias


def test_generate_native_and_translated(client: ollama.Client) -> None:
    native = client.generate(model="llama-cpu", prompt="Why?", stream=False)
    assert native.response == "Hello from the stub backend." and native.done
    translated = client.generate(model="llama-gpu", prompt="Why?", system="Be brief")
    assert translated.response.endswith("You said: Why?")
    streamed = list(client.generate(model="llama-gpu", prompt="Why?", stream=True))
    assert (
        streamed[-1].done
        and "".join(p.response for p in streamed) == "Hello from the stub backend."
    )


def test_json_format_maps_to_response_format(client: ollama.Client) -> None:
    answer = client.chat(
        model="llama-gpu",
        messages=[{"role": "user", "content": "json"}],
        format="json",
        stream=False,
    )
    assert answer.message.content == '{"answer": "stub"}'


def test_images_rejected_for_openai_backend(client: ollama.Client) -> None:
    with pytest.raises(ollama.ResponseError) as err:
        client.chat(
            model="llama-gpu",
            stream=False,
            messages=[{"role": "user", "content": "look", "images": ["aGVsbG8="]}],
        )
    assert err.value.status_code == 400 and "images" in err.value.error


def test_list_and_show(client: ollama.Client) -> None:
    names = {m.model for m in client.list().models}
    assert {"mxbai-embed-large:latest", "llama-gpu:latest", "llama3.1:8b"} <= names
    embed = next(m for m in client.list().models if m.model == "mxbai-embed-large:latest")
    assert embed.size == 669615493  # real details from the Ollama backend's /api/tags
    shown = client.show("llama-cpu")
    assert shown.modelfile == "FROM llama3.1:8b"  # native: forwarded to Ollama
    synthesized = client.show("llama-gpu")
    assert synthesized.capabilities == ["completion", "tools"]


def test_ps_and_version(gateway: Gateway, client: ollama.Client) -> None:
    assert {m.model for m in client.ps().models} >= {"llama-gpu:latest"}
    assert "version" in httpx.get(gateway.ollama_url + "/api/version").json()


def test_unknown_model_is_404(client: ollama.Client) -> None:
    with pytest.raises(ollama.ResponseError) as err:
        client.embed(model="nomic-embed-text", input="x")
    assert err.value.status_code == 404 and "nomic-embed-text" in err.value.error


def test_malformed_json_is_400_in_ollama_shape(gateway: Gateway) -> None:
    response = httpx.post(gateway.ollama_url + "/api/chat", content=b"{nope")
    assert response.status_code == 400
    assert isinstance(response.json()["error"], str)


def test_model_management_needs_the_master_key(gateway: Gateway, ollama_backend) -> None:
    refused = httpx.post(gateway.ollama_url + "/api/pull", json={"model": "qwen3:8b"})
    assert refused.status_code == 403 and "master key" in refused.json()["error"]
    client = ollama.Client(
        host=gateway.ollama_url, headers={"Authorization": f"Bearer {MASTER_KEY}"}
    )
    statuses = [p.status for p in client.pull("llama3.1:8b", stream=True)]
    assert statuses[0] == "pulling manifest" and statuses[-1] == "success"
    assert ollama_backend.stats()["pulled"] == "llama3.1:8b"


def test_main_listener_requires_key_for_api_routes(gateway: Gateway) -> None:
    body = {"model": "mxbai-embed-large", "prompt": "x"}
    assert httpx.post(gateway.url + "/api/embeddings", json=body).status_code == 401
    keyed = httpx.post(
        gateway.url + "/api/embeddings",
        json=body,
        headers={"Authorization": f"Bearer {MASTER_KEY}"},
    )
    assert keyed.status_code == 200


def test_ollama_chat_falls_back_to_cpu_when_gpu_fails(
    client: ollama.Client, openai_backend
) -> None:
    openai_backend.control(mode="error500")
    answer = client.chat(
        model="llama3.1:8b", messages=[{"role": "user", "content": "x"}], stream=False
    )
    assert (
        answer.model == "llama3.1:8b" and answer.message.content == "Hello from the stub backend."
    )
