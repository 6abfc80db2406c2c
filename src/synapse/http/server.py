"""The server side: one `Connection` (an asyncio Protocol) per client, httptools parsing.

Requests on a connection are answered in order (pipelining); each is handed to the app as a
`Request` whose body arrives while the handler runs. What the framing layer refuses itself
(a head it cannot parse, too large, or too slow) is answered here, in JSON, naming only the
kind of error, and the connection is closed: bytes after a bad request are never parsed.

Rules, all tested in tests/gateway/test_http_*.py:
* llhttp in strict mode refuses CL+TE, repeated Content-Length, obs-fold, bare LF, bad chunk
  sizes; a transfer coding other than `chunked` is a 501, an HTTP version other than 1.x a 505.
* A head must arrive whole within `header_read_timeout` of its first byte; an idle
  connection is closed after `keepalive_timeout`.
* RFC 9112: an HTTP/1.1 request without Host, or any with two, is a 400; an absolute-form
  target (`POST http://host/v1/...`) is routed by its path, its authority taking Host's place;
  a request that ends the connection (HTTP/1.0 with Transfer-Encoding, `Connection: close`)
  is the last one parsed; an `Upgrade` (unsupported) is ignored and the body read as framed.
* A body is read only when the handler asks for it (`Expect: 100-continue` answered then); a
  response given before the body was whole closes the connection after it.
* A connection's unsent output is bounded: past `OUTPUT_HIGH_WATER` its next request waits
  until the client reads; a client that takes nothing for `write_timeout`, or leaves output
  unsent past `keepalive_timeout`, is cut off (abort: no close waits on it).
* A client leaving (or half-closing: a FIN looks the same) cancels its handler, and the
  backend request with it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import fcntl
import logging
import socket
import struct
import sys
import termios
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus
from typing import Any

import httptools

from synapse.http.headers import Headers
from synapse.http.message import BODY_HIGH_WATER, Body, BodyError, Request, Response, StreamResponse

App = Callable[[Request], Awaitable[Response | StreamResponse]]
# What the framing layer refused: (status, message); the app writes its log line and body.
FramingError = Callable[[int, str], Response]

log = logging.getLogger("synapse")
MAX_TARGET = 8 * 1024
MAX_HEAD = 64 * 1024
MAX_FIELDS = 100
MAX_PIPELINED = 16
# Unsent output per connection before its next request waits for the client to read (the
# transport's pause_writing mark; it resumes below a quarter of it). One answer can exceed it:
# whole answers are bounded by their own limits, streams wait on every write.
OUTPUT_HIGH_WATER = 64 * 1024
_PHRASES = {s.value: s.phrase.encode() for s in HTTPStatus}
_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() resets, dropping unsent bytes


@dataclass(slots=True)
class Limits:
    header_read_timeout: float = 10.0
    keepalive_timeout: float = 120.0


class _Date:
    """The Date header, formatted once a second."""

    second = 0
    value = b""

    @classmethod
    def now(cls) -> bytes:
        second = int(time.time())
        if second != cls.second:
            cls.second, cls.value = second, formatdate(second, usegmt=True).encode()
        return cls.value


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _LastRequest(Exception):
    """Raised after a request that ends the connection: llhttp parses nothing after it."""


# How often, per write_timeout, a client holding our output is checked for taking some of it.
CHECKS_PER_TIMEOUT = 4


def _unsent(transport: asyncio.Transport) -> int:
    """Our output the client has not taken yet: the transport's buffer and the kernel's send
    queue (SIOCOUTQ). The buffer alone moves only once a third of a multi-megabyte kernel
    queue has been read, so a slow but steady reader would look stalled."""
    unsent = transport.get_write_buffer_size()
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError, ValueError):
            queued = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
            unsent += int.from_bytes(queued, sys.byteorder)
    return unsent


class Connection(asyncio.Protocol):
    """One client connection: parse, queue, hand to the app in order, write the answers."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.app: Any = server.app
        self.loop = server.loop
        self.limits = server.limits
        self.transport: asyncio.Transport | None = None
        self._parser = httptools.HttpRequestParser(self)
        # the request being parsed
        self._target = bytearray()
        self._fields: list[tuple[str, str]] = []
        self._head_size = 0
        self._hosts = 0  # Host fields in the head being parsed
        self._upgrade = False  # llhttp will stop after this head (Upgrade): see _ignore_upgrade
        self._priming = False  # a fresh parser reads a made-up head: no request of its own
        self._in_head = False  # a message began and its head is not complete
        self._head_bytes = 0  # bytes of the head in progress received so far
        self._head_start = 0  # where in the current read it began (bytes of earlier messages)
        self._accounted = 0  # bytes of the current read that earlier messages account for
        self._parsing: Request | None = None
        # requests parsed and waiting, and the task answering them
        self._queue: collections.deque[Request | _Refused] = collections.deque()
        self._task: asyncio.Task[None] | None = None
        self._current: Request | None = None
        self._more: asyncio.Future[None] | None = None  # set when a request is queued
        self._head_timer: asyncio.TimerHandle | None = None
        self._idle_timer: asyncio.TimerHandle | None = None
        self._reading = True
        self._broken = False  # a framing error: parse nothing more
        self._close_after = False
        self._write_paused: asyncio.Future[None] | None = None
        self._lost = False

    # -- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.transport.set_write_buffer_limits(high=OUTPUT_HIGH_WATER)
        self.server.connections.add(self)
        self._arm_idle()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._lost = True
        self.server.connections.discard(self)
        self._cancel_timers()
        if self._parsing is not None:
            self._parsing.body.fail(BodyError("the client closed the connection"))
        for item in self._queue:
            if isinstance(item, Request):
                item.body.fail(BodyError("the client closed the connection"))
        if self._write_paused is not None and not self._write_paused.done():
            self._write_paused.set_result(None)  # drain() sees _lost and raises
        if self._task is not None and not self._task.done():
            self._task.cancel()  # the client left: its handler (and backend request) stops

    def eof_received(self) -> bool:
        """The client closed its side: it is gone (a FIN looks the same whether it will still
        read or not). As nginx, Go and aiohttp do, its handler is cancelled, so the backend
        stops generating for nobody; the transport closes (connection_lost)."""
        return False

    def pause_writing(self) -> None:
        if self._write_paused is None or self._write_paused.done():
            self._write_paused = self.loop.create_future()

    def resume_writing(self) -> None:
        if self._write_paused is not None and not self._write_paused.done():
            self._write_paused.set_result(None)
        self._write_paused = None

    def data_received(self, data: bytes | memoryview) -> None:
        while data and not self._broken:
            data = self._parse(data)

    def _parse(self, data: bytes | memoryview) -> bytes | memoryview:
        """Feed `data` to the parser; what follows an ignored upgrade's head is returned, to be
        parsed in turn (a loop, not recursion: a read may hold many such requests)."""
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        began_before = self._in_head
        if began_before:
            # httptools holds an unfinished field whole: bound the head as it arrives
            self._head_bytes += len(data)
        elif self._head_timer is None and self._parsing is None:
            # bytes between requests start the head clock, even those (blank lines) that
            # llhttp skips without beginning a message
            self._head_timer = self.loop.call_later(
                self.limits.header_read_timeout, self._head_late
            )
        self._accounted = 0
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            if not self._upgrade:  # CONNECT: answered (404), then closed
                self._close_after = True
                self._stop_parsing()
                return b""
            self._ignore_upgrade()
            return memoryview(data)[exc.args[0] :]  # no copy: a read may hold thousands
        except httptools.HttpParserCallbackError as exc:
            refused = exc.__context__
            if isinstance(refused, _LastRequest):
                self._broken = True  # still read, so a client leaving is seen, but parse no more
                return b""
            if not isinstance(refused, _Refused):
                raise
            self._refuse(refused.status, refused.message)
            return b""
        except httptools.HttpParserInvalidMethodError:
            self._refuse(400, "malformed HTTP request (invalid method)")
            return b""
        except httptools.HttpParserError as exc:
            reason = _parse_error(exc)
            if reason.startswith("Invalid HTTP version"):
                self._refuse(505, "HTTP version not supported; use HTTP/1.1")
            else:
                self._refuse(400, f"malformed HTTP request ({reason})")
            return b""
        if self._in_head and not began_before:  # began in this read: not its earlier bytes
            self._head_bytes = len(data) - self._head_start
        if self._in_head and self._head_bytes > MAX_TARGET + MAX_HEAD:
            self._refuse(431, f"request head larger than {MAX_HEAD} bytes")
        return b""

    def _ignore_upgrade(self) -> None:
        """llhttp stops after the head of a request asking to upgrade, its body unread. Upgrades
        are not supported (RFC 9110: a server may ignore one), so the body is read as its head
        frames it: a fresh parser is primed with a head of the same framing, then fed the rest.
        """
        self._upgrade = False
        request = self._parsing
        assert request is not None
        if request.headers.get("Transfer-Encoding") is not None:  # only chunked gets this far
            framing = b"Transfer-Encoding: chunked"
        else:
            framing = b"Content-Length: %d" % (request.content_length or 0)
        self._parser = httptools.HttpRequestParser(self)
        self._priming = True
        try:
            self._parser.feed_data(b"PUT / HTTP/1.1\r\n%b\r\n\r\n" % framing)
        except httptools.HttpParserCallbackError:  # _LastRequest: no body, Connection: close
            self._broken = True
        finally:
            self._priming = False

    # -- httptools callbacks ---------------------------------------------------------------
    def on_message_begin(self) -> None:
        if self._priming:
            return
        self._target.clear()
        self._fields = []
        self._head_size = 0
        self._hosts = 0
        self._in_head = True
        self._head_bytes = 0
        self._head_start = self._accounted
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(
                self.limits.header_read_timeout, self._head_late
            )

    def on_url(self, url: bytes) -> None:
        if self._priming:
            return
        self._target += url
        if len(self._target) > MAX_TARGET:
            raise _Refused(414, f"request target longer than {MAX_TARGET} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._priming:
            return
        self._head_size += len(name) + len(value) + 4
        if self._head_size > MAX_HEAD:
            raise _Refused(431, f"request head larger than {MAX_HEAD} bytes")
        if len(self._fields) >= MAX_FIELDS:
            raise _Refused(431, f"more than {MAX_FIELDS} header fields")
        if len(name) == 4 and name.lower() == b"host":
            self._hosts += 1
        self._fields.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        if self._priming:
            return
        self._in_head = False
        self._accounted += self._head_size + len(self._target) + 16
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        parser = self._parser
        version = parser.get_http_version()
        if version not in ("1.1", "1.0"):
            raise _Refused(505, f"HTTP/{version} is not supported; use HTTP/1.1")
        if self._hosts > 1 or (self._hosts == 0 and version == "1.1"):
            raise _Refused(400, "an HTTP/1.1 request needs exactly one Host header field")
        target = self._target.decode("latin-1")
        if target[:1] != "/":
            target = self._origin_form(target)
        headers = Headers(self._fields)
        coding = headers.get("Transfer-Encoding")
        if coding is not None and coding.strip().lower() != "chunked":
            raise _Refused(501, "the only transfer coding accepted is chunked")
        expect = (headers.get("Expect") or "").strip().lower() == "100-continue"
        method = parser.get_method().decode("ascii")
        request = Request(
            self,
            method,
            target,
            version,
            headers,
            # RFC 9112 6.1: HTTP/1.0 with Transfer-Encoding has faulty framing: close after it
            parser.should_keep_alive() and not (coding is not None and version == "1.0"),
            Body(self, expect_continue=expect and version == "1.1"),
        )
        self._upgrade = parser.should_upgrade() and method != "CONNECT"
        self._parsing = request
        self._queue.append(request)
        if len(self._queue) > MAX_PIPELINED:
            self._pause()
        self._wake()

    def on_body(self, data: bytes) -> None:
        self._accounted += len(data)
        request = self._parsing
        if request is not None:
            request.body.feed(data)
            if request.body.buffered() > BODY_HIGH_WATER:
                self._pause()

    def on_message_complete(self) -> None:
        request = self._parsing
        if request is None or self._upgrade:  # an upgrade's body is still to come
            return
        request.body.finish()
        self._parsing = None
        if not request.keep_alive:
            raise _LastRequest

    def _origin_form(self, target: str) -> str:
        """RFC 9112 3.2.2: an absolute-form target is accepted; its path is the route, and its
        authority replaces Host. Any other form is left as is (no route matches it: 404)."""
        scheme, sep, rest = target.partition("://")
        if not sep or scheme.lower() not in ("http", "https"):
            return target
        cut = next((i for i, c in enumerate(rest) if c in "/?"), len(rest))
        authority, path = rest[:cut], rest[cut:]
        self._fields = [(n, v) for n, v in self._fields if n.lower() != "host"]
        self._fields.append(("Host", authority))
        return path if path.startswith("/") else "/" + path

    # -- answering ---------------------------------------------------------------------------
    async def _answer(self) -> None:
        """Answer queued requests in order; between them, wait for the next (one task per
        connection, not per request). Ends when the connection does."""
        try:
            while not self._lost:
                if not self._queue:
                    self._arm_idle()
                    self._more = self.loop.create_future()
                    await self._more
                    continue
                item = self._queue.popleft()
                if len(self._queue) <= MAX_PIPELINED:
                    self.want_body()
                if isinstance(item, _Refused):
                    self._write_response(None, self.server.refused(item.status, item.message))
                    self._close()
                    return
                self._current = item
                try:
                    response = await self.app(item)
                except Exception:  # the app answers every error itself; this is a bug
                    log.exception("unhandled error in the app")
                    if not self._lost:
                        self._close_after = True
                        self._write_response(item, self.server.refused(500, "internal error"))
                    self._close()
                    return
                self._current = None
                if self._lost:
                    return
                if not response.prepared:
                    self._write_response(item, response)
                elif not getattr(response, "ended", True):
                    self._close()  # a stream cut before its end: visibly incomplete
                    return
                if not await self._flushed():
                    self._abort()  # the client takes nothing: drop what it left unread
                    return
                if self._must_close(item):
                    self._close()
                    return
        finally:
            self._task = None
            self._current = None

    def _wake(self) -> None:
        """A request (or a refusal) was queued: start or wake the answering task."""
        if self._task is None:
            self._task = self.loop.create_task(self._answer())
        elif self._more is not None and not self._more.done():
            self._more.set_result(None)

    def _must_close(self, request: Request) -> bool:
        return (
            self._close_after
            or not request.keep_alive
            or not request.body.complete  # the rest of its body would be read as a request
            or self.server.closing
        )

    def _write_response(self, request: Request | None, response: Response) -> None:
        body = response.body
        headers = response.headers
        if response.status in (204, 304):  # no body, and no Content-Length to announce one
            body = b""
        else:
            headers["Content-Length"] = str(len(body))
        if request is not None and request.method == "HEAD":
            body = b""
        self.write_head(request, response.status, headers, body)

    def write_head(
        self, request: Request | None, status: int, headers: dict[str, str], body: bytes = b""
    ) -> None:
        """The status line and headers, and `body` in the same write (one syscall)."""
        close = request is None or self._must_close(request)
        lines = [
            b"HTTP/1.1 %d %b\r\nServer: synapse\r\nDate: %b\r\n"
            % (status, _PHRASES.get(status, b"Unknown"), _Date.now())
        ]
        if request is not None and request.reply_headers:
            headers = {**request.reply_headers, **headers}
        lines.extend(f"{k}: {v}\r\n".encode("latin-1") for k, v in headers.items())
        if close:
            lines.append(b"Connection: close\r\n")
        elif request is not None and request.version == "1.0":
            lines.append(b"Connection: keep-alive\r\n")
        lines.append(b"\r\n")
        if body:
            lines.append(body)
        self.write(b"".join(lines))

    def write(self, data: bytes) -> None:
        """Hand bytes to the transport; a closed one drops them (the handler was cancelled,
        or is told by `drain`)."""
        transport = self.transport
        if transport is not None and not self._lost:
            transport.write(data)

    async def drain(self) -> None:
        if self._lost:
            raise ConnectionResetError("the client closed the connection")
        waiter = self._write_paused
        if waiter is not None:
            await asyncio.shield(waiter)
            if self._lost:
                raise ConnectionResetError("the client closed the connection")

    async def _flushed(self) -> bool:
        """Until the client has read our output down to the low-water mark (at once, usually):
        the next request is served only then. False if it took none of it for `write_timeout`
        (a slow reader of a large answer keeps going while it reads), or left."""
        transport = self.transport
        if self._write_paused is None or transport is None:
            return not self._lost  # the usual case: nothing to wait for, no timer
        timeout = self.server.write_timeout()
        left, taken_at = _unsent(transport), self.loop.time()
        while True:
            try:
                async with asyncio.timeout(timeout / CHECKS_PER_TIMEOUT):
                    await self.drain()
            except ConnectionError:
                return False
            except TimeoutError:
                if (now := _unsent(transport)) < left:
                    left, taken_at = now, self.loop.time()
                elif self._lost or self.loop.time() - taken_at >= timeout:
                    return False
            else:
                return True

    def close_after_response(self) -> None:
        self._close_after = True

    # -- flow control and timers -------------------------------------------------------------
    def _pause(self) -> None:
        if self._reading and self.transport is not None:
            self._reading = False
            self.transport.pause_reading()

    def want_body(self) -> None:
        """The handler consumed body bytes or started a request: read on, within bounds."""
        if self._reading or self._broken or self.transport is None:
            return
        parsing = self._parsing
        if len(self._queue) > MAX_PIPELINED:
            return
        if parsing is not None and parsing.body.buffered() > BODY_HIGH_WATER:
            return
        self._reading = True
        self.transport.resume_reading()

    def _refuse(self, status: int, message: str) -> None:
        """A framing error: fail the body in flight, or answer in turn; parse nothing more."""
        self._stop_parsing()
        parsing = self._parsing
        if parsing is not None and (parsing in self._queue or parsing is self._current):
            parsing.body.fail(BodyError(message))  # its handler answers (400), then we close
            self._close_after = True
            return
        self._queue.append(_Refused(status, message))
        self._wake()

    def _stop_parsing(self) -> None:
        self._broken = True
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        self._pause()

    def _head_late(self) -> None:
        self._head_timer = None
        if not self._lost:
            self._refuse(
                408, f"request head not complete within {self.limits.header_read_timeout:g} s"
            )

    def _arm_idle(self) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
        self._idle_timer = self.loop.call_later(self.limits.keepalive_timeout, self._idle_end)

    def _idle_end(self) -> None:
        """keepalive_timeout passed: close; with output still unsent, the client is not reading
        it, so abort."""
        transport = self.transport
        if transport is not None and transport.get_write_buffer_size():
            self._abort()
        else:
            self._close()

    def _cancel_timers(self) -> None:
        for timer in (self._head_timer, self._idle_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._idle_timer = None

    def is_idle(self) -> bool:
        return self._current is None and not self._queue and self._parsing is None

    def _close(self) -> None:
        """Close once the output is sent; a client that takes none of it for write_timeout is
        cut off then (a graceful close would hold the buffer for as long as it waits)."""
        self._cancel_timers()
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        transport.close()
        self._abort_unless_taking(transport)

    def _abort_unless_taking(
        self, transport: asyncio.Transport, left: int = -1, taken_at: float = 0.0
    ) -> None:
        """While output is left, check that the client takes some of it (less is `left` than
        at the last check); abort once it has taken none for `write_timeout`."""
        if not transport.get_write_buffer_size() or self._lost:
            return  # the rest is the kernel's to send
        timeout, now = self.server.write_timeout(), self.loop.time()
        if (unsent := _unsent(transport)) < left or left < 0:
            left, taken_at = unsent, now
        elif now - taken_at >= timeout:
            self._abort()
            return
        self.loop.call_later(
            timeout / CHECKS_PER_TIMEOUT, self._abort_unless_taking, transport, left, taken_at
        )

    def _abort(self) -> None:
        """Drop the connection and every byte it holds, the kernel's send queue included (a
        reset: SO_LINGER 0), so a client that reads nothing holds no memory of ours."""
        self._cancel_timers()
        transport = self.transport
        if transport is None or self._lost:
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
        transport.abort()


def _parse_error(exc: Exception) -> str:
    """llhttp's reason, which names the rule broken and quotes none of the request."""
    text = str(exc).strip() or type(exc).__name__
    return text[:120]


class Server:
    """The connections of one listening socket, for graceful shutdown."""

    def __init__(
        self,
        app: App,
        refused: FramingError,
        limits: Limits,
        write_timeout: Callable[[], float],
    ) -> None:
        self.app = app
        self.refused = refused
        self.limits = limits
        self.write_timeout = write_timeout
        self.loop = asyncio.get_running_loop()
        self.connections: set[Connection] = set()
        self.closing = False
        self._server: asyncio.Server | None = None

    async def listen(self, host: str, port: int) -> None:
        self._server = await self.loop.create_server(
            lambda: Connection(self), host, port, backlog=1024, reuse_address=True
        )

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.sockets[0].getsockname()[1]

    async def shutdown(self, grace: float) -> None:
        """Stop accepting; close idle connections; give in-flight requests `grace` seconds."""
        self.closing = True
        if self._server is not None:
            self._server.close()
        deadline = self.loop.time() + grace
        while True:
            for connection in list(self.connections):
                if connection.is_idle():
                    connection._close()
            if not self.connections or self.loop.time() >= deadline:
                break
            await asyncio.sleep(0.05)
        for connection in list(self.connections):
            if connection.transport is not None:
                connection.transport.abort()
