"""The router: resolves model names and runs one request across retries and fallbacks.

An attempt that fails before its response starts (`Retryable`) is retried on the same group
(preferring untried deployments) up to `num_retries` times with short backoff, then the
`fallbacks` chain is walked in order. Local backpressure (a full queue) skips straight to the
next group: retrying a saturated group only adds load.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from synapse import metrics
from synapse.backends.upstream import Retryable
from synapse.config import Config
from synapse.errors import (
    BadGateway,
    BadRequest,
    GatewayError,
    GatewayTimeout,
    ModelNotFound,
    Overloaded,
    Unavailable,
    with_article,
)
from synapse.routing.deployment import DeploymentState

T = TypeVar("T")

# Which `model_info.mode` values can serve a route (matched on the path's end).
MODES_BY_ROUTE: tuple[tuple[tuple[str, ...], frozenset[str]], ...] = (
    (
        ("/chat/completions", "/completions", "/responses", "/api/chat", "/api/generate"),
        frozenset({"chat", "completion"}),
    ),
    (("/embeddings", "/api/embed"), frozenset({"embedding"})),
    (("/audio/transcriptions", "/audio/translations"), frozenset({"audio_transcription"})),
    (("/audio/speech",), frozenset({"audio_speech"})),
)


def modes_for(path: str) -> frozenset[str] | None:
    """The modes that can serve `path`; None for routes that are not inference."""
    for suffixes, modes in MODES_BY_ROUTE:
        if path.endswith(suffixes):
            return modes
    return None


@dataclass(slots=True)
class Trace:
    """What happened to one request, for the log line and metrics."""

    request_id: str
    model: str | None = None
    group: str | None = None
    deployment: str | None = None
    retries: int = 0
    fallback: str | None = None
    errors: list[str] = field(default_factory=list)
    backend_request_id: str | None = None
    consumer: str = ""  # consumer name, "master" or "" (anonymous): metrics, log line
    priority: str = "interactive"  # place in a deployment's queue (interactive | batch)
    allowed: frozenset[str] | None = None  # groups the caller may use (None: every group)

    def upstream_id(self) -> str:
        """The id sent to backends: the caller's when it is a UUID, else a fresh UUID.

        Some backends (llama.cpp's server) refuse a non-UUID X-Request-ID with a 400.
        """
        if self.backend_request_id is None:
            try:
                uuid.UUID(self.request_id)
                self.backend_request_id = self.request_id
            except ValueError:
                self.backend_request_id = uuid.uuid4().hex
        return self.backend_request_id


class Router:
    def __init__(self, config: Config, states: dict[str, DeploymentState]) -> None:
        self.config = config
        self.states = states
        self._by_group = {
            name: tuple(states[d.id] for d in deps) for name, deps in config.groups.items()
        }

    # -- names ---------------------------------------------------------------------------
    def resolve(self, name: str, *, listed: bool = False) -> str | None:
        """Model name, alias, or either with Ollama's implicit `:latest` tag → group name.

        `listed`: only names that model lists show (a hidden alias resolves to nothing).
        """
        for candidate in _spellings(name):
            if candidate in self._by_group:
                return candidate
            if listed and candidate in self.config.hidden_aliases:
                continue
            target = self.config.aliases.get(candidate)
            if target is not None:
                return target
        return None

    def require(self, name: object, path: str, may_use: Callable[[str], bool]) -> str:
        """The group `name` resolves to; a 404 suggesting only what the caller may use."""
        if not isinstance(name, str) or not name:
            raise BadRequest("'model' is required and must be a string", param="model")
        group = self.resolve(name)
        if group is None:
            offer = ", ".join(self.offer(path, may_use)) or "none"
            raise ModelNotFound(
                f"model {name!r} not found; available models: {offer}", param="model"
            )
        return group

    def check_mode(self, name: str, group: str, path: str, may_use: Callable[[str], bool]) -> None:
        """A clear 400, before any backend is touched, for a route the model cannot serve.

        Sent on, the backend would answer with an error (often a 500) that is the caller's
        mistake but would count against the backend's breaker. Groups that declare no
        `model_info.mode` take every route.
        """
        wanted = modes_for(path)
        declared = self._modes(group)
        if wanted is None or not declared or declared & wanted:
            return
        fitting = ", ".join(self.offer(path, may_use)) or "none available"
        kind = with_article("/".join(sorted(declared)))
        raise BadRequest(
            f"model {name!r} is {kind} model (model_info.mode) and "
            f"cannot serve {path}; models that can: {fitting}",
            param="model",
        )

    def _modes(self, group: str) -> set[str]:
        return {d.mode for d in self.config.groups.get(group, ()) if d.mode is not None}

    def public_names(self) -> list[str]:
        visible = (a for a in self.config.aliases if a not in self.config.hidden_aliases)
        return [*self.config.groups, *visible]

    def offer(self, path: str, may_use: Callable[[str], bool]) -> list[str]:
        """The listed names a caller may use that can serve `path`: all an error suggests.

        A consumer never learns of models outside its allow-list, nor anyone of hidden ones.
        """
        wanted = modes_for(path)
        names = []
        for name in self.public_names():
            group = name if name in self._by_group else self.config.aliases[name]
            declared = self._modes(group)
            if may_use(group) and (wanted is None or not declared or declared & wanted):
                names.append(name)
        return names

    def group_states(self, group: str) -> tuple[DeploymentState, ...]:
        return self._by_group[group]

    # -- selection -----------------------------------------------------------------------
    def pick(self, group: str, tried: set[str]) -> DeploymentState | None:
        """Least in-flight among deployments whose breaker allows traffic; ties at random."""
        best: list[DeploymentState] = []
        best_key: tuple[bool, int] | None = None
        for state in self._by_group[group]:
            if not state.breaker.allows():
                continue
            key = (state.id in tried, state.in_flight)
            if best_key is None or key < best_key:
                best, best_key = [state], key
            elif key == best_key:
                best.append(state)
        if not best:
            return None
        return best[0] if len(best) == 1 else random.choice(best)

    def _none_healthy(self, group: str, tried: set[str]) -> str:
        """Why no deployment of `group` may take a request: each one's last failure."""
        why = [
            f"{s.id}: {s.failure_text() or 'circuit open'}"
            for s in self._by_group[group]
            if s.id not in tried
        ]
        detail = f" ({'; '.join(why)})" if why else ""
        return f"no healthy deployment for {group!r}{detail}"

    # -- execution -----------------------------------------------------------------------
    def chain(self, group: str, trace: Trace) -> tuple[str, ...]:
        """`group`, then its fallbacks that the caller may use: a consumer is only ever
        answered by models on its allow-list, however the primary fails."""
        fallbacks = self.config.fallbacks.get(group, ())
        allowed = trace.allowed
        return (group, *(g for g in fallbacks if allowed is None or g in allowed))

    async def run(
        self,
        group: str,
        attempt: Callable[[DeploymentState], Awaitable[T]],
        trace: Trace,
    ) -> T:
        """Run `attempt` on a deployment of `group` (or its fallbacks) until one answers.

        On success the attempt's result owns the deployment slot and must release it.
        """
        config = self.config
        backoff = max(config.settings.retry_backoff, config.retry_after)
        errors: list[Exception] = []
        trace.group = group
        for n, current in enumerate(self.chain(group, trace)):
            if n:
                trace.fallback = current
                metrics.FALLBACKS.labels(group, current).inc()
            tried: set[str] = set()
            for attempt_no in range(config.num_retries + 1):
                state = self.pick(current, tried)
                if state is None:
                    errors.append(Unavailable(self._none_healthy(current, tried)))
                    break
                if attempt_no:
                    trace.retries += 1
                    metrics.RETRIES.labels(current, state.id).inc()
                    await asyncio.sleep(backoff * 2 ** (attempt_no - 1))
                tried.add(state.id)
                try:
                    await state.acquire(trace.priority)
                except Overloaded as exc:
                    errors.append(exc)
                    break
                state.breaker.begin()
                trace.deployment = state.id
                try:
                    result = await attempt(state)
                except Retryable as exc:
                    state.release()
                    if exc.status != 429:  # a busy backend is not a broken one
                        state.record(ok=False, reason=exc.reason)
                    trace.errors.append(exc.message)
                    errors.append(exc)
                    continue
                except BaseException:
                    state.release()
                    state.breaker.abandon()
                    raise
                state.record(ok=True)
                return result
        raise _final_error(group, errors)


def _spellings(name: str) -> tuple[str, ...]:
    if name.endswith(":latest"):
        return (name, name.removesuffix(":latest"))
    if ":" not in name:
        return (name, name + ":latest")
    return (name,)


def _final_error(group: str, errors: list[Exception]) -> GatewayError:
    """The most telling error once every deployment of every group has failed."""
    if errors and all(isinstance(e, Overloaded) for e in errors):
        return errors[-1]  # type: ignore[return-value]
    failures = [e for e in errors if isinstance(e, Retryable)]
    detail = "; ".join(e.message for e in failures) or "; ".join(str(e) for e in errors)
    if failures and all(e.kind == "timeout" for e in failures):
        return GatewayTimeout(f"backends for {group!r} timed out: {detail}")
    if failures and all(e.status == 429 for e in failures):
        return Overloaded(
            f"backends for {group!r} are busy: {detail}", headers={"Retry-After": "1"}
        )
    if failures and all(e.kind == "status" for e in failures):
        return BadGateway(f"backends for {group!r} failed: {detail}")
    return Unavailable(f"no deployment available for {group!r}: {detail}")
