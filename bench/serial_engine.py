"""A serial per-call-cost embedding engine: the shape of a CPU engine with one parallel slot.

One call at a time (later calls wait their turn, as in Ollama with OLLAMA_NUM_PARALLEL=1);
each call costs `--call-ms` plus `--text-ms` per text, then answers OpenAI's `/v1/embeddings`
with deterministic unit vectors. The cost is a sleep, so the figure is the call structure's,
not this process's CPU.

Run: python bench/serial_engine.py --port P [--call-ms 20] [--text-ms 1]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import math

from aiohttp import web

DIM = 64


def vector(text: str) -> list[float]:
    digest = hashlib.sha256(text.encode()).digest() * 2
    raw = [b - 127.5 for b in digest[:DIM]]
    norm = math.sqrt(sum(x * x for x in raw))
    return [x / norm for x in raw]


def app(call_ms: float, text_ms: float) -> web.Application:
    turn = asyncio.Lock()

    async def embeddings(request: web.Request) -> web.Response:
        body = await request.json()
        texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
        async with turn:
            await asyncio.sleep((call_ms + text_ms * len(texts)) / 1000)
        data = [
            {"object": "embedding", "index": i, "embedding": vector(t)} for i, t in enumerate(texts)
        ]
        usage = {"prompt_tokens": len(texts), "total_tokens": len(texts)}
        return web.json_response(
            {"object": "list", "data": data, "model": body.get("model"), "usage": usage}
        )

    async def health(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    application = web.Application()
    application.router.add_post("/v1/embeddings", embeddings)
    application.router.add_get("/health", health)
    return application


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--call-ms", type=float, default=20.0)
    ap.add_argument("--text-ms", type=float, default=1.0)
    args = ap.parse_args()
    web.run_app(app(args.call_ms, args.text_ms), host="127.0.0.1", port=args.port, print=None)


if __name__ == "__main__":
    main()
