"""Assembles each listener's routes and key policy from the API modules."""

from __future__ import annotations

from synapse.api import audio, health, ollama, openai, responses
from synapse.api.protocol import json_response
from synapse.api.surface import Surface
from synapse.gateway import Gateway
from synapse.http.message import Request, Response
from synapse.http.routes import Routes


def _routes() -> Routes:
    routes = Routes()
    routes.add("GET", "/health/liveliness", health.liveliness)
    routes.add("GET", "/health/readiness", health.readiness)
    ollama.add_routes(routes)
    return routes


def main_app(gateway: Gateway) -> Surface:
    """Port 8000: OpenAI API (with and without /v1), Ollama API, health; keyed."""
    routes = _routes()
    routes.add("GET", "/health", health.health)
    for prefix in ("/v1", ""):
        _openai_routes(routes, prefix)
        routes.add("POST", f"{prefix}/audio/transcriptions", audio.transcriptions)
        routes.add("POST", f"{prefix}/audio/translations", audio.translations)
        routes.add("POST", f"{prefix}/audio/speech", audio.speech)
    return Surface(gateway, routes, keyed=True)


def ollama_app(gateway: Gateway) -> Surface:
    """The Ollama-compatible port: consumers change only the host. Keyless unless configured.

    Like real Ollama it also serves OpenAI's API under /v1, under this port's key policy.
    """
    routes = _routes()
    _openai_routes(routes, "/v1")
    return Surface(gateway, routes, keyed=gateway.config.settings.ollama_requires_key, browser=True)


async def metrics_app(request: Request) -> Response:
    """Its own port, so the Ingress (which forwards every path of the main port) cannot
    expose it; only Prometheus is let in by the NetworkPolicy. No key, no log line."""
    if request.path == "/metrics" and request.method in ("GET", "HEAD"):
        return await health.prometheus(request)
    return json_response({"error": "not found: this port serves GET /metrics only"}, 404)


def _openai_routes(routes: Routes, prefix: str) -> None:
    routes.add("GET", f"{prefix}/models", openai.list_models)
    routes.add("GET", prefix + "/models/{model}", openai.retrieve_model)
    routes.add("POST", f"{prefix}/chat/completions", openai.chat_completions)
    routes.add("POST", f"{prefix}/completions", openai.completions)
    routes.add("POST", f"{prefix}/embeddings", openai.embeddings)
    routes.add("POST", f"{prefix}/responses", responses.create)
