"""Request bodies and slow clients (issue 15: 1, 7, 8, 12): bounded, never unpacked, never 500.

Raw sockets throughout: client libraries will not send a gzip bomb, a trickled head or a
broken chunked body.
"""

from __future__ import annotations

import socket
import zlib
from collections.abc import Iterator

import pytest

from tests.conftest import MASTER_KEY, Backend, Gateway, routing_config
from tests.gateway import raw

AUTH = ("Authorization", f"Bearer {MASTER_KEY}")
JSON = ("Content-Type", "application/json")


@pytest.fixture(scope="module")
def gw(
    openai_backend: Backend, ollama_backend: Backend, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    config = routing_config(
        openai_backend, ollama_backend, header_read_timeout=1, body_read_timeout=1
    )
    config["model_list"].append(
        {
            "model_name": "whisper",
            "litellm_params": {"model": "openai/whisper-1", "api_base": openai_backend.url},
            "model_info": {"mode": "audio_transcription"},
        }
    )
    gateway = Gateway(config, tmp_path_factory.mktemp("bodies"))
    yield gateway
    gateway.stop()


def gzip_bomb(unpacked: int) -> bytes:
    """`unpacked` zero bytes, gzip-compressed without holding them in memory."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = bytes(1 << 20)
    packed = [packer.compress(block) for _ in range(unpacked >> 20)]
    return b"".join([*packed, packer.flush()])


def test_gzip_bomb_is_refused_unread_on_the_keyless_port(gw: Gateway) -> None:
    bomb = gzip_bomb(300 << 20)
    assert len(bomb) < 1 << 20
    before = raw.rss_bytes(gw.proc.pid)
    answer = raw.request(
        gw.ollama_port, "POST", "/api/embed", [JSON, ("Content-Encoding", "gzip")], bomb
    )
    assert answer.status == 415
    assert "Content-Encoding" in answer.json()["error"]  # type: ignore[index]
    assert raw.rss_bytes(gw.proc.pid) - before < 64 << 20  # the bomb unpacks to 300 MiB


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br", "zstd", "GZIP , identity"])
def test_any_encoded_body_is_415_in_the_callers_protocol(gw: Gateway, encoding: str) -> None:
    body = b"this is not compressed at all"
    openai = raw.request(
        gw.port, "POST", "/v1/embeddings", [AUTH, JSON, ("Content-Encoding", encoding)], body
    )
    assert openai.status == 415
    assert openai.json()["error"]["code"] == "unsupported_content_encoding"  # type: ignore[index]
    ollama = raw.request(
        gw.ollama_port, "POST", "/api/chat", [JSON, ("Content-Encoding", encoding)], body
    )
    assert ollama.status == 415 and isinstance(ollama.json()["error"], str)  # type: ignore[index]


def test_identity_encoding_is_served(gw: Gateway) -> None:
    body = b'{"model": "mxbai-embed-large", "input": "x"}'
    answer = raw.request(
        gw.ollama_port, "POST", "/api/embed", [JSON, ("Content-Encoding", "identity")], body
    )
    assert answer.status == 200


def test_json_nested_past_what_can_be_re_serialised_is_a_400(gw: Gateway) -> None:
    for depth in (200, 300, 1000):
        nested = b"[" * depth + b"]" * depth
        chat = b'{"model": "llama-gpu", "messages": [{"role": "user", "content": "x"}], "x": '
        answer = raw.request(
            gw.port, "POST", "/v1/chat/completions", [AUTH, JSON], chat + nested + b"}"
        )
        assert answer.status == 400, (depth, answer.body[:200])
        assert "nested deeper than 128" in answer.json()["error"]["message"]  # type: ignore[index]
        body = b'{"model": "llama-cpu", "messages": [], "options": ' + nested + b"}"
        answer = raw.request(gw.ollama_port, "POST", "/api/chat", [JSON], body)
        assert answer.status == 400, (depth, answer.body[:200])


def test_json_nested_within_the_limit_is_served(gw: Gateway) -> None:
    nested = b'{"a": ' * 100 + b"1" + b"}" * 100
    body = b'{"model": "llama-cpu", "messages": [], "format": ' + nested + b"}"
    answer = raw.request(gw.ollama_port, "POST", "/api/chat", [JSON], body)
    assert answer.status != 400 or "nested" not in answer.body.decode()


def test_broken_chunked_body_is_a_400(gw: Gateway) -> None:
    answer = raw.request(
        gw.port,
        "POST",
        "/v1/embeddings",
        [AUTH, JSON, ("Transfer-Encoding", "chunked")],
        b'5\r\n{"mod\r\nzz\r\nxx\r\n0\r\n\r\n',
        content_length=False,
    )
    assert answer.status == 400


def test_a_body_that_stops_arriving_gets_408(gw: Gateway) -> None:
    with socket.create_connection(("127.0.0.1", gw.port), timeout=15) as sock:
        sock.sendall(
            b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {MASTER_KEY}\r\nContent-Length: 100\r\n\r\n".encode()
            + b'{"model": '
        )
        answer = raw.read_answer(sock)  # body_read_timeout is 1 s here; the socket waits 15
    assert answer.status == 408
    assert "not received within 1 s" in answer.json()["error"]["message"]  # type: ignore[index]


def test_a_trickled_request_head_is_cut(gw: Gateway) -> None:
    lines = len(raw.request_lines(gw.log))
    with socket.create_connection(("127.0.0.1", gw.ollama_port), timeout=15) as sock:
        sock.sendall(b"POST /api/chat HTTP/1.1\r\nHost: x\r\n")
        answer = raw.read_answer(sock)  # header_read_timeout is 1 s here; the socket waits 15
        assert answer.status == 408 and answer.headers["Connection"] == "close"
        assert sock.recv(1024) == b""  # closed after the answer
    cut = raw.wait_for_lines(gw, lines + 1)[-1]
    assert cut["status"] == 408 and "request head" in cut["error"]


def test_an_idle_keep_alive_connection_is_not_cut_by_the_head_timeout(gw: Gateway) -> None:
    """Head and body in one write, then idle past the 1 s head timeout: still usable."""
    body = b'{"model": "mxbai-embed-large", "input": "x"}'
    post = (
        b"POST /api/embed HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    with socket.create_connection(("127.0.0.1", gw.ollama_port), timeout=15) as sock:
        for _ in range(2):
            sock.sendall(post)
            assert raw.read_answer(sock).status == 200
            with pytest.raises(TimeoutError):  # nothing arrives, the connection stays open
                sock.settimeout(2.5)
                sock.recv(1)
            sock.settimeout(15)


def multipart(parts: list[tuple[str, bytes, str]], boundary: str = "B0UNDARY") -> bytes:
    """`parts`: (name, value, extra header lines)."""
    out = b""
    for name, value, extra in parts:
        out += f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"'.encode()
        if name == "file":
            out += b'; filename="a.wav"'
        out += f"\r\n{extra}\r\n\r\n".encode() if extra else b"\r\n\r\n"
        out += value + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


FORM = ("Content-Type", "multipart/form-data; boundary=B0UNDARY")


def test_multipart_is_served(gw: Gateway) -> None:
    body = multipart([("model", b"whisper", ""), ("file", b"RIFF0000WAVE", "")])
    answer = raw.request(gw.port, "POST", "/v1/audio/transcriptions", [AUTH, FORM], body)
    assert answer.status == 200, answer.body


def test_multipart_text_field_is_refused_while_it_arrives(gw: Gateway) -> None:
    """The field is never finished: an answer proves the check ran while reading."""
    start = b'--B0UNDARY\r\nContent-Disposition: form-data; name="prompt"\r\n\r\n'
    chunk = start + b"x" * (1 << 20)
    with socket.create_connection(("127.0.0.1", gw.port), timeout=15) as sock:
        sock.sendall(
            b"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            + f"Authorization: Bearer {MASTER_KEY}\r\n{FORM[0]}: {FORM[1]}\r\n\r\n".encode()
            + f"{len(chunk):x}\r\n".encode()
            + chunk
            + b"\r\n"
        )
        answer = raw.read_answer(sock)
    assert answer.status == 400
    assert "'prompt' is too long" in answer.json()["error"]["message"]  # type: ignore[index]


def test_multipart_part_count_is_capped(gw: Gateway) -> None:
    fields = [(f"f{i}", b"1", "") for i in range(1000)]
    body = multipart([("model", b"whisper", ""), *fields, ("file", b"RIFF", "")])
    answer = raw.request(gw.port, "POST", "/v1/audio/transcriptions", [AUTH, FORM], body)
    assert answer.status == 400
    assert "more than 64 parts" in answer.json()["error"]["message"]  # type: ignore[index]


@pytest.mark.parametrize("header", ["Content-Encoding: gzip", "Content-Transfer-Encoding: base64"])
def test_encoded_multipart_part_is_415(gw: Gateway, header: str) -> None:
    body = multipart([("model", b"whisper", ""), ("file", gzip_bomb(4 << 20), header)])
    answer = raw.request(gw.port, "POST", "/v1/audio/transcriptions", [AUTH, FORM], body)
    assert answer.status == 415
    assert answer.json()["error"]["param"] == "file"  # type: ignore[index]
