"""Streams on the wire: one status line, errors in the stream's own framing, long lines,
stalled clients cut, and a delivered terminator counted as a success.

Raw sockets read the exact bytes a client receives; the `openai` and `ollama` clients are
the real ones.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import ollama
import openai
import orjson
import pytest

from tests.conftest import MASTER_KEY, Backend, one_chat_deployment, routing_config
from tests.gateway.rawhttp import dechunk, exchange, request_bytes

AUTH = {"Authorization": f"Bearer {MASTER_KEY}"}


def request_lines(gw) -> list[dict[str, Any]]:
    return [json.loads(x) for x in gw.log.splitlines() if '"msg":"request"' in x]


def wait_for(check, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.1)


def ndjson_stream(gw, path: str, body: dict) -> tuple[bytes, list[bytes]]:
    """(raw response, payload lines) of a streamed Ollama request on the keyless port."""
    raw = exchange(gw.ollama_port, request_bytes("POST", path, gw.ollama_port, body))
    _, _, chunked = raw.partition(b"\r\n\r\n")
    return raw, dechunk(chunked).splitlines()


def test_frame_of_the_wrong_shape_ends_the_stream_in_ndjson(
    make_gateway, openai_backend: Backend
) -> None:
    """An SSE frame `data: [1, 2]` from a vLLM backend, translated to Ollama NDJSON: the
    started 200 ends with an error line, no `done: true`, and no second status line."""
    gw = make_gateway(routing_config(openai_backend, None))
    openai_backend.control(mode="bad_frames")
    body = {"model": "llama3.1:8b", "messages": [{"role": "user", "content": "hi"}]}
    raw, lines = ndjson_stream(gw, "/api/chat", body)
    assert raw.startswith(b"HTTP/1.1 200 ")
    assert raw.count(b"HTTP/1.1") == 1, raw[-600:]
    last = orjson.loads(lines[-1])
    assert "error" in last and "unexpected shape" in last["error"]
    assert not any(b'"done":true' in line for line in lines)
    wait_for(lambda: any(x["path"] == "/api/chat" for x in request_lines(gw)))
    line = [x for x in request_lines(gw) if x["path"] == "/api/chat"][-1]
    assert line["status"] == 200 and "unexpected shape" in line["stream_error"]
    assert "Traceback" not in gw.log


@pytest.fixture
def ollama_alone() -> Iterator[Backend]:
    backend = Backend("ollama")
    yield backend
    backend.stop()


def test_long_ndjson_line_is_legal(make_gateway, ollama_alone: Backend) -> None:
    """A final Ollama line with a 1.3 MB `context` array reaches the client whole."""
    gw = make_gateway(routing_config(None, ollama_alone))
    ollama_alone.control(mode="long_line", context_len=200_000)
    client = ollama.Client(host=gw.ollama_url)
    chunks = list(
        client.chat(model="llama-cpu", messages=[{"role": "user", "content": "hi"}], stream=True)
    )
    assert chunks[-1].done and chunks[-1].eval_count == 6
    assert "".join(c.message.content or "" for c in chunks) == "Hello from the stub backend."


def test_line_over_the_limit_ends_the_stream_in_framing(
    make_gateway, ollama_alone: Backend
) -> None:
    """One line over max_response_bytes: an NDJSON error line naming the setting, after
    the started 200, with no second status line."""
    gw = make_gateway(routing_config(None, ollama_alone, max_response_bytes=2 * 1024 * 1024))
    ollama_alone.control(mode="long_line", context_len=400_000)  # about 2.9 MB on one line
    body = {"model": "llama-cpu", "messages": [{"role": "user", "content": "hi"}]}
    raw, lines = ndjson_stream(gw, "/api/chat", body)
    assert raw.startswith(b"HTTP/1.1 200 ") and raw.count(b"HTTP/1.1") == 1
    error = orjson.loads(lines[-1])["error"]
    assert "synapse_settings.max_response_bytes (2097152 bytes)" in error


def stalled_config(backend: Backend) -> dict:
    config = routing_config(None, None, write_timeout=1, queue_size=0)
    config["model_list"] = one_chat_deployment(backend, max_parallel_requests=1)
    return config


def test_client_that_stops_reading_is_cut_and_frees_its_slot(make_gateway) -> None:
    """An endless stream to a client that reads nothing: after write_timeout the client
    is cut, the backend request cancelled, and the only slot serves the next caller."""
    backend = Backend("openai")
    try:
        gw = make_gateway(stalled_config(backend))
        backend.control(mode="endless")
        body = {
            "model": "llama-gpu",
            "stream": True,
            "messages": [{"role": "user", "content": "x"}],
        }
        stalled = socket.socket()
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.connect(("127.0.0.1", gw.port))
        stalled.sendall(request_bytes("POST", "/v1/chat/completions", gw.port, body, AUTH))
        try:
            wait_for(lambda: backend.stats().get("disconnects", 0) >= 1)

            def in_flight() -> int:
                health = httpx.get(gw.url + "/health", headers=AUTH).json()
                return health["healthy_endpoints"][0]["in_flight"]

            wait_for(lambda: in_flight() == 0)
            backend.control(mode="ok")
            answer = httpx.post(
                gw.url + "/v1/chat/completions",
                json={**body, "stream": False},
                headers=AUTH,
                timeout=10,
            )
            assert answer.status_code == 200, answer.text
        finally:
            stalled.close()
        cut = request_lines(gw)[0]
        assert cut["status"] == 499 and "write_timeout" in cut["stream_error"]
        assert "Traceback" not in gw.log
    finally:
        backend.stop()


@pytest.mark.parametrize("runs", [40])
def test_streams_read_to_their_end_are_successes(
    gateway, openai_backend: Backend, runs: int
) -> None:
    """The OpenAI SDK closes right after `data: [DONE]` (here before the backend has ended
    its body): every stream whose terminator was delivered is a 200 in the log and in the
    metrics, never a 499 or an "unhandled error". The Ollama client likewise."""
    openai_backend.control(done_delay=0.05)
    before = len(request_lines(gateway))
    sdk = openai.OpenAI(base_url=gateway.url + "/v1", api_key=MASTER_KEY, max_retries=0)
    chat = {"messages": [{"role": "user", "content": "hi"}], "stream": True}
    for _ in range(runs):
        text = "".join(
            c.choices[0].delta.content or ""
            for c in sdk.chat.completions.create(model="llama-gpu", **chat)
            if c.choices
        )
        assert text.startswith("Hello from the stub backend."), text
    client = ollama.Client(host=gateway.ollama_url)
    for model in ("llama-cpu", "llama3.1:8b"):  # native, and translated from SSE
        for _ in range(runs // 4):
            parts = list(client.chat(model=model, stream=True, **{"messages": chat["messages"]}))
            assert parts[-1].done
    openai_backend.control(done_delay=0)
    expected = runs + 2 * (runs // 4)
    wait_for(lambda: len(request_lines(gateway)) - before >= expected)
    statuses = [x["status"] for x in request_lines(gateway)[before:]]
    assert statuses == [200] * expected
    assert "Traceback" not in gateway.log
    metrics = httpx.get(gateway.metrics_url).text
    assert 'status="499"' not in metrics and 'status="500"' not in metrics
