"""Work per request bounded and linear in its input (issue 24: 1, 3, 10, and the translators).

Each hostile request goes through a real socket to a running gateway while a probe asks
`/health/liveliness` every 50 ms: the probe must be answered within 2 s each time (the stalls
these tests guard against were 4 s to a minute), and for bodies the gateway's resident memory
is sampled alongside.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from tests.conftest import PYTHON, ROOT, Backend, Gateway, free_port, routing_config, wait_http
from tests.gateway import raw
from tests.gateway.liveness import LivenessProbe

AGENT_KEY = "sk-agent-0123456789abcdef"
KEYS = {"KEY_AGENT": AGENT_KEY}
JSON = ("Content-Type", "application/json")
AUTH = ("Authorization", f"Bearer {AGENT_KEY}")
PROBE_TIMEOUT = 2.0
MIB = 1 << 20
# A 16 MiB body parsed whole held ~830 MiB; refused from its bytes, it costs a few copies of itself.
RSS_BOUND = 200 * MIB
FRAGMENTS, FRAGMENT_SIZE = 8000, 2560  # 20 MiB streamed in 8,000 pieces
# CPU-seconds the gateway may spend translating them: 0.3-0.7 when the pieces are joined once;
# re-copying the text gathered so far at every piece took 9 (text) and 73 (arguments).
STREAM_CPU_BOUND = 3.0


@pytest.fixture(scope="module")
def fragments() -> Iterator[str]:
    """The URL of a backend streaming FRAGMENTS pieces of FRAGMENT_SIZE characters."""
    port = free_port()
    proc = subprocess.Popen(
        [
            PYTHON,
            "-m",
            "tests.stubs.fragments",
            "--port",
            str(port),
            "--count",
            str(FRAGMENTS),
            "--size",
            str(FRAGMENT_SIZE),
        ],
        cwd=ROOT,
    )
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/health", proc)
    yield url
    proc.kill()
    proc.wait()


def bounded_config(
    openai_backend: Backend, ollama_backend: Backend, fragments: str, **settings: object
) -> dict:
    agent = {
        "name": "agent",
        "key": "os.environ/KEY_AGENT",
        "models": ["llama3.1:8b", "embed-openai", "whisper", "fragments", "fragments-ollama"],
    }
    config = routing_config(openai_backend, ollama_backend, consumers=[agent], **settings)
    config["synapse_settings"]["ollama_consumer"] = "agent"
    config["model_list"] += [
        {
            "model_name": "whisper",
            "litellm_params": {"model": "openai/whisper-1", "api_base": openai_backend.url},
            "model_info": {"mode": "audio_transcription"},
        },
        {
            "model_name": "fragments",
            "litellm_params": {"model": "hosted_vllm/fragments", "api_base": fragments + "/v1"},
            "model_info": {"mode": "chat"},
        },
        {  # /v1/responses is translated to chat completions for Ollama deployments only
            "model_name": "fragments-ollama",
            "litellm_params": {"model": "ollama_chat/fragments", "api_base": fragments},
            "model_info": {"mode": "chat"},
        },
    ]
    return config


@pytest.fixture(scope="module")
def gw(
    openai_backend: Backend,
    ollama_backend: Backend,
    fragments: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Gateway]:
    config = bounded_config(openai_backend, ollama_backend, fragments)
    gateway = Gateway(config, tmp_path_factory.mktemp("bounded"), env=KEYS)
    yield gateway
    gateway.stop()


# -- finding 1: JSON breadth ------------------------------------------------------------------


def wide_body(size: int) -> bytes:
    """A chat request of `size` bytes whose messages are empty objects (`[{},{},…]`)."""
    head, tail = b'{"model": "nope", "messages": [', b"{}]}"
    return head + b"{}," * ((size - len(head) - len(tail)) // 3) + tail


@pytest.mark.parametrize("port_name", ["openai", "ollama"])
def test_a_wide_json_body_is_refused_from_its_bytes(gw: Gateway, port_name: str) -> None:
    """16 MiB of `{},`: 5.6 million values. Refused (413) before parsing, in the caller's
    protocol, on the keyed port with a consumer key and on the keyless Ollama port; the
    loop keeps answering and memory stays bounded."""
    body = wide_body(16 * MIB - 64)
    with LivenessProbe(gw) as probe:
        if port_name == "openai":
            answer = raw.request(gw.port, "POST", "/v1/chat/completions", [AUTH, JSON], body)
        else:
            answer = raw.request(gw.ollama_port, "POST", "/api/chat", [JSON], body)
        time.sleep(0.3)  # a probe or two after the answer
    assert probe.answered_within(PROBE_TIMEOUT), probe.slowest
    assert probe.rss_growth < RSS_BOUND, probe.rss_growth / MIB
    assert answer.status == 413, answer.body[:300]
    error = answer.json()["error"]  # type: ignore[index]
    if port_name == "openai":
        assert error["code"] == "request_too_large"
        assert "more than 524288 values" in error["message"]
    else:
        assert isinstance(error, str) and "more than 524288 values" in error


def test_a_body_within_the_value_limit_is_parsed_and_served(gw: Gateway) -> None:
    """300,000 tokens as token arrays (OpenAI's per-request embedding limit) fit the bound."""
    tokens = [[1000 + i % 5000 for i in range(300)] for _ in range(1000)]
    body = orjson.dumps({"model": "embed-openai", "input": tokens})
    answer = raw.request(gw.port, "POST", "/v1/embeddings", [AUTH, JSON], body)
    assert answer.status == 200, answer.body[:300]
    assert len(answer.json()["data"]) == 1000  # type: ignore[index]


def test_structure_inside_strings_is_not_counted(gw: Gateway) -> None:
    """A text of a million commas, brackets and escaped quotes is one value, not a million."""
    text = ',[{:\\"' * 200_000
    body = orjson.dumps({"model": "embed-openai", "input": [text, "x"]})
    answer = raw.request(gw.port, "POST", "/v1/embeddings", [AUTH, JSON], body)
    assert answer.status == 200, answer.body[:300]


@pytest.mark.parametrize("port_name", ["openai", "ollama"])
def test_an_embeddings_request_holds_at_most_max_embedding_inputs_texts(
    gw: Gateway, port_name: str
) -> None:
    """500,000 one-letter texts fit the body and value limits, and each text costs the loop a
    cache lookup and a translation: refused (400, OpenAI's own limit of 2,048 texts) before
    any of it, in the caller's protocol, while the loop keeps answering."""
    many = orjson.dumps({"model": "embed-openai", "input": ["x"] * 500_000})
    with LivenessProbe(gw) as probe:
        if port_name == "openai":
            answer = raw.request(gw.port, "POST", "/v1/embeddings", [AUTH, JSON], many)
        else:
            answer = raw.request(gw.ollama_port, "POST", "/api/embed", [JSON], many)
        time.sleep(0.3)  # a probe or two after the answer
    assert probe.answered_within(PROBE_TIMEOUT), probe.slowest
    assert answer.status == 400, answer.body[:300]
    error = answer.json()["error"]  # type: ignore[index]
    if port_name == "openai":
        assert error["param"] == "input"
        error = error["message"]
    assert "500000 texts in one request: at most 2048 (max_embedding_inputs)" in error
    within = orjson.dumps({"model": "embed-openai", "input": [f"t{i}" for i in range(2048)]})
    answer = raw.request(gw.port, "POST", "/v1/embeddings", [AUTH, JSON], within)
    assert answer.status == 200 and len(answer.json()["data"]) == 2048  # type: ignore[index]


# -- finding 3: tool results matched to their calls --------------------------------------------


def tool_history(n: int) -> list[dict]:
    """An agent's turn: one assistant message with `n` tool calls (no ids, as Ollama clients
    send them), then the `n` results, named, in reverse order."""
    calls = [{"function": {"name": f"tool{i}", "arguments": {"i": i}}} for i in range(n)]
    results = [
        {"role": "tool", "content": "ok", "tool_name": f"tool{i}"} for i in reversed(range(n))
    ]
    return [
        {"role": "user", "content": "run them all"},
        {"role": "assistant", "content": "", "tool_calls": calls},
        *results,
    ]


def test_a_long_tool_history_is_translated_in_linear_time(gw: Gateway) -> None:
    """20,000 calls and results through /api/chat to a vLLM deployment (keyless port): the
    backend, which checks that every result answers an open call, serves it; the loop keeps
    answering (the quadratic matching took minutes)."""
    body = {"model": "llama3.1:8b", "messages": tool_history(20_000), "stream": False}
    with LivenessProbe(gw) as probe:
        answer = httpx.post(gw.ollama_url + "/api/chat", json=body, timeout=120)
    assert answer.status_code == 200, answer.text[:300]
    assert answer.json()["done"] is True
    assert probe.answered_within(PROBE_TIMEOUT), probe.slowest


# -- streamed answers in many pieces -----------------------------------------------------------


def test_tool_arguments_streamed_in_many_pieces_are_joined_once(gw: Gateway) -> None:
    """/api/chat translated from a vLLM stream: 20 MiB of arguments in 8,000 pieces."""
    body = {
        "model": "fragments",
        "messages": [{"role": "user", "content": "call f"}],
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
    }
    with LivenessProbe(gw) as probe:
        answer = httpx.post(gw.ollama_url + "/api/chat", json=body, timeout=120)
    final = orjson.loads(answer.content.splitlines()[-1])
    call = final["message"]["tool_calls"][0]
    assert call["id"] == "call_fragments"
    assert call["function"]["arguments"] == {"_raw": "x" * FRAGMENTS * FRAGMENT_SIZE}
    assert probe.answered_within(PROBE_TIMEOUT), probe.slowest
    assert probe.cpu < STREAM_CPU_BOUND, probe.cpu


def test_text_streamed_in_many_pieces_is_joined_once(gw: Gateway) -> None:
    """/v1/responses translated from an Ollama deployment's chat stream: 20 MiB of text in
    8,000 pieces."""
    body = {"model": "fragments-ollama", "input": "talk", "stream": True}
    with LivenessProbe(gw) as probe:
        answer = httpx.post(gw.url + "/v1/responses", json=body, headers=[AUTH], timeout=120)
    done = [line for line in answer.content.splitlines() if b'"response.output_text.done"' in line]
    assert len(done) == 1
    text = orjson.loads(done[0].removeprefix(b"data: "))["text"]
    assert text == "x" * FRAGMENTS * FRAGMENT_SIZE
    assert probe.answered_within(PROBE_TIMEOUT), probe.slowest
    assert probe.cpu < STREAM_CPU_BOUND, probe.cpu


def test_what_a_translator_holds_is_bounded_by_max_response_bytes(
    openai_backend: Backend, ollama_backend: Backend, fragments: str, make_gateway: Any
) -> None:
    """Tool arguments (/api/chat) and text (/v1/responses) are held until the stream's last
    event: past `max_response_bytes` (4 MiB here, 20 MiB streamed) the stream is broken."""
    config = bounded_config(openai_backend, ollama_backend, fragments, max_response_bytes=4 * MIB)
    small = make_gateway(config, env=KEYS)
    body = {
        "model": "fragments",
        "messages": [{"role": "user", "content": "call f"}],
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
    }
    ndjson = broken_stream(small.ollama_url + "/api/chat", body)
    last = orjson.loads(ndjson.splitlines()[-1])
    assert "max_response_bytes" in last["error"] and "done" not in last
    body = {"model": "fragments-ollama", "input": "talk", "stream": True}
    events = broken_stream(small.url + "/v1/responses", body, headers=[AUTH])
    assert b"max_response_bytes" in events and b"response.completed" not in events


def broken_stream(url: str, body: dict, **kw: Any) -> bytes:
    """What a stream carried before the gateway cut it (a broken stream has no end)."""
    received = bytearray()
    with (
        pytest.raises(httpx.RemoteProtocolError),
        httpx.stream("POST", url, json=body, timeout=60, **kw) as answer,
    ):
        for piece in answer.iter_bytes():
            received += piece
    return bytes(received)


# -- finding 10: control characters in upload part headers -------------------------------------


def upload(file_head: bytes) -> bytes:
    """A transcription form whose file part starts with `file_head` (its header lines)."""
    return (
        b'--B0UNDARY\r\nContent-Disposition: form-data; name="model"\r\n\r\nwhisper\r\n'
        + b"--B0UNDARY\r\n"
        + file_head
        + b"\r\n\r\nRIFF0000WAVE\r\n--B0UNDARY--\r\n"
    )


FORM = ("Content-Type", "multipart/form-data; boundary=B0UNDARY")
DISPOSITION = b'Content-Disposition: form-data; name="file"; filename="a.wav"'


@pytest.mark.parametrize(
    "file_head",
    [
        # a bare LF: a backend that ends header lines at LF would read an injected header
        DISPOSITION + b"\r\nContent-Type: audio/wav\nContent-Transfer-Encoding: base64",
        DISPOSITION + b"\r\nContent-Type: audio/wav\x00",
        DISPOSITION + b"\r\nContent-Type: audio/\x7fwav",
        b'Content-Disposition: form-data; name="file"; filename="a\nb.wav"',
        b'Content-Disposition: form-data; name="file"; filename="a\x1b[2J.wav"',
        b'Content-Disposition: form-data; name="fi\x00le"; filename="a.wav"',
    ],
    ids=[
        "lf-in-type",
        "nul-in-type",
        "del-in-type",
        "lf-in-filename",
        "esc-in-filename",
        "nul-in-name",
    ],
)
def test_control_characters_in_part_headers_are_a_400(
    gw: Gateway, openai_backend: Backend, file_head: bytes
) -> None:
    calls = openai_backend.stats()["calls"]
    answer = raw.request(
        gw.port, "POST", "/v1/audio/transcriptions", [AUTH, FORM], upload(file_head)
    )
    assert answer.status == 400, answer.body[:300]
    error = answer.json()["error"]  # type: ignore[index]
    assert error["type"] == "invalid_request_error"
    assert "control character" in error["message"]
    assert openai_backend.stats()["calls"] == calls  # nothing reached the backend


def test_a_tab_in_a_part_header_is_served(gw: Gateway) -> None:
    head = DISPOSITION + b"\r\nContent-Type:\taudio/wav"
    answer = raw.request(gw.port, "POST", "/v1/audio/transcriptions", [AUTH, FORM], upload(head))
    assert answer.status == 200, answer.body[:300]
    assert "model whisper-1" in answer.json()["text"]  # type: ignore[index]
