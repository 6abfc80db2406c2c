"""A backend that runs a test's own script per connection, in a thread of the test process:
for answers no well-behaved stub gives (a 101, a stream that never ends, a connection dropped
between two requests)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable

Script = Callable[["Peer"], Awaitable[None]]


class Peer:
    """One connection from the gateway: read its requests, write raw bytes."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.body = b""  # of the last request read

    async def request(self) -> bytes:
        """The next request's head, its body (Content-Length) read into `body`; b"" at EOF."""
        self.body = b""
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            return b""
        for line in head.lower().split(b"\r\n"):
            if line.startswith(b"content-length:"):
                self.body = await self.reader.readexactly(int(line.split(b":")[1]))
        return head

    async def write(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()


class ScriptedBackend:
    """Listens on loopback; every accepted connection runs `script`. `connections` counts them,
    `open` those whose script has not ended."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.connections = 0
        self.open = 0
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ScriptedBackend:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self.loop.run_forever()
        server.close()
        tasks = asyncio.all_tasks(self.loop)
        for task in tasks:
            task.cancel()
        self.loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        self.loop.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open += 1
        try:
            await self.script(Peer(reader, writer))
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.open -= 1
            writer.close()


def answer(body: bytes, content_type: str = "application/json") -> bytes:
    """A whole keep-alive 200."""
    head = f"HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode() + body
