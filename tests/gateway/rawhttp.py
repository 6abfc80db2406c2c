"""HTTP over a raw socket: the bytes on the wire, for what a client library would hide."""

from __future__ import annotations

import socket
import time

import orjson


def request_bytes(
    method: str, path: str, port: int, body: object = None, headers: dict[str, str] | None = None
) -> bytes:
    data = b"" if body is None else orjson.dumps(body)
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if body is not None:
        lines += ["Content-Type: application/json", f"Content-Length: {len(data)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + data


def exchange(port: int, raw: bytes, timeout: float = 15.0) -> bytes:
    """Send `raw`, read until the server closes (or `timeout` passes): every byte sent back."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(raw)
        received = bytearray()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                data = sock.recv(65536)
            except TimeoutError:
                break
            if not data:
                break
            received += data
        return bytes(received)


def dechunk(body: bytes) -> bytes:
    """The payload of a chunked body (stops at the terminator or where the bytes end)."""
    out = bytearray()
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += rest[:size]
        body = rest[size + 2 :]
    return bytes(out)
