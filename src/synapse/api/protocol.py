"""What differs between the two API surfaces: how errors look, and how bodies are read."""

from __future__ import annotations

import orjson
from aiohttp import web

from synapse.errors import BadRequest, GatewayError, PayloadTooLarge

JSON = "application/json"


def is_ollama_path(path: str) -> bool:
    return path.startswith("/api/") or path == "/"


def openai_error_body(error: GatewayError) -> bytes:
    return orjson.dumps(
        {
            "error": {
                "message": error.message,
                "type": error.type,
                "param": error.param,
                "code": error.code,
            }
        }
    )


def error_response(error: GatewayError, path: str) -> web.Response:
    if is_ollama_path(path):
        body = orjson.dumps({"error": error.message})
    else:
        body = openai_error_body(error)
    return web.Response(
        body=body, status=error.status, content_type=JSON, headers=error.headers or None
    )


async def read_body(request: web.Request, limit: int) -> bytes:
    """The raw body, refusing more than `limit` bytes before or while reading it."""
    length = request.content_length
    if length is not None and length > limit:
        raise PayloadTooLarge(f"request body of {length} bytes exceeds the limit of {limit}")
    if length is not None:
        return await request.read()
    chunks, size = [], 0
    async for chunk in request.content.iter_any():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_json(request: web.Request, limit: int) -> dict:
    raw = await read_body(request, limit)
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    return body


def json_response(data: object, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type=JSON)
