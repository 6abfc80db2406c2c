"""One middleware per listener: request id, auth, errors in the caller's protocol, the log line.

Everything per-request that is not routing lives here, so handlers only route.
"""

from __future__ import annotations

import hmac
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from synapse import logs, metrics
from synapse.api.context import GATEWAY
from synapse.api.protocol import error_response
from synapse.errors import BadRequest, GatewayError, Unauthorized
from synapse.routing import Trace

log = logging.getLogger("synapse.request")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Probes and scrapes: no key, no log line (they would drown the request log).
QUIET_PATHS = frozenset({"/health/liveliness", "/health/readiness", "/metrics"})
PUBLIC_PATHS = QUIET_PATHS | {"/", "/api/version"}


def make_middleware(
    *, keyed: bool
) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    """`keyed`: this listener requires the master key (when one is configured)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path
        if path in QUIET_PATHS:
            return await handler(request)
        started = time.perf_counter()
        request["started"] = started
        trace = Trace(request.headers.get("X-Request-ID", "")[:128] or uuid.uuid4().hex)
        request["trace"] = trace
        route = request.match_info.route.resource
        request["route"] = route.canonical if route is not None else "unmatched"
        status = 500
        try:
            if keyed and path not in PUBLIC_PATHS:
                authenticate(request)
            response = await handler(request)
            status = 499 if request.get("client_gone") else response.status
        except GatewayError as exc:
            response = error_response(exc, path)
            status = exc.status
        except web.HTTPException as exc:  # aiohttp's own: unknown path, wrong method
            error = BadRequest(f"{request.method} {path}: {exc.reason}", status=exc.status)
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


def authenticate(request: web.Request) -> None:
    key = request.app[GATEWAY].router.config.master_key
    if not key:
        return
    if not has_master_key(request, key):
        raise Unauthorized("invalid or missing API key: send 'Authorization: Bearer <key>'")


def has_master_key(request: web.Request, key: str | None) -> bool:
    if not key:
        return False
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        # The Kubernetes API server's service proxy strips Authorization: ops tools use this.
        token = request.headers.get("X-Api-Key", "")
    return hmac.compare_digest(token.strip().encode(), key.encode())


_SERIES: dict[tuple[str, str, str, int], tuple[Any, Any]] = {}


def _finish(request: web.Request, trace: Trace, status: int, started: float) -> None:
    elapsed = time.perf_counter() - started
    group = trace.group or ""
    route = request["route"]
    key = (group, trace.deployment or "", route, status)
    series = _SERIES.get(key)
    if series is None:  # bounded: groups x deployments x routes x statuses
        series = _SERIES[key] = (
            metrics.REQUESTS.labels(group, key[1], route, str(status)),
            metrics.REQUEST_DURATION.labels(group, route),
        )
    series[0].inc()
    series[1].observe(elapsed)
    fields: dict[str, object] = {
        "request_id": trace.request_id,
        "method": request.method,
        "path": request.path,
        "status": status,
        "model": trace.model,
        "group": trace.group,
        "deployment": trace.deployment,
        "latency_ms": round(elapsed * 1000, 2),
        "retries": trace.retries,
        "fallback": trace.fallback,
    }
    if trace.backend_request_id not in (None, trace.request_id):
        fields["backend_request_id"] = trace.backend_request_id
    if trace.errors:
        fields["errors"] = trace.errors
    if "stream_error" in request:
        fields["stream_error"] = request["stream_error"]
    logs.REQUESTS.write(fields)
