"""What differs between the two API surfaces: how errors look, and how bodies are read."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import orjson

from synapse.api import json_shape
from synapse.errors import BadRequest, GatewayError, PayloadTooLarge
from synapse.http.message import BodyError, Request, Response

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


def framing_error(status: int, message: str) -> Response:
    """The answer to a request the framing layer refused (no path to choose a protocol by)."""
    error = (BadRequest if status < 500 else GatewayError)(message, status=status)
    return Response(openai_error_body(error), status, {"Content-Type": JSON})


def error_response(error: GatewayError, path: str) -> Response:
    if is_ollama_path(path):
        body = orjson.dumps({"error": error.message})
    else:
        body = openai_error_body(error)
    return Response(body, error.status, {"Content-Type": JSON, **error.headers})


@asynccontextmanager
async def reading_body(timeout: float) -> AsyncIterator[None]:
    """Bounds the time a body may take to arrive, and turns a broken one into a 400."""
    try:
        async with asyncio.timeout(timeout):
            yield
    except TimeoutError:
        raise BadRequest(
            f"request body not received within {timeout:g} s", status=408, code="request_timeout"
        ) from None
    except BodyError as exc:  # bad chunked framing, client gone mid-body
        raise BadRequest(f"malformed request body: {exc}") from None


async def read_body(request: Request, limit: int, timeout: float) -> bytes:
    """The raw body, refusing more than `limit` bytes before or while reading it."""
    length = request.content_length
    if length is not None and length > limit:
        raise PayloadTooLarge(f"request body of {length} bytes exceeds the limit of {limit}")
    body = request.body
    whole = body.whole()
    if whole is not None:  # came with its head: nothing to wait for
        if len(whole) > limit:
            raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")
        return whole
    async with reading_body(timeout):
        chunks: list[bytes] = []
        size = 0
        while chunk := await body.chunk():
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")
            chunks.append(chunk)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def read_json(request: Request, limit: int, timeout: float) -> dict:
    """The body as a JSON object; its depth and number of values are checked before parsing."""
    raw = await read_body(request, limit, timeout)
    json_shape.check(raw)
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    return body


def json_response(data: object, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status, {"Content-Type": JSON})
