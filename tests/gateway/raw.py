"""Raw HTTP over a socket, for requests a client library refuses to send (bad bytes, bombs)."""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import Gateway


@dataclass
class Answer:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> object:
        return json.loads(self.body)


def request(
    port: int,
    method: str,
    path: str,
    headers: list[tuple[bytes | str, bytes | str]],
    body: bytes = b"",
    *,
    content_length: bool = True,
    timeout: float = 30.0,
) -> Answer:
    """One request on a fresh connection; header names and values are sent byte for byte."""
    head = [f"{method} {path} HTTP/1.1".encode(), b"Host: 127.0.0.1", b"Connection: close"]
    for name, value in headers:
        head.append(_bytes(name) + b": " + _bytes(value))
    if content_length:
        head.append(f"Content-Length: {len(body)}".encode())
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        # the server may answer early and close: read what it said
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(b"\r\n".join(head) + b"\r\n\r\n" + body)
        return read_answer(sock)


def read_answer(sock: socket.socket) -> Answer:
    response = http.client.HTTPResponse(sock)
    response.begin()
    return Answer(response.status, response.headers, response.read())


def _bytes(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


def rss_bytes(pid: int) -> int:
    """Resident set size from /proc (VmRSS is in kB)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def request_lines(log: str) -> list[dict]:
    """The gateway's per-request log lines; every line of the log must be valid JSON."""
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("msg") == "request"]


def wait_for_lines(gateway: Gateway, count: int, timeout: float = 5.0) -> list[dict]:
    """The request lines once at least `count` are written (they are flushed per loop turn)."""
    deadline = time.monotonic() + timeout
    while True:
        lines = request_lines(gateway.log)
        if len(lines) >= count or time.monotonic() > deadline:
            return lines
        time.sleep(0.02)
