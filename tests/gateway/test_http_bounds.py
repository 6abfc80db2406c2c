"""Issue 24's HTTP-layer findings: no request makes the loop (or one connection's memory) do
unbounded work, and the framing follows RFC 9112 where it was loose.

Black-box, through raw sockets against a real gateway process; a concurrent liveness probe
shows a stall (the unfixed stalls are many seconds; the probe is allowed 2).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import orjson
import pytest

from tests.conftest import MASTER_KEY, Backend, Gateway, one_chat_deployment, routing_config
from tests.gateway import raw
from tests.gateway.h1 import Wire
from tests.gateway.liveness import LivenessProbe
from tests.gateway.scripted import Peer, Script, ScriptedBackend, answer

AUTH = f"Authorization: Bearer {MASTER_KEY}".encode()
PROBE_LIMIT = 2.0  # seconds a liveness probe may take while a hostile request is handled
KEY = {"Authorization": f"Bearer {MASTER_KEY}"}


def chat_json(padding: int = 0) -> bytes:
    body = {"model": "llama-gpu", "messages": [{"role": "user", "content": "hi"}]}
    return orjson.dumps(body) + b" " * padding


# --- finding 2: a body of tiny chunks costs O(1) per chunk ----------------------------------


def test_tiny_chunks_do_not_stall_the_loop(gateway: Gateway) -> None:
    body = chat_json(padding=20_000)
    chunked = b"".join(b"1\r\n%b\r\n" % body[i : i + 1] for i in range(len(body)))
    head = b"\r\n".join(
        [
            b"POST /v1/chat/completions HTTP/1.1",
            b"Host: x",
            AUTH,
            b"Content-Type: application/json",
            b"Transfer-Encoding: chunked",
        ]
    )
    with LivenessProbe(gateway) as probe, Wire(gateway.port, timeout=60) as wire:
        time.sleep(0.2)  # the probe is running
        wire.send(head + b"\r\n\r\n" + chunked + b"0\r\n\r\n")
        reply = wire.reply()
        time.sleep(0.2)  # one more probe after the answer
    assert reply.status == 200, reply.body
    assert reply.json()["choices"][0]["message"]["content"]
    assert probe.answered_within(PROBE_LIMIT), (
        f"liveness waited {probe.slowest:.1f}s behind the body"
    )


# --- finding 12: RFC 9112 conformance -------------------------------------------------------


def models_request(*lines: bytes, target: bytes = b"/v1/models", version: bytes = b"1.1") -> bytes:
    request_line = b"GET " + target + b" HTTP/" + version
    return b"\r\n".join([request_line, AUTH, *lines]) + b"\r\n\r\n"


@pytest.mark.parametrize("hosts", [(), (b"Host: x", b"Host: y")], ids=["no-host", "two-hosts"])
def test_host_missing_or_repeated_is_400(gateway: Gateway, hosts: tuple[bytes, ...]) -> None:
    with Wire(gateway.port) as wire:
        wire.send(models_request(*hosts) + models_request(b"Host: x"))
        reply = wire.reply()
        assert reply.status == 400 and reply.closes
        assert "Host" in reply.json()["error"]["message"]
        assert wire.closed()  # the request behind it is never parsed
    with Wire(gateway.port) as wire:  # the same request with one Host is served
        wire.send(models_request(b"Host: x"))
        assert wire.reply().status == 200


def test_http10_without_host_is_served(gateway: Gateway) -> None:
    with Wire(gateway.port) as wire:
        wire.send(models_request(version=b"1.0"))
        assert wire.reply().status == 200


def test_http10_with_transfer_encoding_is_the_last_request(gateway: Gateway) -> None:
    body = chat_json()
    chunked = b"%x\r\n%b\r\n0\r\n\r\n" % (len(body), body)
    first = b"\r\n".join(
        [
            b"POST /v1/chat/completions HTTP/1.0",
            b"Host: x",
            AUTH,
            b"Connection: keep-alive",
            b"Content-Type: application/json",
            b"Transfer-Encoding: chunked",
        ]
    )
    behind = models_request(b"Host: x", b"X-Request-ID: behind-te-10")
    with Wire(gateway.port) as wire:
        wire.send(first + b"\r\n\r\n" + chunked + behind)
        reply = wire.reply()
        assert reply.status == 200 and reply.closes
        assert wire.closed()  # the pipelined request is not answered
    time.sleep(0.2)
    assert "behind-te-10" not in gateway.log


def test_absolute_form_target_is_routed_by_its_path(gateway: Gateway) -> None:
    body = chat_json()
    request = b"\r\n".join(
        [
            b"POST http://gateway.example:4000/v1/chat/completions HTTP/1.1",
            b"Host: gateway.example:4000",
            AUTH,
            b"Content-Type: application/json",
            b"Content-Length: %d" % len(body),
        ]
    )
    with Wire(gateway.port) as wire:
        wire.send(
            request
            + b"\r\n\r\n"
            + body
            + models_request(b"Host: x", target=b"HTTP://x/v1/models?a=1")
        )
        reply = wire.reply()
        assert reply.status == 200, reply.body
        assert reply.json()["object"] == "chat.completion"
        assert wire.reply().json()["object"] == "list"


@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_upgrade_on_a_post_is_ignored_and_the_body_read(gateway: Gateway, framing: str) -> None:
    body = chat_json()
    if framing == "length":
        lines, payload = [b"Content-Length: %d" % len(body)], body
    else:
        lines, payload = (
            [b"Transfer-Encoding: chunked"],
            b"%x\r\n%b\r\n0\r\n\r\n" % (len(body), body),
        )
    request = b"\r\n".join(
        [
            b"POST /v1/chat/completions HTTP/1.1",
            b"Host: x",
            AUTH,
            b"Connection: Upgrade",
            b"Upgrade: websocket",
            b"Content-Type: application/json",
            *lines,
        ]
    )
    with Wire(gateway.port) as wire:
        # twice on one connection, then a plain request: the connection stays in step
        wire.send((request + b"\r\n\r\n" + payload) * 2 + models_request(b"Host: x"))
        for _ in range(2):
            reply = wire.reply()
            assert reply.status == 200, reply.body
            assert reply.json()["object"] == "chat.completion"
            assert not reply.closes
        assert wire.reply().json()["object"] == "list"


def test_upgrade_with_connection_close_is_the_last_request(gateway: Gateway) -> None:
    upgrade = models_request(b"Host: x", b"Connection: Upgrade, close", b"Upgrade: websocket")
    with Wire(gateway.port) as wire:
        wire.send(upgrade + models_request(b"Host: x"))
        reply = wire.reply()
        assert reply.status == 200 and reply.closes
        assert wire.closed()
    assert "Traceback" not in gateway.log and "Fatal error" not in gateway.log


async def _switching_protocols(peer: Peer) -> None:
    while await peer.request():
        await peer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n"
        )


def test_backend_answering_101_is_a_bad_answer(make_gateway) -> None:
    with ScriptedBackend(_switching_protocols) as backend:
        config = routing_config(None, None)
        config["model_list"] = one_chat_deployment(backend)
        gw = make_gateway(config)
        reply = httpx.post(
            gw.url + "/v1/chat/completions", content=chat_json(), headers=KEY, timeout=10
        )
    assert reply.status_code == 502, reply.text
    assert "invalid HTTP answer" in reply.json()["error"]["message"]
    assert "Fatal error" not in gw.log and "Traceback" not in gw.log


# --- finding 11: an upload retried on a stale pooled connection -----------------------------

AUDIO = bytes(range(256)) * 1200  # 300 KiB: more than one write, as a real clip


async def _drops_the_second_request(peer: Peer) -> None:
    """Answers the first request on a connection (keep-alive); on the second it reads the
    head and closes without answering, as a backend closing an idle connection just as the
    gateway reuses it."""
    if not await peer.request():
        return
    text = "file intact" if AUDIO in peer.body else "file damaged"
    await peer.write(answer(orjson.dumps({"text": text})))
    await peer.reader.readuntil(b"\r\n\r\n")


def test_upload_retried_on_a_dropped_connection_is_sent_again_whole(make_gateway) -> None:
    with ScriptedBackend(_drops_the_second_request) as backend:
        config = routing_config(None, None)
        config["model_list"] = [
            {
                "model_name": "whisper",
                "litellm_params": {"model": "openai/whisper", "api_base": backend.url + "/v1"},
                "model_info": {"id": "stt", "mode": "audio_transcription"},
            }
        ]
        gw = make_gateway(config)
        client = openai.OpenAI(base_url=gw.url + "/v1", api_key=MASTER_KEY, max_retries=0)
        texts = [
            client.audio.transcriptions.create(
                model="whisper", file=("clip.wav", io.BytesIO(AUDIO), "audio/wav")
            ).text
            for _ in range(3)
        ]
        connections = backend.connections
    assert texts == ["file intact"] * 3
    assert connections == 3  # the second and third uploads each met a dropped connection
    lines = raw.wait_for_lines(gw, 3)
    assert [line["retries"] for line in lines] == [0, 0, 0]  # resent by the pool, not retried


# --- finding 7: stream_timeout is a deadline, whatever the pace -----------------------------


def streams_forever(pace: float) -> Script:
    """A chat stream that never ends: a 1 KiB delta every `pace` seconds (0: as fast as the
    gateway reads, so the next piece is always there when it asks)."""

    async def script(peer: Peer) -> None:
        if not await peer.request():
            return
        await peer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        delta = {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m"}
        delta["choices"] = [{"index": 0, "delta": {"content": "x" * 1024}, "finish_reason": None}]
        event = b"data: " + orjson.dumps(delta) + b"\n\n"
        frame = b"%x\r\n%b\r\n" % (len(event), event)
        while True:
            await peer.write(frame)
            await asyncio.sleep(pace)

    return script


@pytest.mark.parametrize("pace", [0.1, 0.0], ids=["trickle", "flood"])
def test_stream_timeout_ends_a_stream_that_keeps_flowing(make_gateway, pace: float) -> None:
    with ScriptedBackend(streams_forever(pace)) as backend:
        config = routing_config(None, None)
        config["model_list"] = one_chat_deployment(
            backend, stream_timeout=1, max_parallel_requests=1
        )
        gw = make_gateway(config)
        body = {"model": "llama-gpu", "messages": [{"role": "user", "content": "hi"}]}
        events: list[str] = []
        began = time.monotonic()
        with httpx.stream(
            "POST",
            gw.url + "/v1/chat/completions",
            json={**body, "stream": True},
            headers=KEY,
            timeout=10,
        ) as response:
            try:
                for line in response.iter_lines():
                    if line:
                        events.append(line)
                    if time.monotonic() - began > 8:
                        break  # unfixed: the stream runs on as long as the backend sends
            except httpx.RemoteProtocolError:
                pass  # after the error event the body ends unterminated, visibly incomplete
        took = time.monotonic() - began
        deltas = sum('"content":"x' in e for e in events)
        assert took < 5 and deltas > 2, (took, deltas)  # the deadline is 1 s
        assert events[-1].startswith("data: ") and "total deadline" in events[-1], events[-1][:200]
        assert "error" in json.loads(events[-1][6:])
        deadline = time.monotonic() + 5
        while backend.open and time.monotonic() < deadline:
            time.sleep(0.05)
        assert backend.open == 0  # the backend connection is dropped: its slot is free
        with httpx.stream(  # the one slot serves the next caller at once
            "POST",
            gw.url + "/v1/chat/completions",
            json={**body, "stream": True},
            headers=KEY,
            timeout=10,
        ) as again:
            assert again.status_code == 200


# --- write_timeout bounds a client that takes nothing, not one that reads slowly -------------


class SlowWire(Wire):
    """A client reading steadily but slowly: at most 64 KiB per 20 ms (~3 MB/s)."""

    def recv_some(self) -> bytes:
        time.sleep(0.02)
        return super().recv_some()


def embeddings_request(texts: int, *lines: bytes) -> bytes:
    body = orjson.dumps({"model": "embed-openai", "input": [f"t{i}" for i in range(texts)]})
    head = [b"POST /v1/embeddings HTTP/1.1", b"Host: x", AUTH, b"Content-Type: application/json"]
    head += [b"Content-Length: %d" % len(body), *lines]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


def test_a_slow_steady_reader_gets_large_answers_whole(
    make_gateway, openai_backend: Backend
) -> None:
    """Two pipelined ~4 MB answers read at ~3 MB/s with write_timeout 0.5 s: a client that
    keeps taking output is never cut off, neither while the second request waits for the
    first answer to drain nor after the last (Connection: close). Unfixed, the deadline
    covered the whole drain: reset 0.5 s into it."""
    config = routing_config(openai_backend, None, write_timeout=0.5, max_embedding_inputs=20_000)
    gw = make_gateway(config)
    requests = embeddings_request(20_000) + embeddings_request(20_000, b"Connection: close")
    with SlowWire(gw.port, timeout=60) as wire:
        # sent while the answers are read, as a pipelining client does (the gateway reads
        # the second request only once the first answer is on its way)
        sender = threading.Thread(target=wire.send, args=(requests,))
        sender.start()
        first, second = wire.reply("POST"), wire.reply("POST")
        sender.join()
    for reply in (first, second):
        assert reply.status == 200 and reply.complete, (reply.status, len(reply.body))
        assert len(reply.body) > 4_000_000 and len(reply.json()["data"]) == 20_000
    assert second.closes


# --- finding 4: a client that pipelines and does not read -----------------------------------

PIPELINED = 100


@pytest.fixture(scope="module")
def wide_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """A gateway whose /v1/models answer is large (1,500 models, ~200 KiB), so a few unread
    answers are megabytes; write_timeout 1 s."""
    config = routing_config(None, None, write_timeout=1)
    config["model_list"] = [
        {
            "model_name": f"model-{i:04d}-{'x' * 60}",
            "litellm_params": {"model": "openai/x", "api_base": "http://127.0.0.1:9/v1"},
            "model_info": {"id": f"d{i}", "mode": "chat"},
        }
        for i in range(1500)
    ]
    gateway = Gateway(config, tmp_path_factory.mktemp("wide"))
    yield gateway
    gateway.stop()


def kernel_send_buffer_max() -> int:
    """The most a TCP socket's send buffer autotunes to (net.ipv4.tcp_wmem's maximum)."""
    return int(Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()[2])


def test_unread_answers_are_bounded_and_the_connection_aborted(wide_gateway: Gateway) -> None:
    size = len(httpx.get(wide_gateway.url + "/v1/models", headers=KEY).content)
    assert size > 150_000
    tag = uuid.uuid4().hex
    requests = b"".join(
        models_request(b"Host: x", b"X-Request-ID: %s-%d" % (tag.encode(), i))
        for i in range(PIPELINED)
    )
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)  # the client reads nothing
    sock.connect(("127.0.0.1", wide_gateway.port))
    try:
        sock.settimeout(3)
        with contextlib.suppress(TimeoutError, ConnectionError):
            sock.sendall(requests)  # fixed: the gateway stops reading once its output is full
        time.sleep(2)  # past write_timeout (1 s) with answers unsent
        served = sum(tag in line["request_id"] for line in raw.request_lines(wide_gateway.log))
        # what the kernel's send buffer takes, the transport's 64 KiB, the answer in hand
        bound = (kernel_send_buffer_max() + 2 * 64 * 1024) // size + 2
        assert bound < PIPELINED / 2
        assert 0 < served <= bound, served  # unfixed: every request answered, buffered
        received, reset = 0, False
        sock.settimeout(5)
        try:
            while data := sock.recv(1 << 20):
                received += len(data)
        except ConnectionResetError:
            reset = True
        except TimeoutError:
            pass  # unfixed: the answers sent, the connection left open
        assert reset, f"not aborted; {received} bytes received"
        assert received <= bound * size
    finally:
        sock.close()
    assert httpx.get(wide_gateway.url + "/health/liveliness").status_code == 200
