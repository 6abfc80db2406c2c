"""Active checks: Ollama answers `GET /`; OpenAI-compatible servers `GET /health` or `/v1/models`.

A failed check opens the deployment's breaker at once (routing skips it); a passing check
closes an open breaker: it is the half-open probe that brings a deployment back.
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


async def check_once(gateway: Gateway) -> None:
    states = list(gateway.router.states.values())
    timeout = gateway.config.settings.health_check_timeout
    results = await asyncio.gather(*(probe(gateway.http, s, timeout) for s in states))
    for state, failure in zip(states, results, strict=True):
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
