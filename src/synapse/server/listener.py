"""aiohttp's server with two changes at the HTTP layer, below any application.

* A request head must arrive whole within `header_read_timeout` of its first byte (aiohttp
  only bounds idle time between requests), so a trickled head cannot hold a connection.
* aiohttp answers a request it cannot parse itself, quoting the raw bytes (an Authorization
  header included) in its log and in the 400 body. Here the answer names only the kind of
  error, in JSON, and the request gets its log line like any other.

Both hook into aiohttp's protocol class (`RequestHandler`, private attributes included);
aiohttp is pinned exactly, and tests/gateway/test_hardening_headers.py (a key with a NUL) and
test_hardening_bodies.py (a trickled head) fail if these hooks stop being called.
"""

from __future__ import annotations

import asyncio
import uuid
from http import HTTPStatus
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from synapse.api.middleware import record
from synapse.api.protocol import openai_error_body
from synapse.errors import BadRequest, GatewayError
from synapse.routing import Trace

# Longer than the idle timeout of the proxies in front (Traefik: 90 s), so a proxy never sends
# on a connection we are closing; a connection that never sends a byte is closed after it.
IDLE_TIMEOUT = 120.0
SERVER = "synapse"  # no version banner


class _Handler(RequestHandler):
    header_read_timeout = 10.0
    _head_timer: asyncio.TimerHandle | None = None

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._head_pending():
            if self._head_timer is None:
                self._head_timer = self._loop.call_later(self.header_read_timeout, self._head_late)
        else:
            self._cancel_head_timer()

    async def _handle_request(self, *args: Any, **kw: Any) -> Any:
        self._cancel_head_timer()  # a head parsed in the same read as its body armed it
        return await super()._handle_request(*args, **kw)

    def _head_pending(self) -> bool:
        """Bytes arrived and no request came of them yet (none parsed, none being handled)."""
        return not self._messages and not self._request_in_progress and not self._force_close

    def _head_late(self) -> None:
        self._head_timer = None
        if self._head_pending():
            record(
                Trace(uuid.uuid4().hex),
                method="",
                path="",
                status=408,
                error=f"request head not complete within {self.header_read_timeout:g} s",
            )
            self.force_close()

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def connection_lost(self, exc: BaseException | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """aiohttp's answer to an unparsable request, without quoting any of its bytes."""
        if request.writer.output_size > 0:
            raise ConnectionError("response already started, cannot send an error")
        kind = type(exc).__name__ if exc is not None else "error"
        if status >= 500:  # our own bug (a handler raised): its traceback quotes no request
            self.log_exception("unhandled error", exc_info=exc)
            error = GatewayError("internal error in the gateway")
        else:
            error = BadRequest(
                f"malformed HTTP request ({kind}): {HTTPStatus(status).phrase}", status=status
            )
        record(Trace(uuid.uuid4().hex), method="", path="", status=status, error=error.message)
        response = web.Response(
            body=openai_error_body(error), status=status, content_type="application/json"
        )
        response.headers["Server"] = SERVER
        response.force_close()
        return response


class _Server(web.Server):
    header_read_timeout = 10.0

    def __call__(self) -> RequestHandler:
        handler = _Handler(self, loop=self._loop, **self._kwargs)
        handler.header_read_timeout = self.header_read_timeout
        return handler


class Runner(web.AppRunner):
    """An AppRunner whose connections are `_Handler`s."""

    def __init__(self, app: web.Application, *, header_read_timeout: float, **kw: Any) -> None:
        super().__init__(app, keepalive_timeout=IDLE_TIMEOUT, **kw)
        self._header_read_timeout = header_read_timeout

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = _Server
        server.header_read_timeout = self._header_read_timeout  # type: ignore[attr-defined]
        return server


async def no_banner(request: web.Request, response: web.StreamResponse) -> None:
    """`on_response_prepare`: aiohttp would send `Server: Python/x aiohttp/y`."""
    response.headers["Server"] = SERVER
