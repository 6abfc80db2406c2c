"""HTTP/1.1 framing of the gateway's listeners (issue 17): what a server owes its clients.

Black-box, through raw sockets against a real gateway process: smuggling attempts refused
and the connection closed, pipelining and keep-alive, `Expect: 100-continue`, HEAD, chunked
in both directions, half-closed sockets, peers that stop mid-message, huge heads.

A request smuggled behind a refused one is a chat completion with its own X-Request-ID:
had the gateway parsed it, that id would be in the stub backend's arrival `order` and in the
gateway's request log. Each check sends a probe of the same shape afterwards, so the
observation is shown to work in the same test.

Answers are read by h11 (tests/gateway/h1.py), a strict parser of its own.
"""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterator

import httpx
import orjson
import pytest

from tests.conftest import MASTER_KEY, Backend, Gateway, impatient_gateway, routing_config
from tests.gateway import raw
from tests.gateway.h1 import Reply, Wire

AUTH = f"Authorization: Bearer {MASTER_KEY}".encode()
MARKER = b"X-Marker: do-not-echo-7f3a"  # in every refused request: never in an answer


@pytest.fixture(scope="module")
def gw(
    openai_backend: Backend, ollama_backend: Backend, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    gateway = impatient_gateway(
        openai_backend, ollama_backend, tmp_path_factory.mktemp("framing"), 1
    )
    yield gateway
    gateway.stop()


def head(request_line: bytes, *lines: bytes) -> bytes:
    """A request head, CRLF everywhere, with Host, the key and the marker."""
    return b"\r\n".join([request_line, b"Host: x", AUTH, MARKER, *lines]) + b"\r\n\r\n"


def chat_body(text: str, *, stream: bool = False) -> bytes:
    messages = [{"role": "user", "content": text}]
    return orjson.dumps({"model": "llama-gpu", "messages": messages, "stream": stream})


def chat(request_id: str, *, stream: bool = False, extra: bytes = b"") -> bytes:
    """A whole chat completion request (keep-alive) tagged with `request_id`."""
    body = chat_body(request_id, stream=stream)
    lines = [b"X-Request-ID: " + request_id.encode(), b"Content-Type: application/json"]
    lines += [f"Content-Length: {len(body)}".encode()] + ([extra] if extra else [])
    return head(b"POST /v1/chat/completions HTTP/1.1", *lines) + body


def log_ids(gateway: Gateway) -> set[str]:
    return {line["request_id"] for line in raw.request_lines(gateway.log)}


def assert_never_served(gateway: Gateway, backend: Backend, smuggled: str) -> None:
    """`smuggled` reached neither the backend nor the log, while a probe sent now does."""
    time.sleep(0.2)  # room for a wrongly parsed request to get going
    probe = uuid.uuid4().hex
    with Wire(gateway.port) as wire:
        wire.send(chat(probe))
        assert wire.reply().status == 200
    order = backend.stats()["order"]
    assert probe in order and smuggled not in order
    deadline = time.monotonic() + 5
    while probe not in log_ids(gateway) and time.monotonic() < deadline:
        time.sleep(0.02)
    ids = log_ids(gateway)
    assert probe in ids and smuggled not in ids


def assert_framing_error(reply: Reply, statuses: tuple[int, ...]) -> None:
    """A JSON error in OpenAI's shape, quoting nothing of the request, and `close`."""
    assert reply.status in statuses, (reply.status, reply.body[:300])
    assert reply.complete
    assert (reply.header("content-type") or "").startswith("application/json")
    error = reply.json()["error"]
    assert isinstance(error["message"], str) and isinstance(error["type"], str), error
    for secret in (MASTER_KEY.encode(), b"do-not-echo", b"X-Request-ID"):
        assert secret not in reply.body
    assert reply.closes, reply.headers


def refused(
    gateway: Gateway, backend: Backend, bad: bytes, statuses: tuple[int, ...], port: int = 0
) -> Reply:
    """Send `bad` with a chat request behind it in one write: the answer is a framing error,
    the server closes, the chat is never served and the refusal has its log line."""
    smuggled = uuid.uuid4().hex
    before = len(raw.request_lines(gateway.log))
    with Wire(port or gateway.port) as wire:
        wire.send(bad + chat(smuggled))
        reply = wire.reply()
        assert_framing_error(reply, statuses)
        assert wire.closed(), wire.pending[:300]
    line = raw.wait_for_lines(gateway, before + 1)[before]
    assert line["status"] == reply.status, line
    assert_never_served(gateway, backend, smuggled)
    return reply


POST = b"POST /v1/embeddings HTTP/1.1"
CHUNKED = b"Transfer-Encoding: chunked"

SMUGGLING = {
    "content-length and transfer-encoding": head(POST, b"Content-Length: 5", CHUNKED)
    + b"0\r\n\r\n",
    "transfer-encoding and content-length": head(POST, CHUNKED, b"Content-Length: 5")
    + b"0\r\n\r\n",
    "two equal content-lengths": head(POST, b"Content-Length: 0", b"Content-Length: 0"),
    # one length reads the chat behind as the next request, the other as this one's body
    "two different content-lengths": head(
        POST, b"Content-Length: 0", b"Content-Length: %d" % len(chat(uuid.uuid4().hex))
    ),
    "invalid chunk size": head(POST, CHUNKED) + b"zz\r\nabc\r\n0\r\n\r\n",
    "0x-prefixed chunk size": head(POST, CHUNKED) + b"0x0\r\n\r\n",  # Python's int(s, 16): 0
    "chunk size overflow": head(POST, CHUNKED) + b"10000000000000000\r\n\r\n",  # 2**64: 0
    "no CRLF after chunk data": head(POST, CHUNKED) + b"3\r\nabcXX0\r\n\r\n",
    "obs-fold": head(POST, b"Content-Length: 0", b"X-Folded: a", b" b"),
    "bare LF line endings": POST + b"\nHost: x\n" + MARKER + b"\nContent-Length: 0\n\n",
    "one header line ending in bare LF": POST + b"\r\nHost: x\r\nX-A: b\nContent-Length: 0\r\n\r\n",
    "space before colon": head(POST, b"Content-Length: 0", b"Transfer-Encoding : chunked"),
    "NUL in a header value": head(POST, b"Content-Length: 0", b"X-A: a\x00b"),
    "SOH in a header value": head(POST, b"Content-Length: 0", b"X-A: a\x01b"),
    "ESC in a header value": head(POST, b"Content-Length: 0", b"X-A: a\x1bb"),
    "DEL in a header value": head(POST, b"Content-Length: 0", b"X-A: a\x7fb"),
    "negative content-length": head(POST, b"Content-Length: -1"),
    "plus-signed content-length": head(POST, b"Content-Length: +0"),
}


@pytest.mark.parametrize("bad", SMUGGLING.values(), ids=SMUGGLING.keys())
def test_smuggling_attempt_is_a_400_and_nothing_after_it_is_read(
    gw: Gateway, openai_backend: Backend, bad: bytes
) -> None:
    refused(gw, openai_backend, bad, (400,))


def test_smuggling_is_refused_on_the_keyless_ollama_port_too(
    gw: Gateway, openai_backend: Backend
) -> None:
    bad = head(b"POST /api/chat HTTP/1.1", b"Content-Length: 0", CHUNKED) + b"0\r\n\r\n"
    refused(gw, openai_backend, bad, (400,), port=gw.ollama_port)


def test_a_transfer_coding_other_than_chunked_is_501(gw: Gateway, openai_backend: Backend) -> None:
    refused(
        gw, openai_backend, head(POST, b"Transfer-Encoding: gzip, chunked") + b"0\r\n\r\n", (501,)
    )


@pytest.mark.parametrize("coding", [b"gzip", b"chunked, gzip"])
def test_a_body_of_unknowable_length_is_refused(
    gw: Gateway, openai_backend: Backend, coding: bytes
) -> None:
    """chunked not last: RFC 9112 §6.3 says 400, the brief's rule (not plain chunked) 501."""
    refused(
        gw, openai_backend, head(POST, b"Transfer-Encoding: " + coding) + b"0\r\n\r\n", (400, 501)
    )


VERSIONS = {
    "HTTP/0.9 request line": b"GET /v1/models\r\n\r\n",
    "HTTP/0.9": head(b"GET /v1/models HTTP/0.9"),
    "HTTP/1.2": head(b"GET /v1/models HTTP/1.2"),
    "HTTP/2.0": head(b"GET /v1/models HTTP/2.0"),
    "HTTP/3.0": head(b"GET /v1/models HTTP/3.0"),
}


@pytest.mark.parametrize("bad", VERSIONS.values(), ids=VERSIONS.keys())
def test_a_version_other_than_1_0_or_1_1_is_505(
    gw: Gateway, openai_backend: Backend, bad: bytes
) -> None:
    refused(gw, openai_backend, bad, (505,))


def test_the_http2_preface_is_refused(gw: Gateway, openai_backend: Backend) -> None:
    refused(gw, openai_backend, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", (400, 505))


# -- pipelining and keep-alive ------------------------------------------------------------


def test_pipelined_requests_are_answered_in_order_each_whole(
    gw: Gateway, openai_backend: Backend
) -> None:
    ids = [uuid.uuid4().hex for _ in range(4)]
    embed = orjson.dumps({"model": "embed-openai", "input": "pipelined " + ids[1]})
    writes = [
        head(b"GET /v1/models HTTP/1.1", b"X-Request-ID: " + ids[0].encode()),
        head(POST, b"X-Request-ID: " + ids[1].encode(), f"Content-Length: {len(embed)}".encode())
        + embed,
        head(b"GET /health/liveliness HTTP/1.1"),
        chat(ids[2], stream=True),
        head(b"GET /v1/models HTTP/1.1", b"X-Request-ID: " + ids[3].encode()),
    ]
    with Wire(gw.port) as wire:
        wire.send(b"".join(writes))
        models, embedding, live, stream, again = [wire.reply() for _ in writes]
    for reply in (models, embedding, live, stream, again):
        assert reply.status == 200 and reply.complete and not reply.closes, reply
    assert models.json()["object"] == "list" and again.body == models.body
    assert len(embedding.json()["data"][0]["embedding"]) == 8
    assert stream.header("transfer-encoding") == "chunked"
    assert stream.body.endswith(b"data: [DONE]\n\n")
    echoed = [r.header("x-request-id") for r in (models, embedding, stream, again)]
    assert echoed == [ids[0], ids[1], ids[2], ids[3]]


def test_a_keep_alive_connection_serves_many_requests(gw: Gateway) -> None:
    with Wire(gw.port) as wire:
        for n in range(40):
            request_id = uuid.uuid4().hex
            if n % 2:
                wire.send(chat(request_id))
            else:
                wire.send(head(b"GET /v1/models HTTP/1.1", b"X-Request-ID: " + request_id.encode()))
            reply = wire.reply()
            assert reply.status == 200 and not reply.closes, (n, reply)
            assert reply.header("x-request-id") == request_id


def test_connection_close_is_honoured(gw: Gateway) -> None:
    with Wire(gw.port) as wire:
        wire.send(head(b"GET /v1/models HTTP/1.1", b"Connection: close"))
        reply = wire.reply()
        assert reply.status == 200 and reply.closes
        assert wire.closed()


def test_http_1_0_without_keep_alive_is_closed_after_the_answer(gw: Gateway) -> None:
    with Wire(gw.port) as wire:
        wire.send(head(b"GET /v1/models HTTP/1.0"))
        reply = wire.reply()
        assert reply.status == 200 and reply.json()["object"] == "list"
        assert wire.closed()


def test_a_stream_to_an_http_1_0_client_is_close_delimited(gw: Gateway) -> None:
    body = chat_body("one-oh", stream=True)
    request = head(b"POST /v1/chat/completions HTTP/1.0", f"Content-Length: {len(body)}".encode())
    with Wire(gw.port) as wire:
        wire.send(request + body)
        reply = wire.reply()
        assert reply.status == 200 and reply.complete
        assert reply.header("transfer-encoding") is None
        assert reply.header("content-length") is None
        assert reply.body.startswith(b"data: {") and reply.body.endswith(b"data: [DONE]\n\n")
        assert wire.eof


def test_empty_lines_that_begin_no_request_still_time_out(gw: Gateway) -> None:
    """Found by the fuzz test: CRLFs before a request line are skipped by the parser, so no
    request begins; the connection must still end (header_read_timeout is 1 s here)."""
    with Wire(gw.port) as wire:
        wire.send(b"\r\n\r\n")
        assert wire.closed() or wire.reply().status == 408


@pytest.fixture
def short_keepalive(make_gateway, openai_backend: Backend, ollama_backend: Backend) -> Gateway:
    return make_gateway(routing_config(openai_backend, ollama_backend, keepalive_timeout=0.5))


def test_an_idle_connection_is_closed_after_keepalive_timeout(short_keepalive: Gateway) -> None:
    with Wire(short_keepalive.port) as used, Wire(short_keepalive.port) as never_used:
        used.send(head(b"GET /v1/models HTTP/1.1"))
        assert used.reply().status == 200
        assert used.closed()  # 0.5 s idle; the socket would wait 15 s
        assert never_used.closed()


def test_keepalive_timeout_never_cuts_an_answer_in_progress(
    short_keepalive: Gateway, openai_backend: Backend
) -> None:
    """A backend slower than the idle timeout, and a stream longer than it, both whole."""
    with Wire(short_keepalive.port) as wire:
        openai_backend.control(mode="slow", delay=1.0)
        wire.send(chat(uuid.uuid4().hex))
        assert wire.reply().status == 200
        openai_backend.control(mode="ok", chunk_delay=0.15)
        wire.send(chat(uuid.uuid4().hex, stream=True))
        stream = wire.reply()
        assert stream.complete and stream.body.endswith(b"data: [DONE]\n\n")


# -- Expect: 100-continue -----------------------------------------------------------------


EXPECT = b"Expect: 100-continue"


def interim_head(wire: Wire) -> bytes:
    """The next answer head as raw bytes (for a 100 that h11 would wait past)."""
    deadline = time.monotonic() + wire.timeout
    while b"\r\n\r\n" not in wire.pending and not wire.eof and time.monotonic() < deadline:
        wire.pending += wire.recv_some()
    answer, _, wire.pending = wire.pending.partition(b"\r\n\r\n")
    return answer


def test_100_continue_comes_before_the_body_is_sent(gw: Gateway) -> None:
    request_id = uuid.uuid4().hex
    body = chat_body(request_id)
    with Wire(gw.port) as wire:
        wire.send(
            head(
                b"POST /v1/chat/completions HTTP/1.1",
                EXPECT,
                f"Content-Length: {len(body)}".encode(),
            )
        )
        assert interim_head(wire).startswith(b"HTTP/1.1 100 ")
        wire.send(body)
        reply = wire.reply()
    assert reply.status == 200 and request_id in reply.json()["choices"][0]["message"]["content"]


@pytest.mark.parametrize(
    ("lines", "status"),
    [
        ([b"Content-Length: 1000"], 401),  # no key
        ([AUTH, b"Content-Length: 1000000000"], 413),  # over max_body_bytes
    ],
    ids=["401 missing key", "413 over max_body_bytes"],
)
def test_a_request_refused_before_its_body_gets_no_100_and_is_closed(
    gw: Gateway, openai_backend: Backend, lines: list[bytes], status: int
) -> None:
    smuggled = uuid.uuid4().hex
    request = b"\r\n".join([b"POST /v1/chat/completions HTTP/1.1", b"Host: x", EXPECT, *lines])
    with Wire(gw.port) as wire:
        wire.send(request + b"\r\n\r\n")
        reply = wire.reply()
        assert reply.informational == [] and reply.status == status, reply
        assert reply.json()["error"]["message"] and reply.closes
        wire.send(chat(smuggled))  # the client sends its body anyway: never a request
        assert wire.closed()
    assert_never_served(gw, openai_backend, smuggled)


# -- HEAD ---------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [b"/", b"/v1/models", b"/health/liveliness"])
def test_head_answers_like_get_without_a_body(gw: Gateway, path: bytes) -> None:
    with Wire(gw.port) as wire:
        wire.send(head(b"GET " + path + b" HTTP/1.1"))
        got = wire.reply()
        wire.send(head(b"HEAD " + path + b" HTTP/1.1") + head(b"GET /v1/models HTTP/1.1"))
        headed = wire.reply("HEAD")
        after = wire.reply()  # would fail to parse had the HEAD answer carried body bytes
    assert got.status == 200 and got.body
    assert headed.status == got.status and headed.body == b""
    assert headed.header("content-length") == got.header("content-length") is not None
    assert after.status == 200 and after.json()["object"] == "list"


@pytest.mark.parametrize("path", [b"/health/liveliness", b"/health/readiness", b"/v1/models"])
def test_a_wrong_method_is_a_json_405(gw: Gateway, path: bytes) -> None:
    """Found by the fuzz test: the probes' paths skip the middleware that shapes errors."""
    with Wire(gw.port) as wire:
        wire.send(head(b"POST " + path + b" HTTP/1.1", b"Content-Length: 0"))
        reply = wire.reply()
    assert reply.status == 405 and isinstance(reply.json()["error"]["message"], str), reply


# -- chunked in both directions -----------------------------------------------------------


def chunked(body: bytes, size: int, extension: bytes = b"") -> bytes:
    parts = [body[i : i + size] for i in range(0, len(body), size)]
    return b"".join(b"%x%s\r\n%s\r\n" % (len(p), extension, p) for p in parts)


CHUNKINGS = {
    "one chunk": lambda b: chunked(b, len(b)) + b"0\r\n\r\n",
    "one-byte chunks": lambda b: chunked(b, 1) + b"0\r\n\r\n",
    "chunk extensions": lambda b: chunked(b, 7, b';name="v a";x') + b"0;end=1\r\n\r\n",
    "a trailer field": lambda b: chunked(b, 16) + b"0\r\nX-Checksum: 1\r\n\r\n",
}


@pytest.mark.parametrize("framing", CHUNKINGS.values(), ids=CHUNKINGS.keys())
def test_a_chunked_request_body_is_read_whole(gw: Gateway, framing) -> None:
    request_id = uuid.uuid4().hex
    request = head(
        b"POST /v1/chat/completions HTTP/1.1", CHUNKED, b"Content-Type: application/json"
    )
    with Wire(gw.port) as wire:
        wire.send(request + framing(chat_body("chunked " + request_id)))
        reply = wire.reply()
        assert reply.status == 200, reply.body[:300]
        content = reply.json()["choices"][0]["message"]["content"]
        assert content.endswith("You said: chunked " + request_id)
        wire.send(head(b"GET /v1/models HTTP/1.1"))  # the terminator was consumed, no more
        assert wire.reply().status == 200


@pytest.mark.parametrize("listener", ["openai", "ollama"])
def test_a_stream_is_chunked_with_its_terminator(gw: Gateway, listener: str) -> None:
    if listener == "openai":
        port, request, last = gw.port, chat(uuid.uuid4().hex, stream=True), b"data: [DONE]\n\n"
    else:
        body = orjson.dumps({"model": "llama-cpu", "messages": [{"role": "user", "content": "x"}]})
        lines = [f"Content-Length: {len(body)}".encode()]
        port, request, last = gw.ollama_port, head(b"POST /api/chat HTTP/1.1", *lines) + body, b""
    with Wire(port) as wire:
        wire.send(request)
        stream = wire.reply()
        assert stream.status == 200 and stream.header("transfer-encoding") == "chunked"
        assert stream.complete and stream.body.endswith(last or b"\n")  # h11 saw 0\r\n\r\n
        if listener == "ollama":
            assert orjson.loads(stream.body.splitlines()[-1])["done"] is True
        wire.send(head(b"GET /health/liveliness HTTP/1.1"))
        assert wire.reply().status == 200


@pytest.mark.parametrize("listener", ["openai", "ollama"])
def test_a_stream_broken_after_its_first_byte_ends_without_the_terminator(
    make_gateway, openai_backend: Backend, ollama_backend: Backend, listener: str
) -> None:
    """The backend dies mid-stream: an error in the stream's own framing (SSE event, NDJSON
    line), then the connection closes with no `0\\r\\n\\r\\n`: the client sees the answer
    incomplete, never a clean end."""
    if listener == "openai":
        gateway = make_gateway(routing_config(openai_backend, None))
        openai_backend.control(mode="cut_stream")
        port, request, separator = gateway.port, chat(uuid.uuid4().hex, stream=True), b"\n\n"
    else:
        gateway = make_gateway(routing_config(None, ollama_backend))
        ollama_backend.control(mode="cut_stream")
        body = orjson.dumps({"model": "llama-cpu", "messages": [{"role": "user", "content": "x"}]})
        request = head(b"POST /api/chat HTTP/1.1", f"Content-Length: {len(body)}".encode()) + body
        port, separator = gateway.ollama_port, b"\n"
    with Wire(port) as wire:
        wire.send(request)
        stream = wire.reply()
        assert stream.status == 200 and stream.header("transfer-encoding") == "chunked"
        assert not stream.complete and wire.eof, stream.body[-300:]
    events = [e.removeprefix(b"data: ") for e in stream.body.split(separator) if e]
    assert b'"Hello"' in stream.body and b"[DONE]" not in stream.body
    assert b'"done":true' not in stream.body
    assert "error" in orjson.loads(events[-1])


# -- half-closed sockets and peers that stop mid-message ----------------------------------


def test_a_half_closed_client_is_gone_and_its_backend_request_cancelled(
    gw: Gateway, openai_backend: Backend
) -> None:
    """A FIN reads the same whether the client will still read or not; as nginx and Go do,
    it means the client left, so no backend keeps generating for nobody (a design choice:
    no real OpenAI or Ollama client half-closes)."""
    request_id = uuid.uuid4().hex
    before = len(raw.request_lines(gw.log))
    openai_backend.control(mode="slow", delay=3.0)
    try:
        with Wire(gw.port) as wire:
            wire.send(chat(request_id))
            time.sleep(0.2)  # the request is with the backend
            wire.sock.shutdown(socket.SHUT_WR)
            assert wire.closed()  # no answer: the handler was cancelled
        line = raw.wait_for_lines(gw, before + 1)[before]
        assert line["request_id"] == request_id and line["status"] == 499, line  # not its 200
    finally:
        openai_backend.control(mode="ok")


def test_a_client_gone_mid_body_is_logged_and_the_gateway_stays_healthy(gw: Gateway) -> None:
    before = len(raw.request_lines(gw.log))
    body = chat_body("x" * 2000)
    with Wire(gw.port) as wire:
        wire.send(
            head(b"POST /v1/chat/completions HTTP/1.1", f"Content-Length: {len(body)}".encode())
            + body[:100]
        )
        time.sleep(0.1)
    line = raw.wait_for_lines(gw, before + 1)[before]
    assert line["path"] == "/v1/chat/completions" and 400 <= line["status"] < 500, line
    with Wire(gw.port) as wire:
        wire.send(chat(uuid.uuid4().hex))
        assert wire.reply().status == 200
    assert "Traceback" not in gw.log


def test_a_body_that_stops_arriving_is_408_and_the_rest_never_read(
    gw: Gateway, openai_backend: Backend
) -> None:
    smuggled = chat(uuid.uuid4().hex)
    start = b'{"model": "llama-gpu", "messages": ['
    request = head(
        b"POST /v1/chat/completions HTTP/1.1",
        f"Content-Length: {len(start) + len(smuggled)}".encode(),
    )
    with Wire(gw.port) as wire:
        wire.send(request + start)
        reply = wire.reply()  # body_read_timeout is 1 s here
        assert_framing_error(reply, (408,))
        wire.send(smuggled)
        assert wire.closed()
    assert_never_served(gw, openai_backend, smuggled.split(b"X-Request-ID: ")[1][:32].decode())


def test_a_backend_closing_mid_body_is_a_502_in_the_callers_protocol(
    make_gateway, openai_backend: Backend
) -> None:
    """No fallback: a backend whose answer stops halfway is the caller's 502."""
    cut_body_gateway = make_gateway(routing_config(openai_backend, None))
    openai_backend.control(mode="cut_body")
    with Wire(cut_body_gateway.port) as wire:
        wire.send(chat(uuid.uuid4().hex))
        openai = wire.reply()
    assert openai.status == 502 and isinstance(openai.json()["error"]["message"], str)
    messages = [{"role": "user", "content": "x"}]
    body = orjson.dumps({"model": "llama3.1:8b", "messages": messages, "stream": False})
    request = head(b"POST /api/chat HTTP/1.1", f"Content-Length: {len(body)}".encode())
    with Wire(cut_body_gateway.ollama_port) as wire:
        wire.send(request + body)
        ollama = wire.reply()
    assert ollama.status == 502 and isinstance(ollama.json()["error"], str)


# -- huge heads ---------------------------------------------------------------------------


def test_a_request_target_over_8_kib_is_414(gw: Gateway, openai_backend: Backend) -> None:
    refused(gw, openai_backend, head(b"GET /v1/models?q=" + b"a" * 8192 + b" HTTP/1.1"), (414,))
    with Wire(gw.port) as wire:  # below the limit: served
        wire.send(head(b"GET /v1/models?q=" + b"a" * 7000 + b" HTTP/1.1"))
        assert wire.reply().status == 200


def fields(count: int, size: int) -> list[bytes]:
    return [b"X-F%d: %s" % (n, b"v" * size) for n in range(count)]


def test_more_than_100_header_fields_is_431(gw: Gateway, openai_backend: Backend) -> None:
    # head() adds Host, Authorization and the marker: 3 fields
    refused(gw, openai_backend, head(b"GET /v1/models HTTP/1.1", *fields(98, 8)), (431,))
    with Wire(gw.port) as wire:  # exactly 100: served
        wire.send(head(b"GET /v1/models HTTP/1.1", *fields(97, 8)))
        assert wire.reply().status == 200


def test_a_header_block_over_64_kib_is_431(gw: Gateway, openai_backend: Backend) -> None:
    refused(gw, openai_backend, head(b"GET /v1/models HTTP/1.1", *fields(20, 4000)), (431,))
    with Wire(gw.port) as wire:  # 60 KB: served
        wire.send(head(b"GET /v1/models HTTP/1.1", *fields(15, 4000)))
        assert wire.reply().status == 200


def test_a_one_mib_header_line_is_refused_early_and_never_held(gw: Gateway) -> None:
    """431 once past the limit, without waiting for the line to end (a 408 after
    header_read_timeout would mean it waited); 16 such lines at once leave RSS flat."""
    start = b"GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Big: "
    with Wire(gw.port) as wire:
        wire.send(start + b"a" * (128 << 10))
        assert_framing_error(wire.reply(), (431,))
    before = raw.rss_bytes(gw.proc.pid)
    wires = [Wire(gw.port) for _ in range(16)]
    try:
        for wire in wires:
            wire.send(start + b"a" * (1 << 20) + b"\r\n\r\n")
        statuses = [wire.reply().status for wire in wires]
        grown = raw.rss_bytes(gw.proc.pid) - before
    finally:
        for wire in wires:
            wire.sock.close()
    assert statuses == [431] * 16
    assert grown < 12 << 20, f"RSS grew {grown >> 20} MiB for 16 MiB of header lines"


# -- many connections ---------------------------------------------------------------------


def test_500_idle_connections_do_not_stop_a_request(gw: Gateway) -> None:
    idle = [socket.create_connection(("127.0.0.1", gw.port), timeout=15) for _ in range(500)]
    try:
        answer = httpx.get(
            gw.url + "/v1/models", headers={"Authorization": f"Bearer {MASTER_KEY}"}, timeout=15
        )
        assert answer.status_code == 200
        with Wire(gw.port) as wire:
            wire.send(chat(uuid.uuid4().hex, stream=True))
            assert wire.reply().complete
    finally:
        for sock in idle:
            sock.close()
    assert gw.proc.poll() is None
