"""The nginx stub answers what real clients parse, and the wrk runner stops on a request count.

Needs nginx (and wrk for the last test) from Debian: `make bench-tools`; skipped without them.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx not installed")


@pytest.fixture
def nginx(tmp_path: Path) -> Iterator[object]:
    from procs import free_port
    from stub import Nginx

    server = Nginx(tmp_path, free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_openai_sdk_parses_every_answer(nginx) -> None:
    import openai
    from stub import EMBED_DIM, STREAM_TOKENS

    client = openai.OpenAI(base_url=f"{nginx.base}/v1", api_key="x", max_retries=0)
    emb = client.embeddings.create(model="bench-embed", input="hi")  # SDK asks for base64
    assert len(emb.data[0].embedding) == EMBED_DIM
    chat = client.chat.completions.create(
        model="bench-chat", messages=[{"role": "user", "content": "hi"}]
    )
    assert chat.choices[0].message.content
    streamer = openai.OpenAI(base_url=f"{nginx.base}/stream/v1", api_key="x", max_retries=0)
    chunks = list(
        streamer.chat.completions.create(
            model="bench-chat",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    texts = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(texts) == STREAM_TOKENS
    assert chunks[-1].usage.completion_tokens == STREAM_TOKENS


def test_ollama_client_parses_embed_answers(nginx) -> None:
    import ollama
    from stub import EMBED_DIM

    client = ollama.Client(host=nginx.base)
    assert len(client.embed(model="bench-embed", input="hi").embeddings[0]) == EMBED_DIM
    assert len(client.embeddings(model="bench-embed", prompt="hi").embedding) == EMBED_DIM


def test_status_counts_connections_and_unknown_routes_404(nginx) -> None:
    import urllib.error
    import urllib.request

    before = nginx.accepted()
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"{nginx.base}/api/nope", timeout=5)
    assert err.value.code == 404
    assert nginx.accepted() >= before + 2  # the 404 request and the second status call


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk not installed")
def test_wrk_runner_reports_and_stops_on_count(nginx, tmp_path: Path) -> None:
    from load import CASES, run_wrk

    case = next(c for c in CASES if c.name == "embeddings")
    res = run_wrk(
        nginx.base,
        case.direct_path,
        case.body_file(tmp_path),
        2,
        30,
        max_requests=200,
        watch_pid=nginx.proc.pid,
    )
    # Stopped by the request quota long before the 30 s limit (in-flight ones may add a few).
    assert 200 <= res["requests"] < 1000
    assert res["duration_us"] < 25e6
    assert res["errors"] == 0
    assert res["p50_us"] <= res["p99_us"]
    assert res["cpu_s"] >= 0
    # A wrong route is counted as a status error, not hidden.
    bad = run_wrk(nginx.base, "/v1/nope", case.body_file(tmp_path), 1, 30, max_requests=20)
    assert bad["status_errors"] >= 20
