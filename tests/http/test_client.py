"""The backend client against loopback servers that write exact bytes (tests/http/rawserver.py)."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import random
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from synapse.http import client
from synapse.http.client import (
    BodyTooLarge,
    ConnectError,
    InvalidResponse,
    Pool,
    ServerDisconnected,
    Timeout,
)
from tests.http.rawserver import Exchange, RawServer, answer, keep_answering, on_uvloop

T = Timeout(total=5, connect=2, idle=2)


def new_pool(per_host: int = 4, idle_expiry: float = 60.0) -> Pool:
    return Pool(per_host=per_host, connect_timeout=2, idle_expiry=idle_expiry)


async def get(pool: Pool, url: str, timeout: Timeout = T) -> tuple[int, bytes]:
    response = await pool.request("GET", url + "/x", headers={}, body=None, timeout=timeout)
    body = await response.read(1 << 20)
    response.release()
    return response.status, body


# --- requests as sent ----------------------------------------------------------------------


@on_uvloop
async def test_exact_head_sent() -> None:
    seen: list[tuple[bytes, bytes]] = []

    async def handler(ex: Exchange) -> None:
        seen.append(await ex.request())
        ex.write(answer())

    async with RawServer(handler) as server:
        pool = new_pool()
        response = await pool.request(
            "POST",
            server.url + "/v1/chat?x=1",
            headers=[("X-Request-ID", "r1"), ("Accept-Encoding", "identity")],
            body=b'{"a": 1}',
            timeout=T,
        )
        await response.read(10)
        response.release()
        await pool.close()
    host = f"127.0.0.1:{server.port}"
    assert seen == [
        (
            f"POST /v1/chat?x=1 HTTP/1.1\r\nHost: {host}\r\nX-Request-ID: r1\r\n"
            "Accept-Encoding: identity\r\nContent-Length: 8\r\n\r\n".encode(),
            b'{"a": 1}',
        )
    ]


@on_uvloop
async def test_async_iterable_body_is_sent_chunked() -> None:
    seen: list[tuple[bytes, bytes]] = []

    async def handler(ex: Exchange) -> None:
        seen.append(await ex.request())
        ex.write(answer())

    async def pieces() -> AsyncIterator[bytes]:
        for piece in (b"abc", b"", b"d" * 70000):
            await asyncio.sleep(0)
            yield piece

    async with RawServer(handler) as server:
        pool = new_pool()
        response = await pool.request(
            "POST", server.url + "/up", headers={}, body=pieces(), timeout=T
        )
        assert await response.read(10) == b"ok"
        response.release()
        await pool.close()
    head, body = seen[0]
    assert b"Transfer-Encoding: chunked\r\n" in head and b"Content-Length" not in head
    assert body == b"abc" + b"d" * 70000


@on_uvloop
async def test_large_body_waits_for_a_slow_reader() -> None:
    body = bytes(range(256)) * (32 * 1024)  # 8 MiB: far more than the socket buffers

    async def handler(ex: Exchange) -> None:
        head = await ex.reader.readuntil(b"\r\n\r\n")
        await asyncio.sleep(0.3)  # the client's writes pause meanwhile
        got = await ex.reader.readexactly(len(body))
        ex.write(answer(b"same" if got == body and b"Content-Length: 8388608" in head else b"no"))

    async with RawServer(handler) as server:
        pool = new_pool()
        response = await pool.request("PUT", server.url, headers={}, body=body, timeout=T)
        assert await response.read(10) == b"same"
        response.release()
        await pool.close()


@on_uvloop
async def test_early_answer_stops_a_streamed_body() -> None:
    sent: list[int] = []

    async def handler(ex: Exchange) -> None:
        await ex.reader.readuntil(b"\r\n\r\n")
        ex.write(answer(b"too large", "413 Content Too Large"))  # body never read
        await asyncio.sleep(10)

    async def endless() -> AsyncIterator[bytes]:
        while True:
            sent.append(1)
            yield b"x" * 65536

    async with RawServer(handler) as server:
        pool = new_pool()
        response = await pool.request("POST", server.url, headers={}, body=endless(), timeout=T)
        assert (response.status, await response.read(100)) == (413, b"too large")
        response.release()
        assert len(sent) < 1000  # stopped, not 64 GiB later
        assert await asyncio.wait_for(server.exchanges[0].closed_by_peer(), 2)
        await pool.close()


@on_uvloop
async def test_header_injection_and_framing_headers_are_refused() -> None:
    pool = new_pool()
    for headers in ({"X-A": "v\r\nX-Evil: 1"}, {"X-A\n": "v"}, {"Content-Length": "3"}):
        with pytest.raises(ValueError):
            await pool.request("GET", "http://127.0.0.1:9/", headers=headers, body=None, timeout=T)
    with pytest.raises(ValueError):
        await pool.request("GET", "ftp://127.0.0.1/", headers={}, body=None, timeout=T)
    await pool.close()


# --- keep-alive and the pool ---------------------------------------------------------------


@on_uvloop
async def test_keep_alive_reuses_one_connection() -> None:
    async with RawServer(keep_answering(b"hello")) as server:
        pool = new_pool()
        for _ in range(5):
            assert await get(pool, server.url) == (200, b"hello")
        assert server.connections == 1
        await pool.close()


@pytest.mark.parametrize(
    ("status", "extra"),
    [("500 Internal Server Error", ""), ("404 Not Found", ""), ("200 OK", "Connection: close\r\n")],
)
@on_uvloop
async def test_error_answers_and_connection_close_are_not_reused(status: str, extra: str) -> None:
    async with RawServer(keep_answering(b"x", status, extra)) as server:
        pool = new_pool()
        await get(pool, server.url)
        await get(pool, server.url)
        assert server.connections == 2
        await pool.close()


@on_uvloop
async def test_unread_body_closes_instead_of_reusing() -> None:
    async with RawServer(keep_answering(b"x" * 1000)) as server:
        pool = new_pool()
        response = await pool.request("GET", server.url, headers={}, body=None, timeout=T)
        assert await response.read_some(10) == b"x" * 10
        response.release()  # 990 bytes unread
        assert await get(pool, server.url) == (200, b"x" * 1000)
        assert server.connections == 2
        assert await server.exchanges[0].closed_by_peer()
        await pool.close()


@on_uvloop
async def test_extra_bytes_after_the_answer_are_not_reused() -> None:
    async def handler(ex: Exchange) -> None:
        while (await ex.request())[0]:
            second = b"HTTP/1.1 404 Not Found\r\nX-Second: 1\r\nContent-Length: 2\r\n\r\nno"
            ex.write(answer() + second)  # one write: the client parses both at once

    async with RawServer(handler) as server:
        pool = new_pool()
        for _ in range(2):
            response = await pool.request("GET", server.url, headers={}, body=None, timeout=T)
            assert (response.status, await response.read(10)) == (200, b"ok")
            assert "X-Second" not in response.headers
            response.release()
        assert server.connections == 2
        await pool.close()


@on_uvloop
async def test_per_host_limit_queues_callers_in_order() -> None:
    release = asyncio.Event()

    async def handler(ex: Exchange) -> None:
        while head := (await ex.request())[0]:
            await release.wait()
            ex.write(answer(head.split(b" ")[1]))

    async with RawServer(handler) as server:
        pool = new_pool(per_host=1)
        order: list[bytes] = []

        async def one(i: int) -> None:
            response = await pool.request(
                "GET", f"{server.url}/{i}", headers={}, body=None, timeout=T
            )
            order.append(await response.read(100))
            response.release()

        tasks = []
        for i in range(4):
            tasks.append(asyncio.create_task(one(i)))
            await asyncio.sleep(0.01)  # arrival order
        await asyncio.sleep(0.05)
        assert server.connections == 1 and order == []
        release.set()
        await asyncio.gather(*tasks)
        assert order == [b"/0", b"/1", b"/2", b"/3"]
        assert server.connections == 1
        await pool.close()


@on_uvloop
async def test_waiting_for_a_place_counts_against_the_total_deadline() -> None:
    async def handler(ex: Exchange) -> None:
        await ex.request()
        await asyncio.sleep(10)

    async with RawServer(handler) as server:
        pool = new_pool(per_host=1)
        first = asyncio.create_task(get(pool, server.url))
        await asyncio.sleep(0.05)
        with pytest.raises(TimeoutError):
            await get(pool, server.url, Timeout(total=0.2, connect=1))
        assert server.connections == 1
        first.cancel()
        await pool.close()


@on_uvloop
async def test_cancelled_waiter_frees_its_place() -> None:
    async with RawServer(keep_answering()) as server:
        pool = new_pool(per_host=1)
        held = await pool.request("GET", server.url, headers={}, body=None, timeout=T)
        waiting = asyncio.create_task(get(pool, server.url))
        after = asyncio.create_task(get(pool, server.url))
        await asyncio.sleep(0.05)
        waiting.cancel()
        await asyncio.sleep(0)
        await held.read(10)
        held.release()
        assert await after == (200, b"ok")
        assert waiting.cancelled()
        assert server.connections == 1
        await pool.close()


@on_uvloop
async def test_place_of_a_closed_connection_goes_to_the_next_waiter() -> None:
    async with RawServer(keep_answering(b"no", "500 Internal Server Error")) as server:
        pool = new_pool(per_host=1)
        held = await pool.request("GET", server.url, headers={}, body=None, timeout=T)
        waiting = asyncio.create_task(get(pool, server.url, Timeout(total=2, connect=1)))
        await asyncio.sleep(0.05)
        held.release()  # a 500: closed, not pooled
        assert await waiting == (500, b"no")
        assert server.connections == 2
        await pool.close()


@on_uvloop
async def test_a_response_dropped_unreleased_frees_its_place() -> None:
    async with RawServer(keep_answering()) as server:
        pool = new_pool(per_host=1)
        response = await pool.request("GET", server.url, headers={}, body=None, timeout=T)
        del response  # a caller's bug: neither released nor closed
        assert await get(pool, server.url, Timeout(total=1, connect=1)) == (200, b"ok")
        await pool.close()


@on_uvloop
async def test_idle_connections_are_reused_last_in_first_out() -> None:
    async with RawServer(keep_answering()) as server:
        pool = new_pool()
        a = await pool.request("GET", server.url, headers={}, body=None, timeout=T)
        b = await pool.request("GET", server.url, headers={}, body=None, timeout=T)
        await a.read(10)
        await b.read(10)
        a.release()
        b.release()
        await get(pool, server.url)
        # the second connection (released last) carried the third request
        assert [ex.requests for ex in server.exchanges] == [1, 2]
        await pool.close()


@on_uvloop
async def test_connection_closed_by_peer_while_idle_leaves_the_pool() -> None:
    async def handler(ex: Exchange) -> None:
        await ex.request()
        ex.write(answer())
        await asyncio.sleep(0.05)
        ex.close()  # keep-alive answer, then the server drops the idle connection

    async with RawServer(handler) as server:
        pool = new_pool()
        assert await get(pool, server.url) == (200, b"ok")
        await asyncio.sleep(0.2)
        assert pool._hosts[("http", "127.0.0.1", server.port)].idle == []
        assert await get(pool, server.url) == (200, b"ok")  # a new connection, no error
        assert server.connections == 2
        await pool.close()


@on_uvloop
async def test_reused_connection_closed_before_reading_the_request_is_retried_fresh() -> None:
    async def handler(ex: Exchange) -> None:
        await ex.request()
        ex.write(answer(b"first"))
        await ex.request()
        ex.close()  # closed as the request arrived (a keep-alive timeout race)

    async with RawServer(handler) as server:
        pool = new_pool()
        assert await get(pool, server.url) == (200, b"first")
        assert await get(pool, server.url) == (200, b"first")  # on a new connection
        assert server.connections == 2
        await pool.close()


async def _pieces() -> AsyncIterator[bytes]:
    for piece in (b"up", b"load"):
        yield piece


@on_uvloop
async def test_a_sized_body_is_sent_again_whole_on_a_fresh_connection() -> None:
    bodies: list[bytes] = []

    async def handler(ex: Exchange) -> None:
        _, body = await ex.request()
        bodies.append(body)
        ex.write(answer(body))
        await ex.request()
        ex.close()  # closed as the second request arrived (a keep-alive timeout race)

    async with RawServer(handler) as server:
        pool = new_pool()
        upload = client.SizedBody(6, _pieces)
        for _ in range(2):
            response = await pool.request("POST", server.url, headers={}, body=upload, timeout=T)
            assert await response.read(100) == b"upload"
            response.release()
        assert bodies == [b"upload", b"upload"] and server.connections == 2
        await pool.close()


@on_uvloop
async def test_a_one_pass_body_on_a_dropped_connection_fails_as_a_disconnect() -> None:
    async def handler(ex: Exchange) -> None:
        await ex.request()
        ex.write(answer())
        await ex.request()
        ex.close()

    async with RawServer(handler) as server:
        pool = new_pool()
        assert await get(pool, server.url) == (200, b"ok")
        with pytest.raises(ServerDisconnected):  # cannot be replayed: not retried, not a crash
            await pool.request("POST", server.url, headers={}, body=_pieces(), timeout=T)
        await pool.close()


@on_uvloop
async def test_a_released_response_reads_nothing_of_the_next_answer() -> None:
    async def handler(ex: Exchange) -> None:
        for body in (b"first", b"second"):
            await ex.request()
            ex.write(answer(body))
        await ex.request()

    async with RawServer(handler) as server:
        pool = new_pool(per_host=1)
        first = await pool.request("GET", server.url, headers={}, body=None, timeout=T)
        assert await first.read(100) == b"first"
        first.release()
        second = await pool.request("GET", server.url, headers={}, body=None, timeout=T)
        assert (await first.read(100), first.at_eof(), first.content_length) == (b"", True, 5)
        assert [c async for c in first.chunks()] == []
        assert await second.read(100) == b"second"
        await pool.close()


@on_uvloop
async def test_idle_connections_expire() -> None:
    async with RawServer(keep_answering()) as server:
        pool = new_pool(idle_expiry=0.1)
        await get(pool, server.url)
        assert await asyncio.wait_for(server.exchanges[0].closed_by_peer(), 2)
        await get(pool, server.url)
        assert server.connections == 2
        await pool.close()


@on_uvloop
async def test_pool_close_closes_connections_in_use() -> None:
    async def handler(ex: Exchange) -> None:
        await ex.request()
        ex.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nab")
        await asyncio.sleep(10)

    async with RawServer(handler) as server:
        pool = new_pool()
        response = await pool.request("GET", server.url, headers={}, body=None, timeout=T)
        await pool.close()
        assert await asyncio.wait_for(server.exchanges[0].closed_by_peer(), 2)
        with pytest.raises(ServerDisconnected):
            await response.read(100)


# --- bodies --------------------------------------------------------------------------------


@on_uvloop
async def test_chunked_answer_pieces_arrive_before_the_end() -> None:
    more = asyncio.Event()

    async def handler(ex: Exchange) -> None:
        await ex.request()
        ex.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
        await more.wait()
        ex.write(b"6\r\nsecond\r\n0\r\n\r\n")
        await ex.request()

    async with RawServer(handler) as server:
        pool = new_pool()
        response = await pool.request("GET", server.url, headers={}, body=None, timeout=T)
        assert response.content_length is None
        pieces = response.chunks()
        assert await anext(pieces) == b"first"  # before the server wrote the rest
        assert not response.at_eof()
        more.set()
        assert [p async for p in pieces] == [b"second"]
        assert response.at_eof()
        response.release()
        host = pool._hosts[("http", "127.0.0.1", server.port)]
        assert len(host.idle) == 1
        await pool.close()


@on_uvloop
async def test_close_delimited_body_ends_at_eof() -> None:
    async def handler(ex: Exchange) -> None:
        await ex.request()
        ex.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\npart one, ")
        await asyncio.sleep(0.05)
        ex.write(b"part two")
        ex.close()

    async with RawServer(handler) as server:
        pool = new_pool()
        status, body = await get(pool, server.url)
        assert (status, body) == (200, b"part one, part two")
        assert pool._hosts[("http", "127.0.0.1", server.port)].idle == []
        await pool.close()


@pytest.mark.parametrize("status", ["204 No Content", "304 Not Modified"])
@on_uvloop
async def test_no_body_statuses(status: str) -> None:
    async def handler(ex: Exchange) -> None:
        while (await ex.request())[0]:
            ex.write(f"HTTP/1.1 {status}\r\n\r\n".encode())

    async with RawServer(handler) as server:
        pool = new_pool()
        assert await get(pool, server.url) == (int(status[:3]), b"")
        assert await get(pool, server.url) == (int(status[:3]), b"")
        assert server.connections == 1
        await pool.close()


@on_uvloop
async def test_informational_answer_is_skipped() -> None:
    async def handler(ex: Exchange) -> None:
        await ex.request()
        ex.write(b"HTTP/1.1 100 Continue\r\n\r\n" + answer(b"real"))

    async with RawServer(handler) as server:
        pool = new_pool()
        assert await get(pool, server.url) == (200, b"real")
        await pool.close()


@on_uvloop
async def test_head_request_has_no_body() -> None:
    async def handler(ex: Exchange) -> None:
        await ex.request()
        ex.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
        await asyncio.sleep(10)

    async with RawServer(handler) as server:
        pool = new_pool()
        response = await pool.request("HEAD", server.url, headers={}, body=None, timeout=T)
        assert response.content_length == 1000
        assert await response.read(10) == b""
        response.release()
        await pool.close()


@on_uvloop
async def test_read_is_bounded() -> None:
    async def handler(ex: Exchange) -> None:
        while head := (await ex.request())[0]:
            if b"/declared" in head:
                ex.write(answer(b"x" * 5000))
            else:
                ex.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                for _ in range(100):
                    ex.write(b"3e8\r\n" + b"y" * 1000 + b"\r\n")
                ex.write(b"0\r\n\r\n")

    async with RawServer(handler) as server:
        pool = new_pool()
        for path in ("/declared", "/chunked"):
            response = await pool.request(
                "GET", server.url + path, headers={}, body=None, timeout=T
            )
            with pytest.raises(BodyTooLarge) as caught:
                await response.read(4096)
            assert caught.value.limit == 4096
        await pool.close()


@on_uvloop
async def test_reading_pauses_while_the_body_is_unread() -> None:
    size = 32 * 1024 * 1024
    sent = asyncio.Event()

    async def handler(ex: Exchange) -> None:
        await ex.request()
        ex.write(f"HTTP/1.1 200 OK\r\nContent-Length: {size}\r\n\r\n".encode())
        ex.write(b"z" * size)
        await ex.writer.drain()
        sent.set()

    async with RawServer(handler) as server:
        pool = new_pool()
        response = await pool.request("GET", server.url, headers={}, body=None, timeout=T)
        await asyncio.sleep(0.3)
        conn = response._conn
        assert conn.reading_paused
        assert conn.buffered < 2 * client.HIGH_WATER  # not the 32 MiB the server wrote
        assert not sent.is_set()  # the rest waits in the kernel and the server's buffer
        total = 0
        async for piece in response.chunks():
            total += len(piece)
        assert total == size
        assert not conn.reading_paused
        response.release()
        await pool.close()


# --- timeouts and cancellation -------------------------------------------------------------


def silent_handler(first: bytes = b"") -> object:
    async def handler(ex: Exchange) -> None:
        await ex.request()
        if first:
            ex.write(first)
        await asyncio.sleep(10)

    return handler


@on_uvloop
async def test_connect_timeout() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    try:
        for _ in range(3):  # fill the accept queue: further SYNs get no answer
            filler = socket.socket()
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(("127.0.0.1", port))
            fillers.append(filler)
        pool = new_pool()
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(TimeoutError):
            await get(pool, f"http://127.0.0.1:{port}", Timeout(total=5, connect=0.2))
        assert loop.time() - started < 4  # the connect timeout fired, not the total
        await pool.close()
    finally:
        for s in (*fillers, listener):
            s.close()


@on_uvloop
async def test_connection_refused_is_a_connect_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    pool = new_pool()
    with pytest.raises(ConnectError) as caught:
        await get(pool, f"http://127.0.0.1:{port}")
    assert caught.value.os_error.errno == errno.ECONNREFUSED
    await pool.close()


@pytest.mark.parametrize(
    ("first", "timeout"),
    [
        (b"", Timeout(total=5, connect=1, idle=0.2)),  # no head within idle
        (b"", Timeout(total=0.2, connect=1)),  # no head within total
        (b"HTTP/1.1 200 OK\r\nContent-Len", Timeout(total=5, connect=1, idle=0.2)),  # half a head
    ],
)
@on_uvloop
async def test_head_timeouts_close_the_connection(first: bytes, timeout: Timeout) -> None:
    async with RawServer(silent_handler(first)) as server:
        pool = new_pool(per_host=1)
        with pytest.raises(TimeoutError):
            await pool.request("GET", server.url, headers={}, body=None, timeout=timeout)
        assert await asyncio.wait_for(server.exchanges[0].closed_by_peer(), 2)
        await pool.close()


@on_uvloop
async def test_idle_gap_in_the_body_times_out() -> None:
    async with RawServer(
        silent_handler(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nab")
    ) as server:
        pool = new_pool(per_host=1)
        response = await pool.request(
            "GET", server.url, headers={}, body=None, timeout=Timeout(5, 1, 0.2)
        )
        with pytest.raises(TimeoutError):
            await response.read(100)
        assert await asyncio.wait_for(server.exchanges[0].closed_by_peer(), 2)
        await pool.close()


@on_uvloop
async def test_total_deadline_holds_against_a_trickle() -> None:
    async def handler(ex: Exchange) -> None:
        await ex.request()
        ex.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(200):
            ex.write(b"1\r\nx\r\n")
            await asyncio.sleep(0.02)

    async with RawServer(handler) as server:
        pool = new_pool()
        response = await pool.request(
            "GET", server.url, headers={}, body=None, timeout=Timeout(0.3, 1, 1)
        )
        with pytest.raises(TimeoutError):
            async for _ in response.chunks():
                pass
        await pool.close()


@pytest.mark.parametrize("stage", ["head", "body"])
@on_uvloop
async def test_cancellation_closes_the_connection_and_frees_its_place(stage: str) -> None:
    first = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nab" if stage == "body" else b""
    async with RawServer(silent_handler(first)) as server:
        pool = new_pool(per_host=1)

        async def caller() -> None:
            response = await pool.request("GET", server.url, headers={}, body=None, timeout=T)
            await response.read(100)

        task = asyncio.create_task(caller())
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await asyncio.wait_for(server.exchanges[0].closed_by_peer(), 2)
        host = pool._hosts[("http", "127.0.0.1", server.port)]
        assert (host.open, host.idle) == (0, [])
        await pool.close()


# --- bad answers ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b"HTTX/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",  # status line
        b"HTTP/1.1 200 OK\r\nBad Header: x\r\nContent-Length: 0\r\n\r\n",  # field name
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",  # duplicate CL
        b"HTTP/1.1 200 OK\r\nX: a\r\n folded\r\nContent-Length: 0\r\n\r\n",  # obs-fold
        b"HTTP/1.1 200 OK\nContent-Length: 0\n\n",  # bare LF
    ],
)
@on_uvloop
async def test_malformed_heads_are_invalid(raw: bytes) -> None:
    async with RawServer(silent_handler(raw)) as server:
        pool = new_pool()
        with pytest.raises(InvalidResponse):
            await get(pool, server.url)
        await pool.close()


@on_uvloop
async def test_bad_chunk_framing_is_invalid() -> None:
    raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\nzz\r\n"
    async with RawServer(silent_handler(raw)) as server:
        pool = new_pool()
        response = await pool.request("GET", server.url, headers={}, body=None, timeout=T)
        with pytest.raises(InvalidResponse):
            await response.read(100)
        await pool.close()


@pytest.mark.parametrize("end", [b"\r\nContent-Length: 0\r\n\r\n", b""])
@on_uvloop
async def test_head_over_64_kib_is_invalid(end: bytes) -> None:
    raw = b"HTTP/1.1 200 OK\r\n" + b"X-Big: " + b"a" * 70000 + end  # whole, or never ending
    async with RawServer(silent_handler(raw)) as server:
        pool = new_pool()
        with pytest.raises(InvalidResponse, match="head"):
            await get(pool, server.url)
        await pool.close()


@pytest.mark.parametrize(
    "raw",
    [
        b"",  # closed before answering
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort",  # mid-body, length
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",  # mid-body, chunked
    ],
)
@on_uvloop
async def test_backend_closing_early_is_server_disconnected(raw: bytes) -> None:
    async def handler(ex: Exchange) -> None:
        await ex.request()
        ex.write(raw)
        ex.close()

    async with RawServer(handler) as server:
        pool = new_pool()
        with pytest.raises(ServerDisconnected):
            await get(pool, server.url)
        await pool.close()


# --- TLS -----------------------------------------------------------------------------------


@pytest.fixture
def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    """A certificate for localhost and 127.0.0.1, and its key."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "1", "-subj", "/CN=localhost", "-addext",
         "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


@on_uvloop
async def test_https_with_a_trusted_self_signed_certificate(
    self_signed: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key = self_signed
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert, key)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        ex = Exchange(reader, writer)
        while (await ex.request())[0]:
            ex.write(answer(b"secure"))

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=server_context)
    port = server.sockets[0].getsockname()[1]
    try:
        untrusting = new_pool()
        with pytest.raises(ConnectError) as caught:
            await get(untrusting, f"https://localhost:{port}")
        assert isinstance(caught.value.os_error, ssl.SSLCertVerificationError)
        await untrusting.close()

        monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # read by create_default_context()
        pool = new_pool()
        assert await get(pool, f"https://localhost:{port}") == (200, b"secure")
        assert await get(pool, f"https://127.0.0.1:{port}") == (200, b"secure")
        await pool.close()
    finally:
        server.close()


# --- bookkeeping under load ----------------------------------------------------------------


@on_uvloop
async def test_pool_bookkeeping_holds_under_concurrency_cancellation_and_closing_answers() -> None:
    """Many callers over 4 connections: reused, error-closed, `Connection: close`d, unread,
    cancelled at random points. No caller hangs and every place is accounted for."""
    rng = random.Random(17)

    async def handler(ex: Exchange) -> None:
        while head := (await ex.request())[0]:
            await asyncio.sleep(rng.random() * 0.003)
            if b"/err" in head:
                ex.write(answer(b"bad", "500 Internal Server Error"))
            elif b"/close" in head:
                ex.write(answer(b"bye", extra="Connection: close\r\n"))
                ex.close()
                return
            elif b"/chunked" in head:
                ex.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                for _ in range(3):
                    ex.write(b"3\r\nabc\r\n")
                    await asyncio.sleep(0.001)
                ex.write(b"0\r\n\r\n")
            else:
                ex.write(answer(b"x" * rng.randint(0, 300_000)))

    async with RawServer(handler) as server:
        pool = new_pool(per_host=4)

        async def one(path: str, body: bytes, read: bool) -> None:
            response = await pool.request(
                "POST", server.url + path, headers={}, body=body, timeout=T
            )
            if read:
                async for _ in response.chunks():
                    pass
            response.release()

        outcomes: list[str] = []

        async def caller() -> None:
            path = rng.choice(["/ok", "/ok", "/err", "/close", "/chunked"])
            task = asyncio.create_task(
                one(path, b"y" * rng.randint(0, 100_000), rng.random() > 0.2)
            )
            if rng.random() < 0.2:
                await asyncio.sleep(rng.random() * 0.02)
                task.cancel()
            try:
                await task
                outcomes.append("ok")
            except asyncio.CancelledError:
                outcomes.append("cancelled")

        for _ in range(3):
            await asyncio.gather(*(caller() for _ in range(100)))
            host = pool._hosts[("http", "127.0.0.1", server.port)]
            assert host.waiters == collections.deque()
            assert host.open == len(host.idle) == len(pool._all) <= 4
        assert outcomes.count("ok") > 200  # no caller failed; the others were cancelled
        await pool.close()
