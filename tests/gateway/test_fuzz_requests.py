"""Property-based fuzzing of the request surface (issue 15): hostile headers, JSON shapes and
encodings on both listeners. Whatever arrives: never a 500, never a body past the limit
accepted, memory bounded, exactly one valid JSON log line per request.

Random on each run (hypothesis prints the seed and the failing example); no example database,
so a CI run never depends on an earlier one.
"""

from __future__ import annotations

import gzip
import string
from collections.abc import Iterator

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import MASTER_KEY, Backend, Gateway, routing_config
from tests.gateway import raw

LIMIT = 4096

ROUTES = [
    ("POST", "/v1/chat/completions"),
    ("POST", "/v1/completions"),
    ("POST", "/v1/embeddings"),
    ("POST", "/v1/audio/speech"),
    ("POST", "/v1/audio/transcriptions"),
    ("GET", "/v1/models"),
    ("GET", "/health"),
    ("GET", "/metrics"),
    ("POST", "/api/chat"),
    ("POST", "/api/generate"),
    ("POST", "/api/embed"),
    ("POST", "/api/embeddings"),
    ("POST", "/api/show"),
    ("POST", "/api/pull"),
    ("DELETE", "/api/delete"),
    ("GET", "/api/tags"),
    ("GET", "/api/ps"),
    ("GET", "/"),
]

header_bytes = st.binary(max_size=200).filter(lambda b: b"\r" not in b and b"\n" not in b)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=50),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=20,
)
models = st.sampled_from(["llama-gpu", "llama-cpu", "mxbai-embed-large", "llama3.1:8b", ""])
requests_json = st.fixed_dictionaries(
    {"model": st.one_of(models, json_values)},
    optional={
        "messages": st.one_of(
            st.lists(
                st.fixed_dictionaries(
                    {"role": st.sampled_from(["user", "system", "x"]), "content": json_values}
                ),
                max_size=3,
            ),
            json_values,
        ),
        "prompt": json_values,
        "input": json_values,
        "stream": json_values,
        "options": json_values,
        "name": st.one_of(models, json_values),
    },
)


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["json", "bytes", "deep", "gzip", "big", "empty"]))
    if kind == "json":
        return orjson.dumps(draw(requests_json))
    if kind == "bytes":
        return draw(st.binary(max_size=512))
    if kind == "deep":
        depth = draw(st.integers(min_value=100, max_value=1100))
        return b'{"model": "llama-cpu", "messages": [], "x": ' + b"[" * depth + b"]" * depth + b"}"
    if kind == "gzip":
        return gzip.compress(orjson.dumps(draw(requests_json)))
    if kind == "big":
        return b'{"model": "llama-cpu", "x": "' + b"a" * draw(st.integers(LIMIT, 4 * LIMIT)) + b'"}'
    return b""


@st.composite
def header_sets(draw: st.DrawFn) -> list[tuple[str, bytes]]:
    headers: list[tuple[str, bytes]] = []
    auth = draw(st.sampled_from(["key", "none", "junk", "key+byte"]))
    if auth == "key":
        headers.append(("Authorization", f"Bearer {MASTER_KEY}".encode()))
    elif auth == "junk":
        headers.append(("Authorization", b"Bearer " + draw(header_bytes)))
    elif auth == "key+byte":
        tail = draw(st.sampled_from([b"\x00", b"\x7f", b"\xff", b" x"]))
        headers.append(("Authorization", f"Bearer {MASTER_KEY}".encode() + tail))
    if draw(st.booleans()):
        headers.append(("X-Request-ID", draw(header_bytes)))
    ctype = draw(st.sampled_from(["application/json", "multipart/form-data; boundary=B", None]))
    if ctype:
        headers.append(("Content-Type", ctype.encode()))
    encoding = draw(st.sampled_from([None, "gzip", "deflate", "br", "identity", "x-junk"]))
    if encoding:
        headers.append(("Content-Encoding", encoding.encode()))
    if draw(st.booleans()):
        name = draw(st.text(alphabet=string.ascii_letters + "-", min_size=1, max_size=20))
        headers.append((f"X-{name}", draw(header_bytes)))
    return headers


@pytest.fixture(scope="module")
def fuzzed(
    openai_backend: Backend, ollama_backend: Backend, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    config = routing_config(openai_backend, ollama_backend, max_body_bytes=LIMIT)
    gateway = Gateway(config, tmp_path_factory.mktemp("fuzz"))
    yield gateway
    gateway.stop()


@settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    route=st.sampled_from(ROUTES),
    ollama_listener=st.booleans(),
    headers=header_sets(),
    body=bodies(),
    query=st.sampled_from(["", "?a=1", "?%ff=%00", "/%2e%2e/x", "%ff"]),
)
def test_any_request_is_answered_in_bounds_and_logged_once(
    fuzzed: Gateway,
    route: tuple[str, str],
    ollama_listener: bool,
    headers: list[tuple[str, bytes]],
    body: bytes,
    query: str,
) -> None:
    method, path = route
    port = fuzzed.ollama_port if ollama_listener else fuzzed.port
    before = len(raw.request_lines(fuzzed.log))
    answer = raw.request(port, method, path + query, headers, body, timeout=20)
    assert answer.status != 500, answer.body[:300]
    if method == "POST" and len(body) > LIMIT:
        assert answer.status != 200
    lines = raw.wait_for_lines(fuzzed, before + 1)
    assert len(lines) == before + 1
    assert lines[-1]["status"] == answer.status


def test_fuzzing_left_memory_and_the_log_in_bounds(fuzzed: Gateway) -> None:
    """Runs after the property test (same module gateway)."""
    assert raw.rss_bytes(fuzzed.proc.pid) < 300 << 20
    for line in fuzzed.log.splitlines():
        assert line.startswith("{") and len(line) < 16 * 1024, line[:300]
        orjson.loads(line)
