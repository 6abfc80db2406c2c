"""Sending a backend's answer to the client: whole bodies, or streams chunk by chunk.

A stream that breaks after its first byte cannot be retried; it ends with an error event in
the caller's framing (SSE `data: {"error": ...}` or an NDJSON `{"error": ...}` line), without
its protocol's terminator and without HTTP's (the connection closes after the error event), so
no client mistakes a cut stream for a complete one.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson

from synapse import metrics
from synapse.backends.upstream import ResponseTooLarge, Upstream, reason
from synapse.errors import BadGateway, GatewayTimeout
from synapse.http.client import ClientError
from synapse.http.message import Request, Response, StreamResponse
from synapse.routing import Trace
from synapse.translate.embeddings import backend_error

# End markers: a stream is complete once one has been relayed.
SSE_DONE = re.compile(rb"(?:^|\n)data: ?\[DONE\]")
NDJSON_DONE = re.compile(rb'"done"\s*:\s*true')


class IncompleteStream(Exception):
    pass


class ClientGone(Exception):
    """The client closed the connection, or stopped reading for `write_timeout`."""


_USAGE = re.compile(rb'"usage"\s*:\s*\{')
_COUNT = re.compile(rb'"(prompt_tokens|completion_tokens)"\s*:\s*(\d+)')


def record_usage(group: str, body: bytes) -> None:
    """Token counts from an OpenAI-shaped body: only the usage object is read, not the body."""
    found = _USAGE.search(body, max(0, body.rfind(b'"usage"')))
    if found is None:
        return
    end = body.find(b"}", found.end())
    counts = {m[1]: int(m[2]) for m in _COUNT.finditer(body, found.end(), end)}
    add_tokens(group, counts.get(b"prompt_tokens"), counts.get(b"completion_tokens"))


_TOKEN_SERIES: dict[tuple[str, str], tuple[Any, Any]] = {}


def add_tokens(group: str, prompt: object, completion: object) -> None:
    key = (group, metrics.CONSUMER.get())
    series = _TOKEN_SERIES.get(key)
    if series is None:  # bounded: groups x consumers
        series = _TOKEN_SERIES[key] = (
            metrics.PROMPT_TOKENS.labels(*key),
            metrics.COMPLETION_TOKENS.labels(*key),
        )
    if isinstance(prompt, int) and prompt > 0:
        series[0].inc(prompt)
    if isinstance(completion, int) and completion > 0:
        series[1].inc(completion)


async def read_all(up: Upstream, limit: int | None = None) -> bytes:
    try:
        return await up.read(limit)
    except TimeoutError:
        raise GatewayTimeout(f"{up.state.id} timed out while sending its answer") from None
    except ResponseTooLarge as exc:
        raise BadGateway(f"{up.state.id}: {exc}") from None
    except ClientError as exc:
        raise BadGateway(f"{up.state.id} sent an incomplete answer: {reason(exc)}") from None
    finally:
        up.release()


async def passthrough(up: Upstream, trace: Trace, limit: int | None = None) -> Response:
    """A non-streamed answer from a backend speaking the caller's protocol, bytes untouched."""
    body = await read_all(up, limit)
    if up.status >= 400 and not body.lstrip().startswith(b"{"):
        raise backend_error(up.state.id, up.status, body)  # give it the caller's error shape
    if up.status < 300 and trace.group:
        record_usage(trace.group, body)
    return Response(body, up.status, {"Content-Type": up.content_type})


async def _send(response: StreamResponse, data: bytes, timeout: float, eof: bool = False) -> None:
    """One write to the client, waiting at most `timeout` for it to read."""
    try:
        async with asyncio.timeout(timeout):
            await (response.write_eof(data) if eof else response.write(data))
    except TimeoutError:
        raise ClientGone(f"the client read nothing for {timeout:g}s (write_timeout)") from None
    except ConnectionError:
        raise ClientGone("the client closed the connection") from None


async def stream(
    request: Request,
    up: Upstream,
    trace: Trace,
    *,
    content_type: str,
    source: AsyncIterator[bytes],
    done_marker: re.Pattern[bytes] | None,
    error_frame: Callable[[str], bytes] | None,
    on_chunk: Callable[[bytes], None] | None = None,
) -> StreamResponse:
    """Relay `source` to the client as it arrives; end with `error_frame` if it breaks.

    Once `done_marker` has been written the stream is complete: the handler finishes at
    once (the backend connection is drained in the background), so a client that closes
    right after the terminator is a success, not a 499. Once the response has started,
    every failure ends it in its own framing, never with a new status line. Without an
    error frame (binary bodies) a broken stream is cut off before its end, so the client's
    HTTP library sees an incomplete body.
    """
    started = request.get("started", time.perf_counter())
    response = StreamResponse(headers={"Content-Type": content_type, "Cache-Control": "no-cache"})
    write_timeout = request.app.gateway.router.config.settings.write_timeout
    try:
        await response.prepare(request)
    except ConnectionError:
        up.close()
        _client_gone(request, trace, "the client closed the connection")
        return response
    tail = b""
    first = True
    delivered = False
    try:
        async for chunk in source:
            if first:
                first = False
                metrics.TIME_TO_FIRST_TOKEN.labels(trace.group or "", request["route"]).observe(
                    time.perf_counter() - started
                )
            if on_chunk is not None:
                on_chunk(chunk)
            await _send(response, chunk, write_timeout)
            if done_marker is not None:
                window = tail + chunk  # a marker may straddle two chunks
                if done_marker.search(window):
                    delivered = True
                    break
                tail = window[-64:]
        if done_marker is not None and not delivered:
            raise IncompleteStream("the backend closed the stream before its end marker")
    except ClientGone as exc:
        up.close()  # the backend stops generating and the slot is free
        _client_gone(request, trace, str(exc))
        return response
    except Exception as exc:  # anything from the backend or a translator
        up.close()
        message = f"stream from {up.state.id} broke: {_stream_failure(exc)}"
        trace.errors.append(message)
        request["stream_error"] = message
        # The stream is not ended (no chunked terminator): the connection closes after what
        # was written, so the body is visibly incomplete to any HTTP client.
        if error_frame is None:
            return response
        try:
            await _send(response, error_frame(message), write_timeout)
        except ClientGone as gone:
            _client_gone(request, trace, str(gone))
        return response
    except BaseException:  # cancelled: the client went away
        up.close()
        raise
    up.finish()
    try:
        await _send(response, b"", write_timeout, eof=True)
    except ClientGone as exc:
        if not delivered:
            _client_gone(request, trace, str(exc))
    return response


def _client_gone(request: Request, trace: Trace, why: str) -> None:
    request["client_gone"] = True  # logged as 499: nothing left to tell it
    request["stream_error"] = why
    if request.transport is not None:
        request.transport.abort()


def _stream_failure(exc: Exception) -> str:
    if isinstance(exc, TimeoutError):
        return str(exc) or "timeout"
    if isinstance(exc, ResponseTooLarge | IncompleteStream | ValueError):
        return str(exc) or type(exc).__name__
    if isinstance(exc, ClientError):
        return reason(exc)
    return f"a frame of unexpected shape ({type(exc).__name__})"


def sse_error(message: str) -> bytes:
    return (
        b"data: "
        + orjson.dumps(
            {
                "error": {
                    "message": message,
                    "type": "api_error",
                    "param": None,
                    "code": "stream_interrupted",
                }
            }
        )
        + b"\n\n"
    )


def ndjson_error(message: str) -> bytes:
    return orjson.dumps({"error": message}) + b"\n"


async def relay_sse(request: Request, up: Upstream, trace: Trace) -> StreamResponse:
    group = trace.group or ""

    def usage(chunk: bytes) -> None:
        if b'"usage"' in chunk:
            record_usage(group, chunk)

    return await stream(
        request,
        up,
        trace,
        content_type="text/event-stream",
        source=up.chunks(),
        done_marker=SSE_DONE,
        error_frame=sse_error,
        on_chunk=usage,
    )


async def relay_ndjson(
    request: Request,
    up: Upstream,
    trace: Trace,
    source: AsyncIterator[bytes] | None = None,
    done_marker: bytes | re.Pattern[bytes] = NDJSON_DONE,
) -> StreamResponse:
    """An Ollama NDJSON stream: the backend's own, or `source` translated from SSE."""
    group = trace.group or ""

    def usage(chunk: bytes) -> None:
        if NDJSON_DONE.search(chunk):
            for line in chunk.split(b"\n"):
                if b'"eval_count"' in line:
                    try:
                        final = orjson.loads(line)
                    except orjson.JSONDecodeError:
                        continue
                    add_tokens(group, final.get("prompt_eval_count"), final.get("eval_count"))

    return await stream(
        request,
        up,
        trace,
        content_type="application/x-ndjson",
        source=source or up.lines(),
        done_marker=re.compile(re.escape(done_marker))
        if isinstance(done_marker, bytes)
        else done_marker,
        error_frame=ndjson_error,
        on_chunk=usage,
    )
