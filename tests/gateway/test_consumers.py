"""Consumers (issue 19): a key per consumer, allow-lists, limits and usage, through the
`openai` and `ollama` clients against a real gateway process and real stub backends."""

from __future__ import annotations

import asyncio
import hashlib
import http.server
import io
import json
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import ollama
import openai
import promql_parser
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import MASTER_KEY, ROOT, Backend, Gateway, routing_config

MEMORY_KEY = "sk-memory-0123456789abcdef"
CHAT_KEY = "sk-chat-0123456789abcdef"
KEYS = {"KEY_MEMORY": MEMORY_KEY}
CHAT = [{"role": "user", "content": "ping"}]


def consumers_config(openai_backend: Backend, ollama_backend: Backend, **settings: Any) -> dict:
    return routing_config(
        openai_backend,
        ollama_backend,
        consumers=[
            {
                "name": "ai-memory-system",
                "key": "os.environ/KEY_MEMORY",
                "models": ["mxbai-embed-large", "llama3.1:8b"],  # a group and an alias
                "priority": "batch",
            },
            {
                "name": "chat-ui",
                "key_sha256": hashlib.sha256(CHAT_KEY.encode()).hexdigest(),
                "models": ["llama-cpu"],
            },
        ],
        ollama_consumer="chat-ui",
        **settings,
    )


@pytest.fixture(scope="module")
def gw(
    openai_backend: Backend, ollama_backend: Backend, tmp_path_factory: pytest.TempPathFactory
) -> Any:
    gateway = Gateway(
        consumers_config(openai_backend, ollama_backend),
        tmp_path_factory.mktemp("consumers"),
        env=KEYS,
    )
    yield gateway
    gateway.stop()


def client(gateway: Gateway, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0)


def samples(gateway: Gateway, name: str, **labels: str) -> float:
    text = httpx.get(gateway.metrics_url).text
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


# -- keys and allow-lists ---------------------------------------------------------------------


def test_consumer_key_reaches_its_models_under_any_of_their_names(gw: Gateway) -> None:
    memory = client(gw, MEMORY_KEY)
    assert len(memory.embeddings.create(model="mxbai-embed-large", input=["a", "b"]).data) == 2
    answer = memory.chat.completions.create(model="llama3.1:8b", messages=CHAT)
    assert answer.choices[0].message.content
    # The alias allows its group: both names reach the same backends.
    assert memory.chat.completions.create(model="llama-gpu", messages=CHAT).choices


def test_model_outside_the_allow_list_is_403_naming_it_openai(gw: Gateway) -> None:
    with pytest.raises(openai.PermissionDeniedError) as err:
        client(gw, MEMORY_KEY).chat.completions.create(model="llama-cpu", messages=CHAT)
    body = err.value.body
    assert isinstance(body, dict) and "'llama-cpu'" in body["message"]
    assert "ai-memory-system" in body["message"] and body["code"] == "model_not_allowed"


def test_model_outside_the_allow_list_is_403_naming_it_ollama(
    gw: Gateway, ollama_backend: Backend
) -> None:
    calls = ollama_backend.stats()["calls"]
    keyed = ollama.Client(host=gw.url, headers={"Authorization": f"Bearer {CHAT_KEY}"})
    with pytest.raises(ollama.ResponseError) as err:
        keyed.embed(model="mxbai-embed-large", input="x")
    assert err.value.status_code == 403 and "'mxbai-embed-large'" in err.value.error
    assert keyed.chat(model="llama-cpu", messages=CHAT).message.content
    # The keyless Ollama port is `ollama_consumer` (chat-ui): same allow-list.
    keyless = ollama.Client(host=gw.ollama_url)
    with pytest.raises(ollama.ResponseError) as err:
        keyless.embed(model="mxbai-embed-large", input="x")
    assert err.value.status_code == 403 and "chat-ui" in err.value.error
    assert keyless.chat(model="llama-cpu", messages=CHAT).message.content
    assert ollama_backend.stats()["calls"] == calls + 2  # the refused ones touched nothing


def test_unknown_key_is_401_and_master_key_does_everything(gw: Gateway) -> None:
    with pytest.raises(openai.AuthenticationError):
        client(gw, "sk-not-a-consumer-key-000").models.list()
    with pytest.raises(openai.AuthenticationError):
        client(gw, hashlib.sha256(CHAT_KEY.encode()).hexdigest()).models.list()  # the hash
    master = client(gw, MASTER_KEY)
    for model in ("llama-cpu", "llama-gpu", "llama3.1:8b"):
        assert master.chat.completions.create(model=model, messages=CHAT).choices
    assert master.embeddings.create(model="mxbai-embed-large", input="x").data
    # Model management stays the operator's.
    pull = httpx.post(
        gw.url + "/api/pull",
        json={"model": "mxbai-embed-large", "stream": False},
        headers={"Authorization": f"Bearer {CHAT_KEY}"},
    )
    assert pull.status_code == 403


def test_usage_is_counted_per_consumer_in_metrics_and_the_log(gw: Gateway) -> None:
    labels = {"model": "llama-gpu", "consumer": "ai-memory-system"}
    before = samples(gw, "synapse_requests_total", status="200", **labels)
    tokens = samples(gw, "synapse_completion_tokens_total", **labels)
    memory = client(gw, MEMORY_KEY)
    memory.chat.completions.create(model="llama-gpu", messages=CHAT)
    with pytest.raises(openai.PermissionDeniedError):
        memory.chat.completions.create(model="llama-cpu", messages=CHAT)
    assert samples(gw, "synapse_requests_total", status="200", **labels) == before + 1
    assert samples(gw, "synapse_completion_tokens_total", **labels) == tokens + 6
    assert samples(gw, "synapse_requests_total", status="403", consumer="ai-memory-system") >= 1
    assert samples(gw, "synapse_request_duration_seconds_count", **labels) >= before + 1
    lines = [json.loads(line) for line in gw.log.splitlines() if line.startswith("{")]
    refused = [r for r in lines if r.get("status") == 403 and r.get("model") == "llama-cpu"]
    assert refused and refused[-1]["consumer"] == "ai-memory-system"


def test_reload_revokes_a_removed_key_at_once(
    openai_backend: Backend, ollama_backend: Backend, make_gateway: Any
) -> None:
    config = consumers_config(openai_backend, ollama_backend)
    gateway = make_gateway(config, env=KEYS)
    chat = client(gateway, CHAT_KEY)
    assert chat.chat.completions.create(model="llama-cpu", messages=CHAT).choices
    config["synapse_settings"]["consumers"].pop()  # chat-ui's key is revoked
    config["synapse_settings"]["ollama_consumer"] = "ai-memory-system"
    gateway.config_path.write_text(yaml.safe_dump(config))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            chat.models.list()
        except openai.AuthenticationError:
            break
        time.sleep(0.1)
    else:
        pytest.fail("the revoked key still works 20 s after the reload")
    with pytest.raises(openai.AuthenticationError):
        chat.chat.completions.create(model="llama-cpu", messages=CHAT)
    assert client(gateway, MEMORY_KEY).embeddings.create(model="mxbai-embed-large", input="x")


# -- limits -----------------------------------------------------------------------------------


def limited(openai_backend: Backend, ollama_backend: Backend, **limits: int) -> dict:
    config = consumers_config(openai_backend, ollama_backend)
    config["synapse_settings"]["consumers"][0].update(limits)
    return config


def test_rpm_refuses_with_429_and_retry_after_before_the_backend(
    openai_backend: Backend, ollama_backend: Backend, make_gateway: Any
) -> None:
    gateway = make_gateway(limited(openai_backend, ollama_backend, rpm=2), env=KEYS)
    memory = client(gateway, MEMORY_KEY)
    for _ in range(2):
        memory.embeddings.create(model="mxbai-embed-large", input="x")
    calls = ollama_backend.stats()["calls"]
    with pytest.raises(openai.RateLimitError) as err:
        memory.embeddings.create(model="mxbai-embed-large", input="x")
    assert 1 <= int(err.value.response.headers["Retry-After"]) <= 60
    assert "ai-memory-system" in err.value.message
    assert ollama_backend.stats()["calls"] == calls
    # Another consumer and the master key are not limited by it.
    client(gateway, MASTER_KEY).embeddings.create(model="mxbai-embed-large", input="x")


def test_max_parallel_refuses_the_request_beyond_it(
    openai_backend: Backend, ollama_backend: Backend, make_gateway: Any
) -> None:
    gateway = make_gateway(limited(openai_backend, ollama_backend, max_parallel=2), env=KEYS)
    openai_backend.control(mode="slow", delay=1.5, max_active=0)

    async def main() -> list[object]:
        memory = openai.AsyncOpenAI(base_url=gateway.url + "/v1", api_key=MEMORY_KEY, max_retries=0)
        calls = [memory.chat.completions.create(model="llama-gpu", messages=CHAT) for _ in range(3)]
        return await asyncio.gather(*calls, return_exceptions=True)

    results = asyncio.run(main())
    refused = [r for r in results if isinstance(r, openai.RateLimitError)]
    assert len(refused) == 1 and "max_parallel" in refused[0].message
    assert sum(1 for r in results if not isinstance(r, Exception)) == 2
    assert openai_backend.stats()["max_active"] <= 2


def test_rpm_holds_for_the_whole_deployment_of_two_gateways(
    openai_backend: Backend, ollama_backend: Backend, tmp_path: Path
) -> None:
    """Each of `replicas` pods enforces its share: 4 rpm over 2 gateways is 2 on each, so a
    consumer whose requests are spread over both is served 4 times in all, never more."""
    config = limited(openai_backend, ollama_backend, rpm=4)
    config["synapse_settings"]["replicas"] = 2
    gateways = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        gateways.append(Gateway(config, tmp_path / name, env=KEYS))
    try:
        served = refused = 0
        for _ in range(4):
            for gateway in gateways:
                try:
                    client(gateway, MEMORY_KEY).embeddings.create(
                        model="mxbai-embed-large", input="x"
                    )
                    served += 1
                except openai.RateLimitError:
                    refused += 1
        assert (served, refused) == (4, 4)
    finally:
        for gateway in gateways:
            gateway.stop()


# -- synapse usage ----------------------------------------------------------------------------


def usage(*args: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-m", "synapse", "usage", "--json", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def row(doc: dict, consumer: str, model: str) -> dict:
    return next(r for r in doc["rows"] if (r["consumer"], r["model"]) == (consumer, model))


class FakePrometheus(http.server.BaseHTTPRequestHandler):
    """Answers `sum by (consumer, model, status) (increase(NAME[W]))` from a gateway's
    /metrics as a Prometheus that began scraping when the gateway started would (the
    increase over the window is then the counter's value). The query must parse as PromQL."""

    metrics_url = ""

    def do_GET(self) -> None:
        query = parse_qs(urlsplit(self.path).query)["query"][0]
        promql_parser.parse(query)
        name = re.fullmatch(
            r"sum by \(consumer, model, status\) \(increase\((\w+)\[1h\]\)\)", query
        )
        assert name is not None, query
        sums: dict[tuple[str, str, str], float] = {}
        for family in text_string_to_metric_families(httpx.get(self.metrics_url).text):
            for s in family.samples:
                if s.name == name[1]:
                    key = tuple(s.labels.get(k, "") for k in ("consumer", "model", "status"))
                    sums[key] = sums.get(key, 0.0) + s.value
        result = [
            {
                "metric": {
                    k: v for k, v in zip(("consumer", "model", "status"), key, strict=True) if v
                },
                "value": [time.time(), repr(v)],
            }
            for key, v in sums.items()
        ]
        body = json.dumps({"status": "success", "data": {"resultType": "vector", "result": result}})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args: object) -> None:
        pass


def test_usage_prints_a_row_per_consumer_and_model_from_metrics_and_prometheus(
    gw: Gateway,
) -> None:
    memory = client(gw, MEMORY_KEY)
    memory.chat.completions.create(model="llama-gpu", messages=CHAT)
    with pytest.raises(openai.PermissionDeniedError):
        memory.chat.completions.create(model="llama-cpu", messages=CHAT)
    client(gw, MASTER_KEY).embeddings.create(model="mxbai-embed-large", input="x")
    direct = usage("--metrics-url", gw.metrics_url)
    chat = row(direct, "ai-memory-system", "llama-gpu")
    assert chat["requests"] >= 1 and chat["completion_tokens"] >= 6 and chat["latency_count"] >= 1
    assert row(direct, "ai-memory-system", "llama-cpu")["errors_4xx"] >= 1
    assert row(direct, "master", "mxbai-embed-large")["requests"] >= 1

    FakePrometheus.metrics_url = gw.metrics_url
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakePrometheus)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        via_prometheus = usage("--prometheus", url, "--window", "1h")
    finally:
        server.shutdown()
        server.server_close()
    assert via_prometheus["rows"] == direct["rows"]


def test_usage_refuses_a_window_that_is_not_a_duration() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "synapse", "usage", "--prometheus", "http://x", "--window", "1h])"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert done.returncode != 0 and "--window: expected a Prometheus duration" in done.stderr


def test_model_lists_show_a_consumer_only_what_it_may_use(gw: Gateway) -> None:
    listed = {m.id for m in client(gw, MEMORY_KEY).models.list()}
    assert listed == {"mxbai-embed-large", "llama-gpu", "llama3.1:8b"}
    tags = {m.model for m in ollama.Client(host=gw.ollama_url).list().models}  # chat-ui
    assert tags == {"llama-cpu:latest"}
    everything = {m.id for m in client(gw, MASTER_KEY).models.list()}
    assert everything == {
        "mxbai-embed-large",
        "llama-cpu",
        "llama-gpu",
        "embed-openai",
        "llama3.1:8b",
    }


def test_audio_bytes_are_counted_per_consumer(
    openai_backend: Backend, ollama_backend: Backend, make_gateway: Any
) -> None:
    config = consumers_config(openai_backend, ollama_backend)
    for name, mode in (("whisper", "audio_transcription"), ("tts", "audio_speech")):
        config["model_list"].append(
            {
                "model_name": name,
                "litellm_params": {"model": f"openai/{name}", "api_base": openai_backend.url},
                "model_info": {"mode": mode},
            }
        )
    config["synapse_settings"]["consumers"][0]["models"] += ["whisper", "tts"]
    gateway = make_gateway(config, env=KEYS)
    memory = client(gateway, MEMORY_KEY)
    memory.audio.transcriptions.create(
        model="whisper", file=("clip.wav", io.BytesIO(b"RIFF" + bytes(996)), "audio/wav")
    )
    spoken = memory.audio.speech.create(model="tts", voice="amy", input="hello").content
    labels = {"consumer": "ai-memory-system"}
    assert (
        samples(gateway, "synapse_audio_bytes_total", model="whisper", direction="in", **labels)
        == 1000
    )
    assert samples(
        gateway, "synapse_audio_bytes_total", model="tts", direction="out", **labels
    ) == len(spoken)
    table = usage("--metrics-url", gateway.metrics_url)
    assert row(table, "ai-memory-system", "whisper")["audio_bytes"] == 1000
