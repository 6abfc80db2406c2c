"""The backend client: pooled keep-alive HTTP/1.1 connections on asyncio protocols + httptools.

One `Pool` for all backends, at most `per_host` connections to each scheme/host/port; callers
beyond that wait in arrival order within their deadline. A connection goes back to the pool
only when its answer was read whole, keep-alive, with nothing extra on the socket and a status
below 400 (a backend that answers an error before reading our body may leave that body unread
on the connection, to be parsed as the next request).

The hot path is one `transport.write` for head and small body, one future per wait, no task
per request; body pieces are handed over as httptools delivers them, never re-buffered.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
from collections.abc import AsyncIterable, AsyncIterator, Callable, Mapping
from typing import NamedTuple
from urllib.parse import urlsplit

import httptools

from synapse.http.headers import Headers

MAX_HEAD = 64 * 1024  # status line + header fields of an answer
HIGH_WATER = 256 * 1024  # unread body bytes that pause reading from the socket
LOW_WATER = 64 * 1024  # ... and resume it
SMALL_BODY = 64 * 1024  # sent in the same write as the head
_FRAMING = frozenset({"host", "content-length", "transfer-encoding"})  # set by the client
_WITH_BODY = frozenset({"POST", "PUT", "PATCH"})
_NEVER = float("inf")
_BYTES = (bytes, bytearray, memoryview)


class Timeout(NamedTuple):
    total: float  # deadline for the whole exchange, from request() until the body is read
    connect: float  # TCP (+TLS) connect
    idle: float | None = None  # max gap between reads of the response (head included)


class SizedBody(NamedTuple):
    """A streamed request body of known length: sent under Content-Length, not chunked
    (some servers refuse chunked uploads). `open` gives its pieces from the start each time
    it is called, so a request on a pooled connection the backend had dropped is sent again
    on a fresh one (a plain async iterable is consumed once: that request fails instead)."""

    length: int
    open: Callable[[], AsyncIterable[bytes]]


DEADLINE_PASSED = "timeout: the answer's total deadline passed"


class ClientError(Exception):
    """A backend could not be reached or sent an unusable answer (timeouts: TimeoutError)."""


class ConnectError(ClientError):
    def __init__(self, os_error: OSError) -> None:
        super().__init__(f"cannot connect: {os_error}")
        self.os_error = os_error


class ServerDisconnected(ClientError):
    """The backend closed the connection before or while sending its answer."""


class InvalidResponse(ClientError):
    """The answer is not HTTP/1.1 as httptools reads it, or its head is too large."""


class BodyTooLarge(Exception):
    """The answer's body exceeds the caller's limit (not a backend failure as such)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"the answer exceeds {limit} bytes")
        self.limit = limit


def _expire(waiter: asyncio.Future[object]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


class _Target(NamedTuple):
    key: tuple[str, str, int]  # scheme, host, port: one connection pool each
    host_header: str
    path: str


class _Host:
    """The connections to one scheme/host/port: idle ones (LIFO), how many open, who waits."""

    __slots__ = ("heard", "idle", "key", "open", "waiters")

    def __init__(self, key: tuple[str, str, int]) -> None:
        self.key = key
        self.idle: list[_Connection] = []
        self.open = 0  # connected, connecting or handed to a waiter
        self.heard = float("-inf")  # loop time of the last bytes of an answer from this host
        self.waiters: collections.deque[asyncio.Future[_Connection | None]] = collections.deque()


class _Connection(asyncio.Protocol):
    """One socket to a backend and the state of the answer being read on it."""

    def __init__(self, pool: Pool, host: _Host) -> None:
        self.pool = pool
        self.host = host
        self.loop = pool.loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        # One lazily re-armed timer per connection: for the current wait's deadline, or for
        # the idle expiry while pooled. It is moved only when a deadline comes earlier.
        self.timer: asyncio.TimerHandle | None = None
        self.timer_when = _NEVER
        self.expires = _NEVER
        self.waiter: asyncio.Future[None] | None = None
        self.write_paused = False
        self.reading_paused = False
        self.busy = False  # a request is in flight; bytes at other times are unsolicited
        self.used = False  # has carried a request before
        self.buffer: collections.deque[bytes] = collections.deque()  # empty between answers
        self.reset(head=False)

    def reset(self, *, head: bool) -> None:
        self.head_request = head
        self.head_bytes = 0  # status line and fields parsed so far
        self.data_bytes = 0  # bytes received while the head was incomplete
        self.status = 0
        self.reason = ""
        self.fields: list[tuple[str, str]] = []
        self.length: int | None = None
        self.chunked = False
        self.head_done = False
        self.complete = False
        self.keep_alive = False
        self.clean = True
        self.error: ClientError | None = None
        self.buffered = 0

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if not self.busy or self.complete:
            self.clean = False  # unsolicited bytes: this connection cannot carry another request
            self.close()
            return
        try:
            self.parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            if not self.complete:
                # a 101 (llhttp stops at it): we never ask to switch protocols
                why = "101 not asked for" if isinstance(exc, httptools.HttpParserUpgrade) else exc
                self.error = InvalidResponse(f"invalid answer: {why}")
            self.clean = False
            self.close()
            self.wake()
            return
        self.host.heard = self.loop.time()
        if not self.head_done:
            self.data_bytes += len(data)
            if self.data_bytes > MAX_HEAD:  # still no end of head
                self.head_too_large()
        elif self.buffered > HIGH_WATER and not self.reading_paused and not self.closed:
            self.reading_paused = True
            self.transport.pause_reading()  # type: ignore[union-attr]
        self.wake()

    def eof_received(self) -> bool:
        self.ended()
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.ended()
        self.write_paused = False
        self.forget()
        self.wake()

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        self.wake()

    # httptools callbacks

    def on_message_begin(self) -> None:
        if self.complete:  # a second answer to one request: parse none of it
            raise InvalidResponse("bytes after the answer")

    def on_status(self, status: bytes) -> None:
        self.reason += status.decode("latin-1")

    def on_header(self, name: bytes, value: bytes) -> None:
        self.head_bytes += len(name) + len(value) + 4
        if self.head_bytes > MAX_HEAD:
            self.head_too_large()
        self.fields.append((name.decode("latin-1"), value.decode("latin-1")))
        size = len(name)
        if size == 14 and name.lower() == b"content-length":
            self.length = int(value)  # llhttp has checked the digits and refused duplicates
        elif size == 17 and name.lower() == b"transfer-encoding":
            self.chunked = value.rstrip().lower().endswith(b"chunked")

    def on_headers_complete(self) -> None:
        if self.error is not None:
            return  # head too large
        status = self.parser.get_status_code()
        if 100 <= status < 200:  # informational: the real answer follows
            self.reason, self.fields, self.length, self.chunked = "", [], None, False
            return
        self.status = status
        self.head_done = True
        self.keep_alive = self.parser.should_keep_alive()
        if self.chunked:
            self.length = None
        if self.head_request:  # llhttp cannot know the answer has no body: not reusable
            self.complete = True
            self.keep_alive = False

    def on_body(self, body: bytes) -> None:
        if not self.complete:
            self.buffer.append(body)
            self.buffered += len(body)

    def on_message_complete(self) -> None:
        if self.head_done:
            self.complete = True

    # state changes

    def head_too_large(self) -> None:
        if self.error is None:
            self.error = InvalidResponse(f"answer head over {MAX_HEAD} bytes")
        self.close()

    def ended(self) -> None:
        """The peer closed: the end of a close-delimited body, or an answer cut short."""
        if self.complete or self.error is not None:
            return
        if self.head_done and self.length is None and not self.chunked:
            self.complete = True  # close-delimited: httptools cannot be told about EOF
            self.keep_alive = False
        elif self.busy:
            self.error = ServerDisconnected(
                "connection closed by the backend"
                + (" mid-answer" if self.head_done else " before answering")
            )

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.keep_alive = False
            if self.transport is not None:
                self.transport.close()
            if self.timer is not None:
                self.timer.cancel()
                self.timer = None
            self.forget()

    def forget(self) -> None:
        """Give back this connection's place in its host's count, exactly once."""
        if self.pool is not None:
            pool, self.pool = self.pool, None  # type: ignore[assignment]
            self.closed = True
            pool.forget(self)

    def arm(self, when: float) -> None:
        """Have `on_timer` run at `when` or earlier."""
        self.expires = when
        if when < self.timer_when:
            if self.timer is not None:
                self.timer.cancel()
            self.timer = self.loop.call_at(when, self.on_timer)
            self.timer_when = when

    def on_timer(self) -> None:
        self.timer, self.timer_when = None, _NEVER
        if self.closed or self.expires == _NEVER:
            return
        if self.loop.time() < self.expires:  # the deadline moved on since the timer was set
            self.arm(self.expires)
        elif self.waiter is not None:
            _expire(self.waiter)
        elif not self.busy:
            self.close()  # idle for idle_expiry

    async def wait(self, deadline: float, idle: float | None) -> None:
        """Until something happens on the socket, or raise TimeoutError."""
        loop = self.loop
        self.arm(deadline if idle is None else min(deadline, loop.time() + idle))
        waiter = self.waiter = loop.create_future()
        try:
            await waiter
        except TimeoutError:
            if loop.time() >= deadline:
                raise TimeoutError(DEADLINE_PASSED) from None
            raise TimeoutError("idle timeout: no data within the idle gap") from None
        finally:
            self.waiter = None
            self.expires = _NEVER

    def take(self) -> bytes:
        chunk = self.buffer.popleft()
        self.buffered -= len(chunk)
        if self.reading_paused and self.buffered <= LOW_WATER and not self.closed:
            self.reading_paused = False
            self.transport.resume_reading()  # type: ignore[union-attr]
        return chunk

    async def drain(self, deadline: float) -> None:
        """Until the transport takes more, or the answer starts early."""
        while self.write_paused and not self.head_done and self.error is None:
            await self.wait(deadline, None)
        if self.error is not None:
            raise self.error

    async def next_chunk(self, deadline: float, idle: float | None) -> bytes:
        """The next piece of the answer. The deadline holds whatever the pace: it is checked
        for every piece, not only when a wait is needed (a backend that always has the next
        piece ready would otherwise never meet it), unless the answer is whole already."""
        while True:
            if self.buffer:
                if not self.complete and self.loop.time() >= deadline:
                    raise TimeoutError(DEADLINE_PASSED)
                return self.take()
            if self.error is not None:
                raise self.error
            if self.complete:
                return b""
            await self.wait(deadline, idle)


class _Done:
    """Stands in for a connection gone back to the pool: its answer was read whole, and
    whatever it carries next belongs to another request."""

    complete = True
    closed = True
    buffer = ()

    async def next_chunk(self, deadline: float, idle: float | None) -> bytes:
        return b""

    def close(self) -> None:
        pass


_DONE = _Done()


class Response:
    """An answer whose body is read on demand; `release` or `close` it when done."""

    __slots__ = (
        "_conn",
        "_deadline",
        "_idle",
        "_released",
        "content_length",
        "headers",
        "reason",
        "status",
    )

    def __init__(self, conn: _Connection, deadline: float, idle: float | None) -> None:
        self._conn: _Connection | _Done = conn
        self._deadline = deadline
        self._idle = idle
        self._released = False
        self.status = conn.status
        self.reason = conn.reason
        self.headers = Headers(conn.fields)
        self.content_length = conn.length

    def at_eof(self) -> bool:
        conn = self._conn
        return conn.complete and not conn.buffer

    async def read(self, limit: int) -> bytes:
        """The whole body; BodyTooLarge past `limit` bytes (counted as they arrive)."""
        conn = self._conn
        try:
            length = self.content_length
            if length is not None and length > limit and not conn.complete:
                raise BodyTooLarge(limit)
            parts: list[bytes] = []
            size = 0
            while chunk := await conn.next_chunk(self._deadline, self._idle):
                size += len(chunk)
                if size > limit:
                    raise BodyTooLarge(limit)
                parts.append(chunk)
        except BaseException:
            self.close()
            raise
        return parts[0] if len(parts) == 1 else b"".join(parts)

    async def read_some(self, n: int) -> bytes:
        """Up to `n` bytes of the body (b"" at its end): enough for an error's detail."""
        conn = self._conn
        try:
            chunk = await conn.next_chunk(self._deadline, self._idle)
        except BaseException:
            self.close()
            raise
        if len(chunk) > n:
            conn.buffer.appendleft(chunk[n:])  # type: ignore[union-attr]
            conn.buffered += len(chunk) - n
            chunk = chunk[:n]
        return chunk

    def chunks(self) -> AsyncIterator[bytes]:
        """The body's pieces as they arrive."""
        return _Chunks(self)

    def release(self) -> None:
        """Back to the pool if clean and complete, else closed."""
        if self._released:
            return
        self._released = True
        conn = self._conn
        if (
            conn.complete
            and not conn.buffer
            and conn.keep_alive
            and conn.clean
            and conn.error is None
            and self.status < 400
            and not conn.closed
        ):
            conn.busy = False
            self._conn = _DONE
            conn.pool.put(conn)
        else:
            conn.close()

    def close(self) -> None:
        """Drop the connection: the backend sees it and stops generating."""
        self._released = True
        self._conn.close()

    def __del__(self) -> None:
        conn = self._conn
        if not self._released and not conn.closed and not conn.loop.is_closed():
            conn.close()  # never handed back: do not hold the host's place forever


class _Chunks:
    __slots__ = ("_response",)

    def __init__(self, response: Response) -> None:
        self._response = response

    def __aiter__(self) -> _Chunks:
        return self

    async def __anext__(self) -> bytes:
        response = self._response
        try:
            chunk = await response._conn.next_chunk(response._deadline, response._idle)
        except BaseException:
            response.close()
            raise
        if not chunk:
            raise StopAsyncIteration
        return chunk


class Pool:
    """Keep-alive connections to every backend, at most `per_host` to each."""

    def __init__(self, *, per_host: int, connect_timeout: float, idle_expiry: float = 60.0) -> None:
        if per_host < 1:
            raise ValueError("per_host must be at least 1")
        self.per_host = per_host
        self.connect_timeout = connect_timeout
        self.idle_expiry = idle_expiry
        self.loop = asyncio.get_running_loop()
        self._hosts: dict[tuple[str, str, int], _Host] = {}
        self._targets: dict[str, _Target] = {}
        self._all: set[_Connection] = set()
        self._ssl: ssl.SSLContext | None = None
        self._closed = False

    async def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | list[tuple[str, str]],
        body: bytes | AsyncIterable[bytes] | SizedBody | None,
        timeout: Timeout,
    ) -> Response:
        """Send a request; the answer's head has arrived when this returns."""
        loop = self.loop
        deadline = loop.time() + timeout.total
        target = self._target(url)
        head = _head(method, target, headers, body)
        while True:
            conn = await self._acquire(target.key, deadline, timeout.connect)
            reused, conn.used = conn.used, True
            try:
                await _exchange(conn, method, head, body, deadline, timeout.idle)
            except ServerDisconnected:
                conn.close()
                if reused and not conn.data_bytes and not isinstance(body, AsyncIterable):
                    continue  # closed as it went idle, before reading us: try a fresh one
                raise
            except BaseException:
                conn.close()
                raise
            return Response(conn, deadline, timeout.idle)

    async def close(self) -> None:
        """Close every connection, idle or in use; waiters get a ClientError."""
        self._closed = True
        for host in self._hosts.values():
            while host.waiters:
                waiter = host.waiters.popleft()
                if not waiter.done():
                    waiter.set_exception(ClientError("the connection pool is closed"))
        for conn in list(self._all):
            conn.close()
        await asyncio.sleep(0)  # let the transports run their close callbacks

    # pool bookkeeping

    def heard_since(self, since: float) -> set[str]:
        """The "host:port"s that sent bytes of an answer at or after `since` (loop time): a
        stream in progress shows its server is answering, however long ago its head came."""
        return {f"{h.key[1]}:{h.key[2]}" for h in self._hosts.values() if h.heard >= since}

    def _target(self, url: str) -> _Target:
        target = self._targets.get(url)
        if target is None:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"not an http(s) URL: {url!r}")
            port = parts.port or (443 if parts.scheme == "https" else 80)
            netloc = parts.netloc.rpartition("@")[2]
            path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            target = _Target((parts.scheme, parts.hostname, port), netloc, path)
            if len(self._targets) >= 1024:  # URLs with query strings could grow it forever
                self._targets.clear()
            self._targets[url] = target
        return target

    async def _acquire(
        self, key: tuple[str, str, int], deadline: float, connect: float
    ) -> _Connection:
        if self._closed:
            raise ClientError("the connection pool is closed")
        host = self._hosts.get(key)
        if host is None:
            host = self._hosts[key] = _Host(key)
        while True:
            while host.idle:
                conn = host.idle.pop()
                conn.expires = _NEVER
                if not conn.closed:
                    return conn
            if host.open < self.per_host:
                host.open += 1
                return await self._connect(host, deadline, connect)
            conn = await self._wait_turn(host, deadline)
            if conn is None:  # a place freed up, reserved for us
                return await self._connect(host, deadline, connect)
            if not conn.closed:
                return conn

    async def _wait_turn(self, host: _Host, deadline: float) -> _Connection | None:
        waiter: asyncio.Future[_Connection | None] = self.loop.create_future()
        host.waiters.append(waiter)
        timer = self.loop.call_at(deadline, _expire, waiter)
        try:
            return await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                handed = waiter.result()  # handed over just before we were cancelled
                if handed is None:
                    self._free_place(host)
                else:
                    self.put(handed)
            else:
                if waiter in host.waiters:
                    host.waiters.remove(waiter)
            raise
        finally:
            timer.cancel()

    async def _connect(self, host: _Host, deadline: float, connect: float) -> _Connection:
        scheme, hostname, port = host.key
        conn = _Connection(self, host)
        context = None
        if scheme == "https":
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            context = self._ssl
        try:
            async with asyncio.timeout_at(min(deadline, self.loop.time() + connect)):
                await self.loop.create_connection(
                    lambda: conn, hostname, port, ssl=context, server_hostname=context and hostname
                )
        except TimeoutError:
            conn.forget()
            raise
        except OSError as exc:
            conn.forget()
            raise ConnectError(exc) from exc
        except BaseException:
            conn.forget()
            raise
        if self._closed:
            conn.close()
            raise ClientError("the connection pool is closed")
        self._all.add(conn)
        return conn

    def put(self, conn: _Connection) -> None:
        """A clean connection back: to the first waiter, else on top of the idle stack."""
        host = conn.host
        while host.waiters:
            waiter = host.waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        host.idle.append(conn)
        conn.arm(self.loop.time() + self.idle_expiry)

    def forget(self, conn: _Connection) -> None:
        """A connection closed (by us or the peer): its place goes to the first waiter."""
        self._all.discard(conn)
        host = conn.host
        if conn in host.idle:
            host.idle.remove(conn)
        self._free_place(host)

    def _free_place(self, host: _Host) -> None:
        while host.waiters:
            waiter = host.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the place stays counted, now the waiter's
                return
        host.open -= 1


async def _exchange(
    conn: _Connection,
    method: str,
    head: bytes,
    body: bytes | AsyncIterable[bytes] | None,
    deadline: float,
    idle: float | None,
) -> None:
    """Send the request on `conn` and wait for the answer's head."""
    conn.reset(head=method == "HEAD")
    conn.busy = True
    transport = conn.transport
    if body is None or isinstance(body, _BYTES):
        if body and len(body) > SMALL_BODY:
            transport.write(head)  # type: ignore[union-attr]
            transport.write(body)  # type: ignore[union-attr]
        else:
            transport.write(head + body if body else head)  # type: ignore[union-attr]
        if conn.write_paused:
            await conn.drain(deadline)
    else:
        transport.write(head)  # type: ignore[union-attr]
        await _send_chunked(conn, body, deadline)
    if conn.head_done and conn.write_paused:
        conn.clean = False  # answered before our body was sent
    while not conn.head_done and conn.error is None:
        await conn.wait(deadline, idle)
    if not conn.head_done:
        raise conn.error  # type: ignore[misc]


def _head(
    method: str,
    target: _Target,
    headers: Mapping[str, str] | list[tuple[str, str]],
    body: bytes | AsyncIterable[bytes] | SizedBody | None,
) -> bytes:
    """The request head, refusing framing headers from the caller and CR/LF in any field."""
    items = headers.items() if isinstance(headers, Mapping) else headers
    lines = [f"{method} {target.path} HTTP/1.1\r\nHost: {target.host_header}\r\n"]
    for name, value in items:
        if name.lower() in _FRAMING:
            raise ValueError(f"the client sets {name} itself")
        lines.append(f"{name}: {value}\r\n")
    if body is None:
        if method in _WITH_BODY:
            lines.append("Content-Length: 0\r\n")
    elif isinstance(body, _BYTES):
        lines.append(f"Content-Length: {len(body)}\r\n")
    elif isinstance(body, SizedBody):
        lines.append(f"Content-Length: {body.length}\r\n")
    else:
        lines.append("Transfer-Encoding: chunked\r\n")
    lines.append("\r\n")
    head = "".join(lines)
    if head.count("\n") != len(lines) + 1 or head.count("\r") != len(lines) + 1:
        raise ValueError("CR or LF in a request line or header field")
    return head.encode("utf-8")


async def _send_chunked(
    conn: _Connection, body: AsyncIterable[bytes] | SizedBody, deadline: float
) -> None:
    """Stream `body` (chunked, or as is under its Content-Length); stop early if the backend
    already answered."""
    transport = conn.transport
    sized = isinstance(body, SizedBody)
    sent = 0
    async with asyncio.timeout_at(deadline):
        async for piece in body.open() if sized else body:  # type: ignore[union-attr]
            if conn.head_done or conn.error is not None or conn.closed:
                conn.clean = False  # answered (or gone) before reading all we had to send
                return
            if piece:
                sent += len(piece)
                if sized:
                    transport.write(piece)  # type: ignore[union-attr]
                else:
                    transport.writelines((b"%x\r\n" % len(piece), piece, b"\r\n"))  # type: ignore[union-attr]
                if conn.write_paused:
                    await conn.drain(deadline)
        if sized:
            if sent != body.length:  # type: ignore[union-attr]
                raise ValueError(f"body of {sent} bytes sent under Content-Length {body.length}")  # type: ignore[union-attr]
            return
        transport.write(b"0\r\n\r\n")  # type: ignore[union-attr]
        if conn.write_paused:
            await conn.drain(deadline)
