"""A backend that answers before reading the request body and keeps the connection open.

Run: python -m tests.stubs.sloppy --port P
Some real servers (the issue was seen with a llama.cpp server) answer an unknown route with
404 at once, leave the request body unread on a keep-alive connection, and then parse that
body as the next request: whoever is next on the connection gets a 501 with an HTML page.
Here `POST /v1/completions` is the unknown route; `POST /v1/chat/completions` reads its body
and answers; `GET /_stats` says how many requests were garbled.
"""

from __future__ import annotations

import argparse
import asyncio

import orjson

GARBLED = {"count": 0}


def answer(status: str, body: bytes, content_type: str = "application/json") -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: keep-alive\r\n\r\n"
    )
    return head.encode() + body


CHAT = orjson.dumps(
    {
        "id": "chatcmpl-sloppy",
        "object": "chat.completion",
        "created": 0,
        "model": "sloppy",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "ok"},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }
)


async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            request_line, *header_lines = head.decode("latin-1").split("\r\n")
            parts = request_line.split(" ")
            if len(parts) != 3 or not parts[0].isalpha() or not parts[2].startswith("HTTP/1."):
                GARBLED["count"] += 1
                page = b"<html><body><h1>501 Not Implemented</h1></body></html>"
                writer.write(answer("501 Not Implemented", page, "text/html"))
                await writer.drain()
                continue
            method, path, _ = parts
            length = 0
            for line in header_lines:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            if path == "/_stats":
                writer.write(answer("200 OK", orjson.dumps({"garbled": GARBLED["count"]})))
            elif method == "POST" and path == "/v1/chat/completions":
                await reader.readexactly(length)
                writer.write(answer("200 OK", CHAT))
            else:  # the body stays unread on the connection
                error = {"error": {"message": f"{path} not found", "type": "not_found_error"}}
                writer.write(answer("404 Not Found", orjson.dumps(error)))
            await writer.drain()
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
        pass
    finally:
        writer.close()


async def main(port: int) -> None:
    server = await asyncio.start_server(serve, "127.0.0.1", port, limit=1 << 20)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    asyncio.run(main(parser.parse_args().port))
