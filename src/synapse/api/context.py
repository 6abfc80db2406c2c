"""Per-request context: the router snapshot, the trace, and helpers every handler needs."""

from __future__ import annotations

from dataclasses import dataclass

from synapse.api.protocol import read_json
from synapse.backends import upstream
from synapse.config.schema import SynapseSettings
from synapse.gateway import Gateway
from synapse.http.client import Timeout
from synapse.http.message import Request
from synapse.routing import Router, Trace
from synapse.routing.deployment import DeploymentState


@dataclass(slots=True)
class Context:
    request: Request
    gateway: Gateway
    router: Router
    trace: Trace

    @classmethod
    def of(cls, request: Request) -> Context:
        gateway: Gateway = request.app.gateway
        return cls(request, gateway, gateway.router, request["trace"])

    @property
    def settings(self) -> SynapseSettings:
        return self.router.config.settings

    async def json(self) -> dict:
        settings = self.settings
        return await read_json(self.request, settings.max_body_bytes, settings.body_read_timeout)

    def resolve(self, model: object) -> str:
        self.trace.model = model if isinstance(model, str) else None
        caller, path = self.request["caller"], self.request.path
        group = self.router.require(model, path, caller.may_use)
        self.trace.group = group
        caller.check_model(str(model), group)
        self.router.check_mode(str(model), group, path, caller.may_use)
        return group

    def timeout(
        self, state: DeploymentState, *, streaming: bool = False, total: float | None = None
    ) -> Timeout:
        dep = state.deployment
        settings = self.settings
        if streaming:
            return Timeout(
                total or dep.stream_timeout,
                settings.connect_timeout,
                settings.stream_idle_timeout,
            )
        return Timeout(total or dep.timeout, settings.connect_timeout)

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
