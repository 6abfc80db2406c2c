"""Per-request context: the router snapshot, the trace, and helpers every handler needs."""

from __future__ import annotations

from dataclasses import dataclass

import aiohttp
from aiohttp import web

from synapse.api.protocol import read_json
from synapse.backends import upstream
from synapse.config.schema import SynapseSettings
from synapse.routing import Router, Trace
from synapse.routing.deployment import DeploymentState
from synapse.server.gateway import Gateway

GATEWAY = web.AppKey("gateway", Gateway)


@dataclass(slots=True)
class Context:
    request: web.Request
    gateway: Gateway
    router: Router
    trace: Trace

    @classmethod
    def of(cls, request: web.Request) -> Context:
        gateway = request.app[GATEWAY]
        return cls(request, gateway, gateway.router, request["trace"])

    @property
    def settings(self) -> SynapseSettings:
        return self.router.config.settings

    async def json(self) -> dict:
        settings = self.settings
        return await read_json(self.request, settings.max_body_bytes, settings.body_read_timeout)

    def resolve(self, model: object) -> str:
        self.trace.model = model if isinstance(model, str) else None
        group = self.router.require(model)
        self.trace.group = group
        self.request["caller"].check_model(str(model), group)
        self.router.check_mode(str(model), group, self.request.path)
        return group

    def timeout(
        self, state: DeploymentState, *, streaming: bool = False, total: float | None = None
    ) -> aiohttp.ClientTimeout:
        dep = state.deployment
        settings = self.settings
        if streaming:
            return aiohttp.ClientTimeout(
                total=total or dep.stream_timeout,
                sock_connect=settings.connect_timeout,
                sock_read=settings.stream_idle_timeout,
            )
        return aiohttp.ClientTimeout(
            total=total or dep.timeout, sock_connect=settings.connect_timeout
        )

    async def send(
        self,
        state: DeploymentState,
        url: str,
        payload: object,
        *,
        streaming: bool = False,
        headers: dict[str, str] | None = None,
        total: float | None = None,
        method: str = "POST",
    ) -> upstream.Upstream:
        base = upstream.backend_headers(state, self.trace.upstream_id())
        if headers:
            base.update(headers)
        return await upstream.send(
            self.gateway.http,
            state,
            url,
            data=payload,
            headers=base,
            timeout=self.timeout(state, streaming=streaming, total=total),
            limit=self.settings.max_response_bytes,
            method=method,
        )
