"""One listener's application: routes, keys, CORS, errors in the caller's protocol, the log line.

Everything per-request that is not routing lives here, so handlers only route.
"""

from __future__ import annotations

import logging
import os
import re
import time
import uuid
from typing import TYPE_CHECKING, Any

from synapse import logs, loopwatch, metrics
from synapse.api import cors
from synapse.api.protocol import error_response, framing_error
from synapse.consumers.identify import ANONYMOUS, identify, is_master, presented_key
from synapse.consumers.limits import LIMITS
from synapse.errors import BadRequest, GatewayError, RouteNotFound, Unauthorized
from synapse.http.message import Request, Response, StreamResponse
from synapse.http.routes import NoRoute, Routes
from synapse.routing import Trace

if TYPE_CHECKING:
    from synapse.gateway import Gateway

log = logging.getLogger("synapse.request")

# Probes: no key, no log line (they would drown the request log).
QUIET_PATHS = frozenset({"/health/liveliness", "/health/readiness"})
# /metrics lives on the metrics listener only: here it is a plain 404, keyed or not.
PUBLIC_PATHS = QUIET_PATHS | {"/", "/api/version", "/metrics"}
# Answered without a key when the body names a model Synapse serves (synapse.api.ollama.pull);
# the handler asks for the master key otherwise.
KEY_OPTIONAL_PATHS = frozenset({"/api/pull"})
# A caller's X-Request-ID is echoed in a header and the log: printable ASCII only, bounded.
_REQUEST_ID = re.compile(r"[!-~]{1,128}")
_IDENTITY = frozenset({"", "identity"})


class Surface:
    """`keyed`: this listener requires a key (when a master key or consumers are configured);
    `browser`: it answers cross-origin requests as Ollama does, else only for the configured
    `cors_origins` (synapse.api.cors)."""

    def __init__(
        self, gateway: Gateway, routes: Routes, *, keyed: bool, browser: bool = False
    ) -> None:
        self.gateway = gateway
        self.routes = routes
        self.keyed = keyed
        self.screen = cors.screen if browser else cors.screen_keyed

    async def __call__(self, request: Request) -> Response | StreamResponse:
        path = request.path
        try:
            handler, route, request.match_info = self.routes.match(request.method, path)
        except NoRoute as exc:
            handler, route = None, "unmatched"
            no_route: NoRoute | None = exc
        else:
            no_route = None
        if path in QUIET_PATHS and handler is not None:
            return await handler(request)
        started = time.perf_counter()
        request["started"] = started
        trace = new_trace(request.headers.get("X-Request-ID"))
        request["trace"] = trace
        request["route"] = route
        loopwatch.serving(trace, route)
        request.reply_headers["X-Request-ID"] = trace.request_id
        status = 500
        try:
            if (early := self.screen(request, self.gateway)) is not None:
                response: Response | StreamResponse = early
            else:
                response = await self._handle(request, trace, handler, no_route)
            status = 499 if request.get("client_gone") else response.status
        except GatewayError as exc:
            response = error_response(exc, path)
            status = exc.status
        except Exception:
            log.exception("unhandled error", extra={"fields": {"request_id": trace.request_id}})
            response = error_response(GatewayError("internal error in the gateway"), path)
        except BaseException:
            status = 499  # client went away (handler cancelled)
            _finish(request, trace, status, started)
            raise
        _finish(request, trace, status, started)
        return response

    async def _handle(
        self, request: Request, trace: Trace, handler: Any, no_route: NoRoute | None
    ) -> Response | StreamResponse:
        caller = ANONYMOUS
        if request.path not in PUBLIC_PATHS:
            try:
                caller = identify(request, self.gateway.router.config, keyed=self.keyed)
            except Unauthorized:
                if request.path not in KEY_OPTIONAL_PATHS:
                    raise
        request["caller"] = caller
        trace.consumer, trace.priority = caller.label, caller.priority
        trace.allowed = caller.consumer.models if caller.consumer else None
        metrics.CONSUMER.set(caller.label)
        if no_route is not None:
            raise _route_error(request, no_route)
        refuse_encoded_body(request)
        if caller.consumer is None:
            return await handler(request)
        with LIMITS.hold(caller.consumer):  # before any handler can reach a backend
            return await handler(request)

    def refused(self, status: int, message: str) -> Response:
        """The answer to a request the framing layer refused, logged like any other."""
        record(Trace(uuid.uuid4().hex), method="", path="", status=status, error=message)
        return framing_error(status, message)


def _route_error(request: Request, no_route: NoRoute) -> GatewayError:
    if not no_route.allowed:
        return RouteNotFound(
            f"Invalid URL ({request.method} {request.path}): Synapse serves no such route"
        )
    allowed = ", ".join(sorted(no_route.allowed))
    return BadRequest(
        f"{request.method} {request.path}: Method Not Allowed",
        status=405,
        code=None,
        headers={"Allow": allowed},
    )


def new_trace(header: str | None) -> Trace:
    """The caller's id when it is printable ASCII (at most 128 characters), else a fresh one
    (a UUID, which backends get as it is)."""
    if header and _REQUEST_ID.fullmatch(header):
        return Trace(header)
    fresh = os.urandom(16).hex()  # 32 hex digits: a UUID to every parser, 3x cheaper than uuid4
    return Trace(fresh, backend_request_id=fresh)


def refuse_encoded_body(request: Request) -> None:
    """415 for a compressed body: nothing is ever unpacked, so `max_body_bytes` bounds memory.

    The OpenAI and Ollama SDKs never compress requests; a bounded decoder would be code and
    CPU spent on no real client, and a way to turn small requests into large ones.
    """
    encoding = request.headers.get("Content-Encoding", "").strip().lower()
    if encoding not in _IDENTITY:
        raise BadRequest(
            "Content-Encoding on request bodies is not supported; send the body uncompressed",
            status=415,
            code="unsupported_content_encoding",
        )


def has_master_key(request: Request, key: str | None) -> bool:
    return is_master(presented_key(request), key)


_SERIES: dict[tuple[str, str, str, int, str], tuple[Any, Any]] = {}


def _finish(request: Request, trace: Trace, status: int, started: float) -> None:
    loopwatch.done()
    fields: dict[str, object] = {}
    if trace.backend_request_id not in (None, trace.request_id):
        fields["backend_request_id"] = trace.backend_request_id
    if trace.errors:
        fields["errors"] = trace.errors
    if "stream_error" in request:
        fields["stream_error"] = request["stream_error"]
    record(
        trace,
        method=request.method,
        path=request.path,
        status=status,
        route=request["route"],
        elapsed=time.perf_counter() - started,
        **fields,
    )


def record(
    trace: Trace,
    *,
    method: str,
    path: str,
    status: int,
    route: str = "unmatched",
    elapsed: float = 0.0,
    **extra: object,
) -> None:
    """Count a request and write its one log line; also for requests the framing layer refused."""
    group = trace.group or ""
    key = (group, trace.deployment or "", route, status, trace.consumer)
    series = _SERIES.get(key)
    if series is None:  # bounded: groups x deployments x routes x statuses x consumers
        series = _SERIES[key] = (
            metrics.REQUESTS.labels(group, key[1], route, str(status), trace.consumer),
            metrics.REQUEST_DURATION.labels(group, route, trace.consumer),
        )
    series[0].inc()
    series[1].observe(elapsed)
    fields: dict[str, object] = {
        "request_id": trace.request_id,  # checked by new_trace
        "consumer": trace.consumer,
        "method": method,  # an HTTP token (llhttp checked it)
        "path": logs.clean(path),
        "status": status,
        "model": logs.clean(trace.model),
        "group": trace.group,
        "deployment": trace.deployment,
        "latency_ms": round(elapsed * 1000, 2),
        "retries": trace.retries,
        "fallback": trace.fallback,
    }
    for key, value in extra.items():
        fields[key] = logs.clean(value)
    logs.REQUESTS.write(fields, clean_all=False)
