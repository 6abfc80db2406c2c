"""Every read from a backend is bounded, and every connection to one is bounded and clean.

Hostile stub backends (tests/stubs/backend.py modes, tests/stubs/sloppy.py) against a real
gateway process; memory is read from /proc with a wide margin, never timed.
"""

from __future__ import annotations

import concurrent.futures
import subprocess
import sys
from collections.abc import Iterator

import httpx
import openai
import pytest

from synapse.backends.upstream import CONNECTION_HEADROOM, connections_per_backend
from tests.conftest import MASTER_KEY, ROOT, Backend, free_port, routing_config, wait_http

AUTH = {"Authorization": f"Bearer {MASTER_KEY}"}
CHAT = {"model": "llama-gpu", "messages": [{"role": "user", "content": "hi"}]}


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def sdk(gw) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=MASTER_KEY, max_retries=0)


@pytest.fixture
def openai_only() -> Iterator[Backend]:
    backend = Backend("openai")
    yield backend
    backend.stop()


def test_gzip_answer_is_refused_not_unpacked(make_gateway, openai_only) -> None:
    """A 200 KB gzip that unpacks to 200 MiB: refused as an encoded answer, RSS unmoved."""
    gw = make_gateway(routing_config(openai_only, None))
    openai_only.control(mode="gzip", gzip_mib=200)
    with httpx.stream("POST", openai_only.url + "/v1/chat/completions", json=CHAT) as warm:
        assert warm.headers["Content-Encoding"] == "gzip"  # the stub built its bomb
    before = rss_mib(gw.proc.pid)
    response = httpx.post(gw.url + "/v1/chat/completions", json=CHAT, headers=AUTH, timeout=30)
    assert response.status_code == 502, response.text
    message = response.json()["error"]["message"]
    assert "gzip-encoded answer" in message and "vllm-chat" in message
    assert rss_mib(gw.proc.pid) < before + 100


def test_api_tags_reads_a_bounded_list_from_each_backend(make_gateway) -> None:
    """GET /api/tags (no key) against an endless model list: read up to the bound, then
    dropped; the listing still answers from the config."""
    ollama = Backend("ollama")
    try:
        gw = make_gateway(routing_config(None, ollama))
        ollama.control(mode="huge_tags")
        before = rss_mib(gw.proc.pid)
        response = httpx.get(gw.ollama_url + "/api/tags", timeout=30)
        assert response.status_code == 200
        names = {m["name"] for m in response.json()["models"]}
        assert names == {"mxbai-embed-large:latest", "llama-cpu:latest"}
        # What the stub managed to send: the 1 MiB bound plus socket buffers, not gigabytes.
        assert ollama.stats()["tags_bytes"] < 32 * 1024 * 1024
        assert rss_mib(gw.proc.pid) < before + 100
    finally:
        ollama.stop()


def test_answer_over_the_limit_names_the_setting(make_gateway, openai_only) -> None:
    gw = make_gateway(routing_config(openai_only, None, max_response_bytes=65536))
    with pytest.raises(openai.APIStatusError) as caught:
        sdk(gw).embeddings.create(model="embed-openai", input=["text"] * 2000)
    assert caught.value.status_code == 502
    message = str(caught.value)
    assert "exceeds synapse_settings.max_response_bytes (65536 bytes)" in message
    assert "incomplete" not in message
    # Small answers still pass.
    assert len(sdk(gw).embeddings.create(model="embed-openai", input=["a", "b"]).data) == 2


def test_connections_per_backend_are_capped(make_gateway, openai_only) -> None:
    """Ten concurrent requests to a deployment without max_parallel_requests: at most
    `backend_connections` reach the backend at once; the rest wait their turn, all succeed."""
    gw = make_gateway(routing_config(openai_only, None, backend_connections=3))
    openai_only.control(mode="slow", delay=0.2, max_active=0)

    def chat(_: int) -> int:
        return httpx.post(
            gw.url + "/v1/chat/completions", json=CHAT, headers=AUTH, timeout=30
        ).status_code

    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        statuses = list(pool.map(chat, range(10)))
    assert statuses == [200] * 10
    assert openai_only.stats()["max_active"] == 3


def test_connection_cap_stays_above_the_declared_parallelism() -> None:
    parallel = [("a:1", 64), ("a:1", 2), ("b:1", None)]
    assert connections_per_backend(parallel, floor=8) == 66 + CONNECTION_HEADROOM
    assert connections_per_backend([("b:1", None)], floor=8) == 8


@pytest.fixture
def sloppy() -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.stubs.sloppy", "--port", str(port)], cwd=ROOT
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/_stats", proc)
        yield url
    finally:
        proc.kill()
        proc.wait()


def test_connection_is_not_reused_after_an_early_answer(make_gateway, sloppy) -> None:
    """The backend answers 404 without reading a 20 KB body; the next request on the same
    pool must not be parsed by the backend as the rest of that body."""
    config = routing_config(None, None)
    config["model_list"] = [
        {
            "model_name": "sloppy",
            "litellm_params": {"model": "openai/sloppy", "api_base": sloppy + "/v1"},
            "model_info": {"id": "sloppy-chat", "mode": "chat"},
        }
    ]
    gw = make_gateway(config)
    client = sdk(gw)
    for _ in range(3):
        with pytest.raises(openai.NotFoundError):
            client.completions.create(model="sloppy", prompt="x" * 20_000)
        answer = client.chat.completions.create(
            model="sloppy", messages=[{"role": "user", "content": "hi"}]
        )
        assert answer.choices[0].message.content == "ok"
    assert httpx.get(sloppy + "/_stats").json() == {"garbled": 0}
