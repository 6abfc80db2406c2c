"""Hostile request shapes (issue 24), as bytes on the wire, at any size up to a full size.

One definition serves the property test (tests/gateway/test_hostile_inputs.py) and the
benchmark (bench/adversarial.py, `make bench-adversarial`). A shape's size is a count of its
unit (objects, messages, chunks, requests); `full` is the size the test and the benchmark go
up to: the configured limit where there is one (16 MiB bodies, 100 header fields, 64 multipart
parts: past it a clear refusal is the right answer), else a size at which the unfixed code
stalled for seconds (issue 24's findings).
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

import orjson

from tests.conftest import Backend, routing_config

MAX_BODY = 16 * 1024 * 1024  # synapse_settings.max_body_bytes (default)
MAX_FIELDS = 100  # header fields (synapse.http.server)
MAX_TARGET = 8 * 1024  # request-target bytes (synapse.http.server)


@dataclass(frozen=True)
class Target:
    listener: str  # "openai" (port 8000, keyed) or "ollama" (keyless)
    method: str
    path: str
    model: str = ""

    def __str__(self) -> str:
        return f"{self.listener}:{self.method} {self.path}"


@dataclass(frozen=True)
class Shape:
    name: str
    unit: str
    full: int
    targets: tuple[Target, ...]
    build: Callable[[int, Target, str], bytes]  # (size, target, key) → the bytes to send
    reads: bool = True  # False: the client sends and does not read (pipelining)
    connections: int = 1


def head(target: Target, key: str, extra: list[str], *, close: bool = True) -> bytes:
    lines = [f"{target.method} {target.path} HTTP/1.1", "Host: 127.0.0.1"]
    if close:
        lines.append("Connection: close")
    if target.listener == "openai":
        lines.append(f"Authorization: Bearer {key}")
    return ("\r\n".join(lines + extra) + "\r\n\r\n").encode()


def json_request(target: Target, key: str, body: bytes) -> bytes:
    extra = ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return head(target, key, extra) + body


def _with_model(target: Target, field: str, inner: bytes) -> bytes:
    return b'{"model":' + orjson.dumps(target.model) + b',"' + field.encode() + b'":' + inner + b"}"


def json_wide(n: int, target: Target, key: str) -> bytes:
    """`{"model":…, "x": [{},{},…]}`: n empty objects (5.6 million in 16 MiB)."""
    return json_request(target, key, _with_model(target, "x", b"[" + b",".join([b"{}"] * n) + b"]"))


DEPTH = 100  # below the 128 levels read_json refuses: such a body must be read whole


def json_deep(n: int, target: Target, key: str) -> bytes:
    """n arrays nested DEPTH deep side by side (about 200 bytes each)."""
    group = b"[" * DEPTH + b"]" * DEPTH
    return json_request(target, key, _with_model(target, "x", b"[" + b",".join([group] * n) + b"]"))


def messages(n: int, target: Target, key: str) -> bytes:
    """A chat of n short user messages."""
    turn = b'{"role":"user","content":"hi"}'
    field = "input" if target.path.endswith("/responses") else "messages"
    return json_request(
        target, key, _with_model(target, field, b"[" + b",".join([turn] * n) + b"]")
    )


def tool_calls(n: int, target: Target, key: str) -> bytes:
    """An agent's turn: one assistant message with n parallel tool calls, then n tool messages
    answering them in order (as Ollama clients send them: by tool name, no ids)."""
    ollama = target.path.startswith("/api/")
    calls: list[dict] = []
    answers: list[dict] = []
    for i in range(n):
        if ollama:
            calls.append({"function": {"name": "lookup", "arguments": {"q": i}}})
            answers.append({"role": "tool", "content": f"result {i}", "tool_name": "lookup"})
        else:
            arguments = orjson.dumps({"q": i}).decode()
            function = {"name": "lookup", "arguments": arguments}
            calls.append({"id": f"call_{i}", "type": "function", "function": function})
            answers.append({"role": "tool", "content": f"result {i}", "tool_call_id": f"call_{i}"})
    history = [
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": "", "tool_calls": calls},
        *answers,
    ]
    body = {"model": target.model, "messages": history, "stream": False}
    return json_request(target, key, orjson.dumps(body))


def embedding_inputs(n: int, target: Target, key: str) -> bytes:
    """One embedding request of n distinct short texts."""
    texts = b"[" + b",".join(b'"text %d"' % i for i in range(n)) + b"]"
    return json_request(target, key, _with_model(target, "input", texts))


def multipart_parts(n: int, target: Target, key: str) -> bytes:
    """A transcription upload of n form fields before the file."""
    parts = [b'--B\r\nContent-Disposition: form-data; name="model"\r\n\r\n%s\r\n' % b"whisper"]
    parts += [
        b'--B\r\nContent-Disposition: form-data; name="f%d"\r\n\r\nv\r\n' % i for i in range(n)
    ]
    parts.append(
        b'--B\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n'
        b"Content-Type: audio/wav\r\n\r\nRIFF....WAVE\r\n--B--\r\n"
    )
    body = b"".join(parts)
    extra = ["Content-Type: multipart/form-data; boundary=B", f"Content-Length: {len(body)}"]
    return head(target, key, extra) + body


def many_headers(n: int, target: Target, key: str) -> bytes:
    """n extra header fields of 600 bytes (the head stays under its 64 KiB limit)."""
    extra = [f"X-Pad-{i}: {'v' * 600}" for i in range(n)]
    body = _with_model(target, "input", b'"hello"')
    extra += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return head(target, key, extra) + body


def tiny_chunks(n: int, target: Target, key: str) -> bytes:
    """A chunked body sent as n one-byte chunks (the JSON padded to n bytes)."""
    prefix = _with_model(target, "input", b'"')
    body = prefix + b"a" * max(0, n - len(prefix) - 2) + b'"}'
    chunks = b"".join(b"1\r\n" + body[i : i + 1] + b"\r\n" for i in range(len(body)))
    extra = ["Content-Type: application/json", "Transfer-Encoding: chunked"]
    return head(target, key, extra) + chunks + b"0\r\n\r\n"


def pipelined_flood(n: int, target: Target, key: str) -> bytes:
    """n pipelined GETs of a long unknown path: each answer (a 404 naming the path) is about
    8 KiB; the client never reads them."""
    path = "/" + "a" * (MAX_TARGET - 100)
    one = head(Target(target.listener, "GET", path), key, [], close=False)
    return one * n


def _json_targets(openai_model: str, ollama_model: str) -> tuple[Target, ...]:
    """Every JSON route on both listeners (the Ollama port serves OpenAI's under /v1 only)."""
    openai_paths = ["/chat/completions", "/completions", "/embeddings", "/responses"]
    ollama_paths = ["/api/chat", "/api/generate", "/api/embed", "/api/embeddings", "/api/show"]
    targets = [Target("openai", "POST", p, openai_model) for p in ollama_paths]
    targets += [Target("openai", "POST", f"/v1{p}", openai_model) for p in openai_paths]
    targets += [Target("openai", "POST", p, openai_model) for p in openai_paths]
    targets += [Target("ollama", "POST", p, ollama_model) for p in ollama_paths]
    targets += [Target("ollama", "POST", f"/v1{p}", ollama_model) for p in openai_paths]
    return tuple(targets)


JSON_TARGETS = _json_targets("llama-gpu", "llama3.1:8b")
CHAT_TARGETS = (
    Target("openai", "POST", "/v1/chat/completions", "llama-gpu"),
    Target("ollama", "POST", "/api/chat", "llama3.1:8b"),
    Target("openai", "POST", "/api/chat", "llama-cpu"),
    Target("ollama", "POST", "/v1/chat/completions", "llama3.1:8b"),
)
EMBED_TARGETS = (
    Target("openai", "POST", "/v1/embeddings", "mxbai-embed-large"),
    Target("openai", "POST", "/v1/embeddings", "embed-openai"),
    Target("ollama", "POST", "/api/embed", "mxbai-embed-large"),
    Target("ollama", "POST", "/v1/embeddings", "embed-openai"),
)
# The flood's requests are GETs of an 8 KiB unknown path, whatever the route named here.
FLOOD_TARGETS = (
    Target("openai", "GET", "/aaa…(8 KiB, 404)"),
    Target("ollama", "GET", "/aaa…(8 KiB, 404)"),
)

SHAPES = {
    s.name: s
    for s in (
        Shape("json_wide", "objects", (MAX_BODY - 100) // 3, JSON_TARGETS, json_wide),
        Shape(
            "json_deep",
            "arrays 100 deep",
            (MAX_BODY - 100) // (2 * DEPTH + 1),
            JSON_TARGETS,
            json_deep,
        ),
        Shape(
            "messages",
            "messages",
            50_000,
            (*CHAT_TARGETS, Target("openai", "POST", "/v1/responses", "llama-gpu")),
            messages,
        ),
        Shape(
            "tool_calls",
            "tool calls",
            12_000,
            (
                Target("ollama", "POST", "/api/chat", "llama3.1:8b"),
                Target("openai", "POST", "/v1/chat/completions", "llama-gpu"),
            ),
            tool_calls,
        ),
        Shape("embedding_inputs", "inputs", 20_000, EMBED_TARGETS, embedding_inputs),
        Shape(
            "multipart_parts",
            "parts",
            64,
            (
                Target("openai", "POST", "/v1/audio/transcriptions"),
                Target("openai", "POST", "/audio/transcriptions"),
            ),
            multipart_parts,
        ),
        Shape("many_headers", "header fields", MAX_FIELDS - 8, JSON_TARGETS, many_headers),
        Shape("tiny_chunks", "one-byte chunks", 20_000, JSON_TARGETS, tiny_chunks),
        Shape(
            "pipelined_flood",
            "requests",
            20_000,
            FLOOD_TARGETS,
            pipelined_flood,
            reads=False,
            connections=2,
        ),
    )
}


def config(openai: Backend, ollama: Backend) -> dict:
    """The test gateway's routing config plus a transcription model, so every route has one."""
    config = routing_config(openai, ollama)
    config["model_list"].append(
        {
            "model_name": "whisper",
            "litellm_params": {"model": "openai/whisper-1", "api_base": openai.url + "/v1"},
            "model_info": {"id": "whisper", "mode": "audio_transcription"},
        }
    )
    return config


@dataclass
class Outcome:
    statuses: list[int]
    seconds: float  # from the first byte sent to the last answer read (or the send given up)
    sent: int  # bytes the gateway took


def deliver(port: int, data: bytes, *, reads: bool, timeout: float = 120.0) -> Outcome:
    """Send `data` on a fresh connection. reads: read the one answer (the connection closes);
    else send until the gateway stops taking bytes for a second (pushback), hold the
    connection a second more, and close it without reading anything."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        if not reads:
            sock.settimeout(1.0)
            sent = 0
            with contextlib.suppress(TimeoutError, BrokenPipeError, ConnectionResetError):
                view = memoryview(data)
                while sent < len(view):
                    sent += sock.send(view[sent : sent + 65536])
            time.sleep(1.0)
            return Outcome([], time.monotonic() - started, sent)
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(data)  # the gateway may refuse early and close
        response = http.client.HTTPResponse(sock)
        response.begin()
        response.read()
        return Outcome([response.status], time.monotonic() - started, len(data))
