"""synapse.backends.upstream on the pooled client: send, fetch, drain, reasons, health probes."""

from __future__ import annotations

import asyncio
import errno
import socket
from pathlib import Path

import pytest

from synapse.backends import upstream
from synapse.backends.upstream import ResponseTooLarge, Retryable
from synapse.config import load_config
from synapse.health.checker import probe
from synapse.http.client import (
    ConnectError,
    InvalidResponse,
    Pool,
    ServerDisconnected,
    Timeout,
)
from synapse.routing.deployment import DeploymentState
from tests.http.rawserver import Exchange, RawServer, answer, keep_answering, on_uvloop

T = Timeout(total=5, connect=2, idle=2)
SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
)


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    return tmp_path


def deployment(config_dir: Path, base: str, provider: str = "openai") -> DeploymentState:
    path = config_dir / "config.yaml"
    path.write_text(
        f"model_list:\n  - model_name: m\n"
        f"    litellm_params: {{model: {provider}/m, api_base: '{base}', api_key: sk-b}}\n"
    )
    dep = load_config(path, {}).deployments[0]
    return DeploymentState(dep, allowed_fails=3, cooldown=30, queue_size=10, queue_timeout=5)


async def send(pool: Pool, state: DeploymentState, url: str, **kw: object) -> upstream.Upstream:
    await state.acquire()
    try:
        return await upstream.send(
            pool, state, url, data=b"{}", headers={"X-Request-ID": "r"}, timeout=T, limit=1 << 20,
            **kw,  # type: ignore[arg-type]
        )  # fmt: skip
    except BaseException:
        state.release()
        raise


@on_uvloop
async def test_send_asks_for_identity_and_releases_slot_and_connection(config_dir: Path) -> None:
    heads: list[bytes] = []

    async def handler(ex: Exchange) -> None:
        while head := (await ex.request())[0]:
            heads.append(head)
            ex.write(answer(b'{"ok": true}', extra="Content-Type: application/json\r\n"))

    async with RawServer(handler) as server:
        pool = upstream.new_pool(2, 4)
        state = deployment(config_dir, server.url + "/v1")
        for _ in range(2):
            up = await send(pool, state, server.url + "/v1/chat/completions")
            assert (up.status, up.content_type) == (200, "application/json")
            assert await up.read() == b'{"ok": true}'
            up.release()
            up.release()  # twice is harmless
            assert state.in_flight == 0
        assert server.connections == 1
        assert b"Accept-Encoding: identity\r\n" in heads[0]
        assert b"X-Request-ID: r\r\n" in heads[0]
        await pool.close()


@on_uvloop
async def test_retryable_status_carries_the_detail_and_drops_the_connection(
    config_dir: Path,
) -> None:
    async with RawServer(keep_answering(b"engine overloaded", "503 Service Unavailable")) as server:
        pool = upstream.new_pool(2, 4)
        state = deployment(config_dir, server.url + "/v1")
        with pytest.raises(Retryable) as caught:
            await send(pool, state, server.url + "/v1/x")
        assert (caught.value.kind, caught.value.status) == ("status", 503)
        assert caught.value.reason == "answered 503: engine overloaded"
        assert await server.exchanges[0].closed_by_peer()
        await pool.close()


@on_uvloop
async def test_encoded_answer_is_refused(config_dir: Path) -> None:
    async with RawServer(keep_answering(b"\x1f\x8b", extra="Content-Encoding: gzip\r\n")) as server:
        pool = upstream.new_pool(2, 4)
        state = deployment(config_dir, server.url + "/v1")
        with pytest.raises(Retryable, match="gzip-encoded answer"):
            await send(pool, state, server.url + "/v1/x")
        with pytest.raises(InvalidResponse, match="gzip-encoded answer"):
            await upstream.fetch(pool, server.url + "/v1/models", timeout=2, limit=100)
        await pool.close()


def refused_port() -> int:
    with socket.socket() as probe_socket:
        probe_socket.bind(("127.0.0.1", 0))
        return probe_socket.getsockname()[1]


@pytest.mark.parametrize(
    ("raw", "kind", "words"),
    [
        (None, "connect", "connection refused"),
        (b"", "connect", "connection closed by the backend"),
        (b"HTTP/1.1 2000 OK\r\n\r\n", "status", "invalid HTTP answer"),
        (b"HTTP/1.1 200 OK\r\nContent-Le", "timeout", "no answer within its timeout"),
    ],
)
@on_uvloop
async def test_failures_before_the_answer_are_retryable(
    config_dir: Path, raw: bytes | None, kind: str, words: str
) -> None:
    async def handler(ex: Exchange) -> None:
        await ex.request()
        ex.write(raw or b"")
        if raw == b"":
            ex.close()
        else:
            await asyncio.sleep(10)

    async with RawServer(handler) as server:
        url = f"http://127.0.0.1:{refused_port()}" if raw is None else server.url
        pool = upstream.new_pool(2, 4)
        state = deployment(config_dir, url + "/v1")
        with pytest.raises(Retryable) as caught:
            await upstream.send(
                pool, state, url + "/v1/x", data=b"{}", headers={},
                timeout=Timeout(total=0.5, connect=0.5), limit=100,
            )  # fmt: skip
        assert (caught.value.kind, caught.value.reason) == (kind, words)
        assert "127.0.0.1" not in caught.value.reason
        await pool.close()


def test_reason_words() -> None:
    assert upstream.reason(ConnectError(socket.gaierror(-2, "Name or service not known"))) == (
        "host name not found"
    )
    assert upstream.reason(ConnectError(ConnectionRefusedError(errno.ECONNREFUSED, "x"))) == (
        "connection refused"
    )
    unreachable = OSError(errno.EHOSTUNREACH, "No route to host")
    assert upstream.reason(ConnectError(unreachable)) == "cannot connect (No route to host)"
    assert upstream.reason(ServerDisconnected()) == "connection closed by the backend"
    assert upstream.reason(ConnectionResetError(errno.ECONNRESET, "Connection reset by peer")) == (
        "network error (Connection reset by peer)"
    )
    assert upstream.reason(TimeoutError()) == "no answer within its timeout"


@on_uvloop
async def test_finish_returns_the_connection_once_the_rest_arrives(config_dir: Path) -> None:
    async def handler(ex: Exchange) -> None:
        while (await ex.request())[0]:
            ex.write(SSE_HEAD + chunk(b"data: {}\n\n") + chunk(b"data: [DONE]\n\n"))
            await asyncio.sleep(0.1)  # the end of the chunked body comes a moment later
            ex.write(b"0\r\n\r\n")

    async with RawServer(handler) as server:
        pool = upstream.new_pool(2, 4)
        state = deployment(config_dir, server.url + "/v1")
        for _ in range(2):
            up = await send(pool, state, server.url + "/v1/chat/completions")
            lines = up.lines()
            async for line in lines:
                if line.startswith(b"data: [DONE]"):
                    break
            up.finish()
            assert state.in_flight == 1  # still draining
            await asyncio.sleep(0.3)
            assert state.in_flight == 0
        assert server.connections == 1  # drained cleanly, so reused
        await pool.close()


@on_uvloop
async def test_finish_drops_a_connection_that_does_not_end(
    config_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(upstream, "DRAIN_TIMEOUT", 0.2)

    async def handler(ex: Exchange) -> None:
        await ex.request()
        ex.write(SSE_HEAD + chunk(b"data: [DONE]\n\n"))
        await asyncio.sleep(10)

    async with RawServer(handler) as server:
        pool = upstream.new_pool(2, 4)
        state = deployment(config_dir, server.url + "/v1")
        up = await send(pool, state, server.url + "/v1/chat/completions")
        assert await anext(up.chunks()) == b"data: [DONE]\n\n"
        up.finish()
        assert await asyncio.wait_for(server.exchanges[0].closed_by_peer(), 2)
        assert state.in_flight == 0
        await pool.close()


@on_uvloop
async def test_lines_longer_than_128_kib_and_the_bound(config_dir: Path) -> None:
    long_line = b'{"done": true, "context": [' + b"1," * 100_000 + b"1]}\n"

    async def handler(ex: Exchange) -> None:
        while (await ex.request())[0]:
            ex.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            for start in range(0, len(long_line), 5000):
                ex.write(chunk(long_line[start : start + 5000]))
            ex.write(b"0\r\n\r\n")

    async with RawServer(handler) as server:
        pool = upstream.new_pool(2, 4)
        state = deployment(config_dir, server.url, "ollama")
        up = await send(pool, state, server.url + "/api/chat")
        assert [line async for line in up.lines()] == [long_line]
        up.release()
        up = await send(pool, state, server.url + "/api/chat")
        up.limit = 100_000
        with pytest.raises(ResponseTooLarge):
            async for _ in up.lines():
                pass
        up.close()
        with pytest.raises(ResponseTooLarge):
            await upstream.fetch(pool, server.url + "/api/tags", timeout=2, limit=100_000)
        assert state.in_flight == 0
        await pool.close()


@on_uvloop
async def test_fetch_answers_status_and_body() -> None:
    async with RawServer(keep_answering(b'{"models": []}', "404 Not Found")) as server:
        pool = upstream.new_pool(2, 4)
        assert await upstream.fetch(pool, server.url + "/api/tags", timeout=2, limit=100) == (
            404,
            b'{"models": []}',
        )
        await pool.close()


@pytest.mark.parametrize(
    ("answers", "expected"),
    [
        ({"/health": "200 OK"}, None),
        ({"/health": "404 Not Found", "/v1/models": "200 OK"}, None),
        ({"/health": "500 Internal Server Error"}, "health check answered 500"),
        (
            {"/health": "404 Not Found", "/v1/models": "401 Unauthorized"},
            "health check answered 401",
        ),
    ],
)
@on_uvloop
async def test_health_probe(
    config_dir: Path, answers: dict[str, str], expected: str | None
) -> None:
    seen: list[bytes] = []

    async def handler(ex: Exchange) -> None:
        while head := (await ex.request())[0]:
            seen.append(head)
            path = head.split(b" ")[1].decode()
            ex.write(answer(b"{}", answers.get(path, "404 Not Found")))

    async with RawServer(handler) as server:
        pool = upstream.new_pool(2, 4)
        state = deployment(config_dir, server.url + "/v1")
        assert await probe(pool, state, 2) == expected
        assert b"Authorization: Bearer sk-b\r\n" in seen[0]
        await pool.close()


@on_uvloop
async def test_health_probe_failure_names_no_address(config_dir: Path) -> None:
    url = f"http://127.0.0.1:{refused_port()}"
    pool = upstream.new_pool(2, 4)
    state = deployment(config_dir, url + "/v1")
    assert await probe(pool, state, 2) == "health check: connection refused"
    await pool.close()
