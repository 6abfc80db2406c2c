"""OpenAI-shaped stub for `synapse bench` tests: embeddings and streaming chat, optional key.

Usage: stub_backend.py PORT_FILE [--key KEY] [--tokens N]. Binds 127.0.0.1:0 and writes the
port to PORT_FILE once listening.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from aiohttp import web


def make_app(key: str | None, tokens: int) -> web.Application:
    def authorised(request: web.Request) -> bool:
        return key is None or request.headers.get("Authorization") == f"Bearer {key}"

    async def embeddings(request: web.Request) -> web.Response:
        if not authorised(request):
            return web.json_response({"error": {"message": "bad key"}}, status=401)
        body = await request.json()
        texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
        data = [
            {"object": "embedding", "index": i, "embedding": [0.1, 0.2, 0.3]}
            for i in range(len(texts))
        ]
        return web.json_response(
            {
                "object": "list",
                "data": data,
                "model": body["model"],
                "usage": {"prompt_tokens": 1, "total_tokens": 1},
            }
        )

    async def chat(request: web.Request) -> web.StreamResponse:
        if not authorised(request):
            return web.json_response({"error": {"message": "bad key"}}, status=401)
        body = await request.json()
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        base = {"id": "c", "object": "chat.completion.chunk", "model": body["model"]}
        await resp.write(
            b"data: "
            + json.dumps(
                {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}
            ).encode()
            + b"\n\n"
        )
        for i in range(tokens):
            chunk = {**base, "choices": [{"index": 0, "delta": {"content": f"t{i} "}}]}
            await resp.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
        usage = {"prompt_tokens": 3, "completion_tokens": tokens, "total_tokens": tokens + 3}
        await resp.write(
            b"data: "
            + json.dumps({**base, "choices": [], "usage": usage}).encode()
            + b"\n\ndata: [DONE]\n\n"
        )
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_post("/v1/embeddings", embeddings)
    app.router.add_post("/v1/chat/completions", chat)
    return app


async def main(port_file: Path, key: str | None, tokens: int, lifetime: float) -> None:
    import asyncio

    runner = web.AppRunner(make_app(key, tokens))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    port_file.write_text(str(port))  # noqa: ASYNC240 (once, before serving)
    await asyncio.sleep(lifetime)  # bounded: exits by itself if the test runner vanished
    await runner.cleanup()


if __name__ == "__main__":
    import asyncio

    ap = argparse.ArgumentParser()
    ap.add_argument("port_file", type=Path)
    ap.add_argument("--key")
    ap.add_argument("--tokens", type=int, default=12)
    ap.add_argument("--lifetime", type=float, default=300.0, help="seconds before exiting")
    a = ap.parse_args()
    asyncio.run(main(a.port_file, a.key, a.tokens, a.lifetime))
