"""An OpenAI-compatible backend whose streamed answers come in many small pieces.

Run: python -m tests.stubs.fragments --port P --count N --size S
Every streamed chat completion is N deltas of S characters: text (`delta.content`) unless the
request offers tools, then one tool call (as vLLM streams it: the head with id and name, then
its arguments piece by piece). A translator that re-copies what it has gathered at every piece
does work quadratic in N; the gateway's must stay linear.
"""

from __future__ import annotations

import argparse

import orjson
from aiohttp import web


def build(count: int, size: int) -> web.Application:
    async def chat(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)

        async def send(delta: dict, finish: str | None = None) -> None:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            data = {
                "id": "chatcmpl-fragments",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": body.get("model"),
                "choices": [choice],
            }
            await response.write(b"data: " + orjson.dumps(data) + b"\n\n")

        await send({"role": "assistant", "content": ""})
        piece = "x" * size
        if body.get("tools"):
            head = {"index": 0, "id": "call_fragments", "type": "function"}
            await send({"tool_calls": [{**head, "function": {"name": "f", "arguments": ""}}]})
            for _ in range(count):
                await send({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
            await send({}, "tool_calls")
        else:
            for _ in range(count):
                await send({"content": piece})
            await send({}, "stop")
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    async def health(request: web.Request) -> web.Response:
        return web.Response(text="")

    async def models(request: web.Request) -> web.Response:
        data = [{"id": "fragments", "object": "model", "created": 0, "owned_by": "stub"}]
        return web.json_response({"object": "list", "data": data})

    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/chat/completions", chat)
    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--size", type=int, required=True)
    args = parser.parse_args()
    app = build(args.count, args.size)
    web.run_app(app, host="127.0.0.1", port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
