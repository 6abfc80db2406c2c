"""Assembles the listeners' applications from the API modules."""

from __future__ import annotations

from aiohttp import web

from synapse.api import audio, cors, health, ollama, openai, responses
from synapse.api.context import GATEWAY
from synapse.api.middleware import make_middleware
from synapse.server.gateway import Gateway
from synapse.server.listener import no_banner

# Request bodies are bounded by our own reader (per-route limits, hot-reloadable).
_NO_AIOHTTP_LIMIT = 1 << 40


def _app(gateway: Gateway, *, keyed: bool, browser: bool = False) -> web.Application:
    """`browser`: answer cross-origin requests as Ollama does (synapse.api.cors)."""
    middlewares = [make_middleware(keyed=keyed)]
    if browser:
        middlewares.insert(0, cors.middleware)
    app = web.Application(middlewares=middlewares, client_max_size=_NO_AIOHTTP_LIMIT)
    if browser:
        app.on_response_prepare.append(cors.add_headers)
    app[GATEWAY] = gateway
    app.on_response_prepare.append(no_banner)
    app.router.add_get("/health/liveliness", health.liveliness)
    app.router.add_get("/health/readiness", health.readiness)
    ollama.add_routes(app.router)
    return app


def metrics_app() -> web.Application:
    """Its own port, so the Ingress (which forwards every path of the main port) cannot
    expose it; only Prometheus is let in by the NetworkPolicy."""
    app = web.Application()
    app.on_response_prepare.append(no_banner)
    app.router.add_get("/metrics", health.prometheus)
    return app


def main_app(gateway: Gateway) -> web.Application:
    """Port 8000: OpenAI API (with and without /v1), Ollama API, health; keyed."""
    app = _app(gateway, keyed=True)
    app.router.add_get("/health", health.health)
    for prefix in ("/v1", ""):
        _openai_routes(app.router, prefix)
        app.router.add_post(f"{prefix}/audio/transcriptions", audio.transcriptions)
        app.router.add_post(f"{prefix}/audio/translations", audio.translations)
        app.router.add_post(f"{prefix}/audio/speech", audio.speech)
    return app


def ollama_app(gateway: Gateway) -> web.Application:
    """The Ollama-compatible port: consumers change only the host. Keyless unless configured.

    Like real Ollama it also serves OpenAI's API under /v1, under this port's key policy.
    """
    app = _app(gateway, keyed=gateway.config.settings.ollama_requires_key, browser=True)
    _openai_routes(app.router, "/v1")
    return app


def _openai_routes(router: web.UrlDispatcher, prefix: str) -> None:
    router.add_get(f"{prefix}/models", openai.list_models)
    router.add_get(prefix + "/models/{model:.+}", openai.retrieve_model)
    router.add_post(f"{prefix}/chat/completions", openai.chat_completions)
    router.add_post(f"{prefix}/completions", openai.completions)
    router.add_post(f"{prefix}/embeddings", openai.embeddings)
    router.add_post(f"{prefix}/responses", responses.create)
