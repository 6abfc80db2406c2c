"""Issue 24's HTTP-layer findings: no request makes the loop (or one connection's memory) do
unbounded work, and the framing follows RFC 9112 where it was loose.

Black-box, through raw sockets against a real gateway process; a concurrent liveness probe
shows a stall (the unfixed stalls are many seconds; the probe is allowed 2).
"""

from __future__ import annotations

import threading
import time

import httpx
import orjson

from tests.conftest import MASTER_KEY, Gateway
from tests.gateway.h1 import Wire

AUTH = f"Authorization: Bearer {MASTER_KEY}".encode()
PROBE_LIMIT = 2.0  # seconds a liveness probe may take while a hostile request is handled


class LivenessProbe:
    """Asks `/health/liveliness` every 50 ms in a thread; `slowest` is the longest wait
    (a probe that got no answer within its timeout counts as that timeout)."""

    def __init__(self, gateway: Gateway) -> None:
        self.url = gateway.url + "/health/liveliness"
        self.slowest = 0.0
        self.answers = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> LivenessProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        with httpx.Client(timeout=10) as client:
            while not self._stop.is_set():
                began = time.monotonic()
                try:
                    client.get(self.url).raise_for_status()
                    self.answers += 1
                except httpx.HTTPError:
                    pass
                self.slowest = max(self.slowest, time.monotonic() - began)
                self._stop.wait(0.05)


def chat_json(padding: int = 0) -> bytes:
    body = {"model": "llama-gpu", "messages": [{"role": "user", "content": "hi"}]}
    return orjson.dumps(body) + b" " * padding


# --- finding 2: a body of tiny chunks costs O(1) per chunk ----------------------------------


def test_tiny_chunks_do_not_stall_the_loop(gateway: Gateway) -> None:
    body = chat_json(padding=20_000)
    chunked = b"".join(b"1\r\n%b\r\n" % body[i : i + 1] for i in range(len(body)))
    head = b"\r\n".join(
        [
            b"POST /v1/chat/completions HTTP/1.1",
            b"Host: x",
            AUTH,
            b"Content-Type: application/json",
            b"Transfer-Encoding: chunked",
        ]
    )
    with LivenessProbe(gateway) as probe, Wire(gateway.port, timeout=60) as wire:
        time.sleep(0.2)  # the probe is running
        wire.send(head + b"\r\n\r\n" + chunked + b"0\r\n\r\n")
        reply = wire.reply()
        time.sleep(0.2)  # one more probe after the answer
    assert reply.status == 200, reply.body
    assert reply.json()["choices"][0]["message"]["content"]
    assert probe.answers > 0
    assert probe.slowest < PROBE_LIMIT, f"liveness waited {probe.slowest:.1f}s behind the body"
