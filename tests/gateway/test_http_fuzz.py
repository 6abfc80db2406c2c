"""Fuzzing the running gateway's HTTP/1.1 framing (issue 17): mutated request heads and
chunk framings over raw sockets.

Valid requests are broken the ways parsers get surprised (bytes flipped, CR, LF, NUL, space
or colon inserted, lines duplicated or dropped, methods, versions, targets and chunk
framings replaced). Whatever arrives, the gateway answers with well-formed HTTP/1.1 (h11
reads it), a JSON error for every 4xx/5xx, never a 500, or closes the connection; it never
hangs past a short deadline, never dies, and serves a normal request right after.

Random on each run (hypothesis prints the failing example); no example database.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass

import orjson
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.conftest import MASTER_KEY, Backend, Gateway, impatient_gateway
from tests.gateway import raw
from tests.gateway.h1 import Wire

AUTH = f"Authorization: Bearer {MASTER_KEY}".encode()
# Each example ends within this: the gateway's head and body timeouts (0.5 s) and margin.
DEADLINE = 5.0


@dataclass(frozen=True)
class Seed:
    listener: str  # "openai" | "ollama"
    method: bytes
    target: bytes
    headers: tuple[bytes, ...]
    body: bytes = b""


def _json(data: object) -> bytes:
    return orjson.dumps(data)


CHAT = _json({"model": "llama-gpu", "messages": [{"role": "user", "content": "fuzz"}]})
OLLAMA_CHAT = _json(
    {"model": "llama-cpu", "messages": [{"role": "user", "content": "x"}], "stream": False}
)
SEEDS = [
    Seed("openai", b"GET", b"/v1/models", (b"Host: x", AUTH)),
    Seed("openai", b"GET", b"/health/liveliness", (b"Host: x",)),
    Seed("openai", b"POST", b"/v1/chat/completions", (b"Host: x", AUTH), CHAT),
    Seed("openai", b"POST", b"/v1/embeddings", (b"Host: x", AUTH), b'{"model": "embed-openai"}'),
    Seed("ollama", b"GET", b"/api/tags", (b"Host: x",)),
    Seed(
        "ollama",
        b"POST",
        b"/api/chat",
        (b"Host: x", b"Content-Type: application/json"),
        OLLAMA_CHAT,
    ),
]

METHODS = [b"GET", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"PATCH", b"TRACE", b"CONNECT"]
ODD_METHODS = [b"get", b"G\x00T", b"", b"POST POST", b"\xffGET", b"GET\t"]
TARGETS = [b"*", b"/", b"//", b"/v1/../v1/models", b"http://x/v1/models", b"/v1/models?%00"]
TARGETS += [b"/%", b"", b"/v1/models#frag", b"/\xff", b"/ /", b"x"]
VERSIONS = [b"HTTP/1.0", b"HTTP/1.2", b"HTTP/2.0", b"HTTP/0.9", b"http/1.1", b"HTTP/11"]
VERSIONS += [b"HTTP/1.10", b"", b"HTTP/1.1 ", b"HTTP/1.1\x00", b"HTTP/1", b"HTTP/-1.1"]
INSERTS = [b"\r", b"\n", b"\r\n", b"\x00", b" ", b":", b"\t", b"\x7f", b"\xff", b"\r\n\r\n"]


def _pick(draw: st.DrawFn, seed_value: bytes, common: list[bytes], size: int) -> bytes:
    """Mostly the seed's value, else a known-odd one, else random bytes."""
    kind = draw(st.sampled_from(["seed", "seed", "seed", "common", "random"]))
    if kind == "seed":
        return seed_value
    if kind == "common":
        return draw(st.sampled_from(common))
    return draw(st.binary(min_size=1, max_size=size))


@st.composite
def chunk_framings(draw: st.DrawFn, body: bytes) -> bytes:
    """`body` in random chunks, with random size spellings, extensions and endings."""
    out = b""
    rest = body
    while rest:
        size = draw(st.integers(min_value=1, max_value=max(1, len(rest))))
        part, rest = rest[:size], rest[size:]
        spelled = draw(
            st.sampled_from(
                [b"%x", b"%X", b"0%x", b"0x%x", b"-%x", b" %x", b"%x ", b"%x\t", b"+%x"]
            )
        ) % len(part)
        ext = draw(st.sampled_from([b"", b";a=b", b';a="b c"', b";", b"; a", b";a=\x00"]))
        end = draw(st.sampled_from([b"\r\n", b"\r\n", b"\r\n", b"\n", b"", b"\r"]))
        out += spelled + ext + b"\r\n" + part + end
    last = draw(st.sampled_from([b"0\r\n\r\n", b"0\r\n\r\n", b"00\r\n\r\n", b"0\r\n", b""]))
    trailer = draw(st.sampled_from([b"", b"", b"X-T: 1\r\n", b"Content-Length: 5\r\n"]))
    if trailer and last.endswith(b"\r\n\r\n"):
        last = last[:-2] + trailer + b"\r\n"
    return out + last


@st.composite
def mutated_requests(draw: st.DrawFn) -> tuple[str, bytes]:
    """(listener, request bytes): a seed request, then mutations on lines and bytes."""
    seed = draw(st.sampled_from(SEEDS))
    method = _pick(draw, seed.method, METHODS + ODD_METHODS, 8)
    target = _pick(draw, seed.target, TARGETS, 40)
    version = _pick(draw, b"HTTP/1.1", VERSIONS, 10)
    lines = [method + b" " + target + b" " + version, *seed.headers]
    body = seed.body
    if body:
        if draw(st.booleans()):
            lines.append(b"Transfer-Encoding: chunked")
            body = draw(chunk_framings(body))
        else:
            lines.append(b"Content-Length: %d" % len(body))
    for _ in range(draw(st.integers(0, 2))):  # whole lines duplicated or dropped
        at = draw(st.integers(0, len(lines) - 1))
        if draw(st.booleans()):
            lines.insert(at, lines[at])
        elif len(lines) > 1:
            del lines[at]
    data = bytearray(b"\r\n".join(lines) + b"\r\n\r\n" + body)
    for _ in range(draw(st.integers(0, 3))):  # bytes flipped, inserted, removed
        if not data:  # every byte deleted already
            break
        at = draw(st.integers(0, len(data) - 1))
        op = draw(st.sampled_from(["flip", "insert", "insert", "delete"]))
        if op == "flip":
            data[at] ^= draw(st.integers(1, 255))
        elif op == "insert":
            data[at:at] = draw(st.sampled_from(INSERTS))
        else:
            del data[at : at + draw(st.integers(1, 8))]
    return seed.listener, bytes(data)


@pytest.fixture(scope="module")
def fuzz_gw(
    openai_backend: Backend, ollama_backend: Backend, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    gateway = impatient_gateway(
        openai_backend, ollama_backend, tmp_path_factory.mktemp("http-fuzz"), 0.5
    )
    yield gateway
    gateway.stop()


def check_answers(wire: Wire, half_closed: bool) -> None:
    """Every answer well-formed and whole, errors in JSON; the server closes when it
    says so, and after answering a client that half-closed."""
    while True:
        try:
            reply = wire.reply()
        except ConnectionError:  # closed without (another) answer: allowed
            event("closed without an answer")
            return
        event(
            f"answered {reply.status}"
        )  # --hypothesis-show-statistics        assert reply.complete, reply
        assert reply.status != 500, reply.body[:300]
        if reply.status >= 400:
            assert "error" in reply.json(), reply.body[:300]
        if reply.closes:
            assert wire.closed(), wire.pending[:300]
            return
        if not half_closed:
            return  # the connection may stay open: one answer is enough


@settings(
    max_examples=300,
    deadline=None,  # the socket timeout (DEADLINE) bounds each example instead
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(request=mutated_requests(), half_closed=st.booleans())
def test_mutated_requests_get_a_well_formed_answer_or_a_close(
    fuzz_gw: Gateway, request: tuple[str, bytes], half_closed: bool
) -> None:
    listener, data = request
    port = fuzz_gw.port if listener == "openai" else fuzz_gw.ollama_port
    with Wire(port, timeout=DEADLINE) as wire:
        wire.send(data)
        if half_closed:
            wire.sock.shutdown(socket.SHUT_WR)
        check_answers(wire, half_closed)
    assert fuzz_gw.proc.poll() is None
    with Wire(fuzz_gw.port, timeout=DEADLINE) as wire:
        wire.send(b"GET /v1/models HTTP/1.1\r\nHost: x\r\n" + AUTH + b"\r\n\r\n")
        assert wire.reply().status == 200


def test_fuzzing_left_no_trace_of_a_crash(fuzz_gw: Gateway) -> None:
    """Runs after the property test (same module gateway): every log line is JSON (parsed
    by request_lines), none a 500, no traceback, memory in bounds."""
    assert "Traceback" not in fuzz_gw.log
    assert all(line["status"] != 500 for line in raw.request_lines(fuzz_gw.log))
    assert raw.rss_bytes(fuzz_gw.proc.pid) < 300 << 20
