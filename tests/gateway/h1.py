"""Answers read off a raw socket by h11, a strict HTTP/1.1 parser independent of the server's.

A test writes any bytes it likes (pipelined requests, broken framing) and reads the answers
one by one from the same connection: bytes h11 did not consume for one answer are kept for
the next, so a HEAD answer carrying a body or a stray byte after a chunked terminator shows
up as an error in the answer after it. h11 raises `h11.RemoteProtocolError` for an answer
that is not well-formed HTTP/1.1.
"""

from __future__ import annotations

import contextlib
import socket
import time
from dataclasses import dataclass, field
from typing import Any

import h11
import orjson


@dataclass
class Reply:
    status: int
    headers: list[tuple[str, str]]
    body: bytes = b""
    informational: list[int] = field(default_factory=list)
    complete: bool = False  # the message ended as its framing says (length met, terminator)

    def header(self, name: str) -> str | None:
        """The first value of `name` (case-insensitive), or None."""
        wanted = name.lower()
        return next((v for n, v in self.headers if n == wanted), None)

    @property
    def closes(self) -> bool:
        return "close" in (self.header("connection") or "").lower()

    def json(self) -> Any:
        return orjson.loads(self.body)


class Wire:
    """One client connection to a port of the gateway."""

    def __init__(self, port: int, timeout: float = 15.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.timeout = timeout
        self.pending = b""  # received, not yet part of an answer
        self.eof = False

    def __enter__(self) -> Wire:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        """Write `data`; a server that already answered and closed may refuse the rest."""
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.sock.sendall(data)

    def recv_some(self) -> bytes:
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
        return data

    def reply(self, method: str = "GET") -> Reply:
        """The next answer, read whole; `method` is the request's (HEAD answers have no body)."""
        conn = h11.Connection(h11.CLIENT)
        conn.send(h11.Request(method=method, target="/", headers=[("Host", "x")]))
        conn.send(h11.EndOfMessage())
        if self.pending:  # (h11 reads an empty write as the end of the stream)
            conn.receive_data(self.pending)
        self.pending = b""
        reply: Reply | None = None
        informational: list[int] = []
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError:
                if reply is not None and self.eof:
                    return reply  # the server closed mid-message: incomplete, as flagged
                if reply is None and self.eof:
                    raise ConnectionError("the server closed without an answer") from None
                raise
            if event is h11.NEED_DATA:
                if time.monotonic() > deadline:
                    raise TimeoutError("no complete answer in time")
                conn.receive_data(b"" if self.eof else self.recv_some())  # b"": EOF
            elif isinstance(event, h11.InformationalResponse):
                informational.append(event.status_code)
            elif isinstance(event, h11.Response):
                headers = [(n.decode(), v.decode("latin-1")) for n, v in event.headers]
                reply = Reply(event.status_code, headers, informational=informational)
            elif isinstance(event, h11.Data):
                assert reply is not None
                reply.body += event.data
            elif isinstance(event, h11.EndOfMessage):
                assert reply is not None
                reply.complete = True
                self.pending, _ = conn.trailing_data
                return reply
            elif isinstance(event, h11.ConnectionClosed):
                raise ConnectionError("closed before an answer")

    def closed(self) -> bool:
        """True once the server has closed, having sent nothing more (waits up to `timeout`)."""
        if self.pending:
            return False
        deadline = time.monotonic() + self.timeout
        while not self.eof and time.monotonic() < deadline:
            try:
                self.pending += self.recv_some()
            except TimeoutError:
                break
            if self.pending:
                return False
        return self.eof and not self.pending
