"""Liveness, readiness (LiteLLM's paths, no key), per-deployment health (operator), metrics."""

from __future__ import annotations

import time

from synapse import metrics
from synapse.api.protocol import json_response
from synapse.errors import Forbidden
from synapse.http.message import Request, Response


async def liveliness(request: Request) -> Response:
    return json_response({"status": "alive"})


async def readiness(request: Request) -> Response:
    """Ready while the gateway itself can serve: not draining. A dead backend is not our fault."""
    gateway = request.app.gateway
    if gateway.ready and not gateway.draining:
        return json_response({"status": "ready"})
    return json_response({"status": "draining" if gateway.draining else "starting"}, status=503)


async def health(request: Request) -> Response:
    """Every deployment's backend, state and load: topology, for the operator only.

    A consumer sees its models at `GET /v1/models`; probes use the keyless paths above.
    """
    if request["caller"].consumer is not None:
        raise Forbidden(
            "/health shows every deployment and is for the master key; "
            "GET /v1/models lists the models this key may use"
        )
    router = request.app.gateway.router
    deployments = [state.snapshot() for state in router.states.values()]
    for item in deployments:
        item["since"] = _iso(item["since"])  # type: ignore[arg-type]
        if isinstance(failure := item["last_failure"], dict):
            failure["at"] = _iso(failure["at"])
    healthy = [d for d in deployments if d["state"] != "open"]
    unhealthy = [d for d in deployments if d["state"] == "open"]
    return json_response(
        {
            "healthy_count": len(healthy),
            "unhealthy_count": len(unhealthy),
            "healthy_endpoints": healthy,
            "unhealthy_endpoints": unhealthy,
        }
    )


def _iso(unix: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(unix))


async def prometheus(request: Request) -> Response:
    return Response(
        body=metrics.exposition(),
        headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
    )
