"""Active checks: Ollama answers `GET /`; OpenAI-compatible servers `GET /health` or `/v1/models`.

A failed check opens the deployment's breaker at once (routing skips it); a passing check
closes an open breaker: it is the half-open probe that brings a deployment back.

Checks use a connection pool of their own (`Gateway.checks`), so they never wait behind
callers' requests, and a check asks a server once for all the deployments it serves. A
check that times out while that server (host:port) is answering callers (any bytes of an
answer, a stream's pieces included, within the last interval and timeout) is not evidence
that it is down: a busy CPU backend is slow to answer anything, but it is not broken, and
opening its breaker would turn every other model it serves away too. A refused connection or
an error status always counts.
"""

from __future__ import annotations

import asyncio
import logging

from synapse.backends import upstream
from synapse.backends.upstream import ResponseTooLarge
from synapse.gateway import Gateway
from synapse.http.client import ClientError, Pool
from synapse.routing.breaker import State
from synapse.routing.deployment import DeploymentState

log = logging.getLogger("synapse.health")
# A health answer is read whole (so its connection is reused), up to this many bytes.
PROBE_LIMIT = 1 << 20
TIMED_OUT = f"health check: {upstream.reason(TimeoutError())}"


async def probe(pool: Pool, state: DeploymentState, timeout: float) -> str | None:
    """None when the deployment answers; else why not (naming no internal address)."""
    dep = state.deployment
    headers = {"Authorization": f"Bearer {dep.api_key}"} if dep.api_key else None
    urls = (
        [dep.ollama_base + "/"]
        if dep.speaks_ollama
        else [dep.openai_base.removesuffix("/v1") + "/health", dep.openai_base + "/models"]
    )
    failure = "health check failed"
    for url in urls:
        try:
            status, body = await upstream.fetch(
                pool, url, headers=headers, timeout=timeout, limit=PROBE_LIMIT
            )
        except (ClientError, TimeoutError) as exc:
            return f"health check: {upstream.reason(exc)}"
        except ResponseTooLarge:
            return f"health check: answer over {PROBE_LIMIT} bytes"
        if status < 400:
            return None
        failure = f"health check answered {status}"
        if status not in (404, 405):
            # a plain-text answer is the backend's own words, e.g. the local stack's
            # "installing: ~6 min left, see <log>" for an engine not installed yet
            said = body[:200].decode("utf-8", "replace").strip().splitlines()
            return f"{failure}: {said[0]}" if said and said[0][0] not in "{[<" else failure
    return failure


def _server(state: DeploymentState) -> tuple[str, str | None]:
    """What a check asks: one answer holds for every deployment of the same server and key."""
    dep = state.deployment
    return (dep.ollama_base if dep.speaks_ollama else dep.openai_base), dep.api_key


async def check_once(gateway: Gateway) -> None:
    states = list(gateway.router.states.values())
    settings = gateway.config.settings
    timeout = settings.health_check_timeout
    servers = {_server(s): s for s in states}  # one probe per server
    verdicts = await asyncio.gather(*(probe(gateway.checks, s, timeout) for s in servers.values()))
    by_server = dict(zip(servers, verdicts, strict=True))
    # A server that sent callers any bytes of an answer within the window (a stream's pieces
    # included) is busy, not down: its checks timing out say nothing.
    window = settings.health_check_interval + timeout
    answering = gateway.http.heard_since(asyncio.get_running_loop().time() - window)
    for state in states:
        failure = by_server[_server(state)]
        if failure == TIMED_OUT and state.deployment.host_port in answering:
            continue  # busy, not down: its answers to callers say so
        before = state.breaker.state
        if failure is None and before is not State.CLOSED:
            state.breaker.succeeded()
        elif failure is not None:
            state.note_failure(failure)
            if before is not State.OPEN:
                state.breaker.trip()
        if state.breaker.state is not before:
            state.publish_health()
            fields = {
                "event": "health",
                "deployment": state.id,
                "from": before.name.lower(),
                "to": state.breaker.state.name.lower(),
            }
            if failure is not None:
                fields["reason"] = failure
            log.warning("deployment health changed", extra={"fields": fields})


async def run_forever(gateway: Gateway) -> None:
    while True:
        interval = gateway.config.settings.health_check_interval
        if interval <= 0:
            await asyncio.sleep(5)
            continue
        try:
            await check_once(gateway)
        except Exception:
            log.exception("health check round failed")
        await asyncio.sleep(interval)
