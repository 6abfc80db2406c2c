"""CPU per request of the backend client: synapse.http.client.Pool vs aiohttp ClientSession.

Sequential keep-alive GETs against a raw asyncio server in another process (so only the
client's CPU is counted: `time.process_time()` of this process), on uvloop, interleaved
rounds in one run. Prints µs of CPU per request; asserts nothing.

Run: .venv/bin/python bench/client_cpu.py [--requests 10000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import socket
import statistics
import time

import aiohttp
import uvloop

from synapse.http.client import Pool, Timeout

BODY = b'{"object":"list","data":[{"id":"m","object":"model"}]}'
ANSWER = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
    % (len(BODY), BODY)
)


class _Answer(asyncio.Protocol):
    """One fixed answer per request head (GETs carry no body)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.pending = b""

    def data_received(self, data: bytes) -> None:
        data = self.pending + data
        heads = data.count(b"\r\n\r\n")
        self.pending = data[data.rfind(b"\r\n\r\n") + 4 :] if heads else data
        if heads:
            self.transport.write(ANSWER * heads)  # type: ignore[attr-defined]


def _serve(sock: socket.socket) -> None:
    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(_Answer, sock=sock)
        await server.serve_forever()

    uvloop.run(main())


async def _ours(url: str, n: int) -> float:
    pool = Pool(per_host=4, connect_timeout=2)
    timeout = Timeout(total=10, connect=2)
    headers = {"Accept-Encoding": "identity"}
    for _ in range(100):  # warm up: connect, caches
        response = await pool.request("GET", url, headers=headers, body=None, timeout=timeout)
        await response.read(1 << 20)
        response.release()
    started = time.process_time()
    for _ in range(n):
        response = await pool.request("GET", url, headers=headers, body=None, timeout=timeout)
        await response.read(1 << 20)
        response.release()
    spent = time.process_time() - started
    await pool.close()
    return spent / n * 1e6


async def _aiohttp(url: str, n: int) -> float:
    connector = aiohttp.TCPConnector(limit_per_host=4, keepalive_timeout=60)
    async with aiohttp.ClientSession(
        connector=connector,
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=False,
        headers={"Accept-Encoding": "identity"},
        skip_auto_headers=("User-Agent", "Accept"),
    ) as session:  # configured as upstream.new_session was
        timeout = aiohttp.ClientTimeout(total=10, sock_connect=2)
        for _ in range(100):
            async with session.get(url, timeout=timeout) as response:
                await response.read()
        started = time.process_time()
        for _ in range(n):
            async with session.get(url, timeout=timeout) as response:
                await response.read()
        spent = time.process_time() - started
    return spent / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1/models"
    server = multiprocessing.get_context("fork").Process(target=_serve, args=(sock,), daemon=True)
    server.start()
    results: dict[str, list[float]] = {"synapse.http.client": [], "aiohttp ClientSession": []}
    try:
        for _ in range(args.rounds):
            results["synapse.http.client"].append(uvloop.run(_ours(url, args.requests)))
            results["aiohttp ClientSession"].append(uvloop.run(_aiohttp(url, args.requests)))
    finally:
        server.terminate()
        server.join()
    print(f"{args.requests} sequential keep-alive GETs, {args.rounds} interleaved rounds")
    print("| client | CPU µs/request (median) | rounds |")
    print("|---|---|---|")
    for name, figures in results.items():
        rounds = ", ".join(f"{f:.1f}" for f in figures)
        print(f"| {name} | {statistics.median(figures):.1f} | {rounds} |")


if __name__ == "__main__":
    main()
