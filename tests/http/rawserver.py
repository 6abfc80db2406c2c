"""Loopback servers that write exact bytes, for the backend client's framing and pool tests."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import uvloop

Handler = Callable[["Exchange"], Awaitable[None]]


def on_uvloop(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an async test on uvloop, as the gateway runs."""

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        uvloop.run(asyncio.wait_for(test(*args, **kwargs), 30))

    return run


class Exchange:
    """One accepted connection: read requests off it, write answers as raw bytes."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.requests = 0
        self.reading = False  # a handler is in request(): it sees the EOF, not closed_by_peer
        self.eof = asyncio.Event()

    async def request(self) -> tuple[bytes, bytes]:
        """The next request's head and (de-chunked) body; (b"", b"") at EOF."""
        self.reading = True
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            self.eof.set()
            return b"", b""
        finally:
            self.reading = False
        self.requests += 1
        lower = head.lower()
        if b"transfer-encoding: chunked" in lower:
            body = bytearray()
            while True:
                size = int((await self.reader.readline()).strip(), 16)
                if size == 0:
                    await self.reader.readline()
                    return head, bytes(body)
                body += await self.reader.readexactly(size)
                await self.reader.readline()
        for line in lower.split(b"\r\n"):
            if line.startswith(b"content-length:"):
                return head, await self.reader.readexactly(int(line.split(b":")[1]))
        return head, b""

    def write(self, data: bytes) -> None:
        self.writer.write(data)

    async def closed_by_peer(self) -> bool:
        """True once the client has closed its side (EOF), after any pending bytes."""
        if self.reading or self.eof.is_set():
            await self.eof.wait()
            return True
        while await self.reader.read(1 << 20):
            pass  # bytes the client sent before closing
        return True

    def close(self) -> None:
        self.writer.close()


class RawServer:
    """Calls `handler` once per accepted connection; counts connections and keeps heads."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.exchanges: list[Exchange] = []
        self.server: asyncio.Server | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> RawServer:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for exchange in self.exchanges:
            exchange.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        exchange = Exchange(reader, writer)
        self.exchanges.append(exchange)
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            await self.handler(exchange)


def answer(body: bytes = b"ok", status: str = "200 OK", extra: str = "") -> bytes:
    return f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode() + body


def keep_answering(body: bytes = b"ok", status: str = "200 OK", extra: str = "") -> Handler:
    """A keep-alive server answering every request on a connection the same way."""

    async def handler(ex: Exchange) -> None:
        while True:
            head, _ = await ex.request()
            if not head:
                return
            ex.write(answer(body, status, extra))

    return handler
