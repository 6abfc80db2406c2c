"""An SSE backend that writes one event every `--gap-ms`, each stamped with its send time.

nginx writes a whole stream at once; a model writes tokens one by one, and a gateway then pays
a wake-up, a read, a parse and a write for every event. Each event's content is
`t=<CLOCK_MONOTONIC ns>` (system-wide, so a client in another process can subtract it): the
client gets every event's latency, and direct vs through a gateway is the delay the gateway
adds to each token.
"""

from __future__ import annotations

import argparse
import asyncio
import time

import orjson
from aiohttp import web

EVENTS = web.AppKey("events", int)
GAP_S = web.AppKey("gap_s", float)
BASE = {"id": "chatcmpl-paced", "object": "chat.completion.chunk", "created": 1700000000}


def event(delta: dict, finish: str | None = None) -> bytes:
    chunk = {
        **BASE,
        "model": "bench-chat",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


def stamp() -> str:
    return f"t={time.monotonic_ns()}"


def stamp_latency_us(content: str, now_ns: int) -> float | None:
    """Microseconds since the backend wrote the event whose content is `content`."""
    if not content.startswith("t="):
        return None
    try:
        return (now_ns - int(content[2:])) / 1000.0
    except ValueError:
        return None


async def chat(request: web.Request) -> web.StreamResponse:
    events, gap = request.app[EVENTS], request.app[GAP_S]
    await request.read()
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    loop = asyncio.get_running_loop()
    start = loop.time()
    for i in range(events):
        # On a schedule from the start, so a late wake-up does not push every later event.
        delay = start + i * gap - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        await resp.write(event({"content": stamp()}))
    await resp.write(event({}, "stop") + b"data: [DONE]\n\n")
    await resp.write_eof()
    return resp


async def health(_: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def make_app(events: int, gap_s: float) -> web.Application:
    app = web.Application()
    app[EVENTS], app[GAP_S] = events, gap_s
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/health", health)
    return app


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--events", type=int, default=64)
    ap.add_argument("--gap-ms", type=float, default=2.0)
    args = ap.parse_args(argv)
    app = make_app(args.events, args.gap_ms / 1000.0)
    web.run_app(app, host="127.0.0.1", port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
