"""What a handler sees of one exchange: the request, its body as it arrives, the answer."""

from __future__ import annotations

import asyncio
import collections
from typing import Any, Protocol
from urllib.parse import unquote

from synapse.http.headers import Headers

# Unread body bytes held per request before the socket stops being read (TCP pushes back).
BODY_HIGH_WATER = 256 * 1024
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class Connection(Protocol):
    """What a request and its answer need of the connection they came on (http.server's)."""

    app: Any
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport | None

    def write(self, data: bytes) -> None: ...
    def write_head(self, request: Request, status: int, headers: dict[str, str]) -> None: ...
    async def drain(self) -> None: ...
    def want_body(self) -> None: ...
    def close_after_response(self) -> None: ...


class BodyError(Exception):
    """The body cannot be read whole: bad chunked framing, or the client went away."""


class Body:
    """The request body as it arrives, read piece by piece by the handler.

    Filled by the connection's parser; holds at most `BODY_HIGH_WATER` unread bytes before the
    connection stops reading, so memory is bounded whatever the client sends. Each piece costs
    O(1) to store and to take (a deque and a running count): a body of 20,000 one-byte chunks
    is as cheap per byte as one of a single chunk.
    """

    __slots__ = (
        "_buffer",
        "_buffered",
        "_connection",
        "_error",
        "_expect_continue",
        "_waiter",
        "complete",
    )

    def __init__(self, connection: Connection, *, expect_continue: bool) -> None:
        self._connection = connection
        self._buffer: collections.deque[bytes] = collections.deque()
        self._buffered = 0  # bytes in _buffer
        self._waiter: asyncio.Future[None] | None = None
        self._error: BodyError | None = None
        self._expect_continue = expect_continue
        self.complete = False

    # -- the parser's side ---------------------------------------------------------------
    def feed(self, data: bytes) -> None:
        self._buffer.append(data)
        self._buffered += len(data)
        self._wake()

    def buffered(self) -> int:
        return self._buffered

    def finish(self) -> None:
        self.complete = True
        self._wake()

    def fail(self, error: BodyError) -> None:
        if not self.complete:
            self._error = error
            self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- the handler's side --------------------------------------------------------------
    def whole(self) -> bytes | None:
        """The body, when it has all arrived and none was read yet (no wait: the usual case)."""
        if not self.complete or self._error is not None:
            return None
        buffer, self._buffer = self._buffer, collections.deque()
        self._buffered = 0
        self._connection.want_body()
        return buffer[0] if len(buffer) == 1 else b"".join(buffer)

    async def chunk(self) -> bytes:
        """The next piece of the body; b"" once it is whole."""
        while not self._buffer:
            if self._error is not None:
                raise self._error
            if self.complete:
                return b""
            if self._expect_continue:
                self._expect_continue = False
                self._connection.write(CONTINUE)  # the client waits for this before sending
            self._waiter = self._connection.loop.create_future()
            self._connection.want_body()
            try:
                await self._waiter
            finally:
                self._waiter = None
        data = self._buffer.popleft()
        self._buffered -= len(data)
        self._connection.want_body()
        return data


class Request:
    """One parsed request head plus its body; handlers keep per-request notes in it by key."""

    __slots__ = (
        "_notes",
        "app",
        "body",
        "connection",
        "headers",
        "keep_alive",
        "match_info",
        "method",
        "path",
        "query_string",
        "reply_headers",
        "version",
    )

    def __init__(
        self,
        connection: Connection,
        method: str,
        target: str,
        version: str,
        headers: Headers,
        keep_alive: bool,
        body: Body,
    ) -> None:
        self.connection = connection
        self.app: Any = connection.app
        self.method = method
        path, _, self.query_string = target.partition("?")
        self.path = unquote(path) if "%" in path else path
        self.version = version
        self.headers = headers
        self.keep_alive = keep_alive
        self.body = body
        self.match_info: dict[str, str] = {}
        # sent with whatever answer this request gets, whole or streamed (request id, CORS)
        self.reply_headers: dict[str, str] = {}
        self._notes: dict[str, Any] = {}

    # notes (aiohttp's request["key"] idiom, so the surfaces read the same)
    def __getitem__(self, key: str) -> Any:
        return self._notes[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self._notes[key] = value

    def __contains__(self, key: str) -> bool:
        return key in self._notes

    def get(self, key: str, default: Any = None) -> Any:
        return self._notes.get(key, default)

    @property
    def host(self) -> str:
        return self.headers.get("Host", "") or ""

    @property
    def content_type(self) -> str:
        value = self.headers.get("Content-Type", "") or ""
        return value.partition(";")[0].strip().lower()

    @property
    def content_length(self) -> int | None:
        value = self.headers.get("Content-Length")
        return int(value) if value is not None else None  # llhttp checked it is digits

    @property
    def transport(self) -> asyncio.Transport | None:
        return self.connection.transport


class Response:
    """A whole answer, written in one go with its Content-Length."""

    __slots__ = ("body", "headers", "status")
    prepared = False

    def __init__(
        self,
        body: bytes = b"",
        status: int = 200,
        headers: dict[str, str] | None = None,
        content_type: str | None = None,
    ) -> None:
        self.body = body
        self.status = status
        self.headers = headers if headers is not None else {}
        if content_type is not None:
            self.headers["Content-Type"] = content_type


class StreamResponse:
    """An answer sent as it is produced: chunked to HTTP/1.1 clients, close-delimited to 1.0.

    `write` returns once the bytes are with the kernel, or waits while the client is not
    reading (the caller bounds that wait: `write_timeout`). A stream not ended with
    `write_eof` leaves the connection closed, so the client sees it incomplete.
    """

    __slots__ = ("_chunked", "_connection", "ended", "headers", "prepared", "status")

    def __init__(self, status: int = 200, headers: dict[str, str] | None = None) -> None:
        self.status = status
        self.headers = headers if headers is not None else {}
        self.prepared = False
        self.ended = False
        self._chunked = True
        self._connection: Connection | None = None

    async def prepare(self, request: Request) -> None:
        connection = request.connection
        self._connection = connection
        self._chunked = request.version == "1.1"
        if self._chunked:
            self.headers["Transfer-Encoding"] = "chunked"
        else:
            connection.close_after_response()
        self.prepared = True
        connection.write_head(request, self.status, self.headers)
        await connection.drain()

    async def write(self, data: bytes) -> None:
        if not data:
            return
        connection = self._connection
        assert connection is not None, "prepare() first"
        connection.write(b"%x\r\n%b\r\n" % (len(data), data) if self._chunked else data)
        await connection.drain()

    async def write_eof(self, data: bytes = b"") -> None:
        connection = self._connection
        assert connection is not None, "prepare() first"
        if self._chunked:
            connection.write((b"%x\r\n%b\r\n" % (len(data), data) if data else b"") + b"0\r\n\r\n")
        elif data:
            connection.write(data)
        self.ended = True
        await connection.drain()
