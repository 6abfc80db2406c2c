"""One middleware per listener: request id, auth, errors in the caller's protocol, the log line.

Everything per-request that is not routing lives here, so handlers only route.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from synapse import logs, metrics
from synapse.api.context import GATEWAY
from synapse.api.protocol import error_response
from synapse.consumers.identify import ANONYMOUS, identify, is_master, presented_key
from synapse.consumers.limits import LIMITS
from synapse.errors import BadRequest, GatewayError, RouteNotFound
from synapse.routing import Trace

log = logging.getLogger("synapse.request")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Probes: no key, no log line (they would drown the request log).
QUIET_PATHS = frozenset({"/health/liveliness", "/health/readiness"})
# /metrics lives on the metrics listener only: here it is a plain 404, keyed or not.
PUBLIC_PATHS = QUIET_PATHS | {"/", "/api/version", "/metrics"}
# A caller's X-Request-ID is echoed in a header and the log: printable ASCII only, bounded.
_REQUEST_ID = re.compile(r"[!-~]{1,128}")
_IDENTITY = frozenset({"", "identity"})


def make_middleware(
    *, keyed: bool
) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    """`keyed`: this listener requires a key (when a master key or consumers are configured)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path
        if path in QUIET_PATHS:
            return await handler(request)
        started = time.perf_counter()
        request["started"] = started
        trace = Trace(request_id(request.headers.get("X-Request-ID")))
        request["trace"] = trace
        route = request.match_info.route.resource
        request["route"] = route.canonical if route is not None else "unmatched"
        status = 500
        try:
            caller = ANONYMOUS
            if path not in PUBLIC_PATHS:
                caller = identify(request, request.app[GATEWAY].router.config, keyed=keyed)
            request["caller"] = caller
            trace.consumer, trace.priority = caller.label, caller.priority
            metrics.CONSUMER.set(caller.label)
            refuse_encoded_body(request)
            if caller.consumer is None:
                response = await handler(request)
            else:  # limits are checked here, before any handler can reach a backend
                with LIMITS.hold(caller.consumer):
                    response = await handler(request)
            status = 499 if request.get("client_gone") else response.status
        except GatewayError as exc:
            response = error_response(exc, path)
            status = exc.status
        except web.HTTPException as exc:  # aiohttp's own: unknown path, wrong method
            if exc.status == 404:
                error: GatewayError = RouteNotFound(
                    f"Invalid URL ({request.method} {path}): Synapse serves no such route"
                )
            else:
                error = BadRequest(
                    f"{request.method} {path}: {exc.reason}", status=exc.status, code=None
                )
            response = error_response(error, path)
            status = exc.status
        except Exception:
            log.exception("unhandled error", extra={"fields": {"request_id": trace.request_id}})
            response = error_response(GatewayError("internal error in the gateway"), path)
        except BaseException:
            status = 499  # client went away (handler cancelled)
            _finish(request, trace, status, started)
            raise
        if not response.prepared:
            response.headers["X-Request-ID"] = trace.request_id
        _finish(request, trace, status, started)
        return response

    return middleware


def request_id(header: str | None) -> str:
    """The caller's id when it is printable ASCII (at most 128 characters), else a fresh one."""
    if header and _REQUEST_ID.fullmatch(header):
        return header
    return uuid.uuid4().hex


def refuse_encoded_body(request: web.Request) -> None:
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


def has_master_key(request: web.Request, key: str | None) -> bool:
    return is_master(presented_key(request), key)


_SERIES: dict[tuple[str, str, str, int, str], tuple[Any, Any]] = {}


def _finish(request: web.Request, trace: Trace, status: int, started: float) -> None:
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
    """Count a request and write its one log line; also for requests aiohttp could not parse."""
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
    logs.REQUESTS.write(
        {
            "request_id": trace.request_id,
            "consumer": trace.consumer,
            "method": method,
            "path": path,
            "status": status,
            "model": trace.model,
            "group": trace.group,
            "deployment": trace.deployment,
            "latency_ms": round(elapsed * 1000, 2),
            "retries": trace.retries,
            "fallback": trace.fallback,
            **extra,
        }
    )
