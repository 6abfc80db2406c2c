"""Cross-origin requests from browsers, on both ports.

The Ollama port answers as Ollama does (OLLAMA_ORIGINS): browser-based Ollama clients (web
UIs, editor webviews, desktop apps) call it from their own origin. Ollama allows loopback
origins and app schemes by default and more through OLLAMA_ORIGINS; Synapse does the same,
with `synapse_settings.ollama_origins` for the additions. An origin outside the list gets
403, as from Ollama.

The keyed port serves CORS only for `synapse_settings.cors_origins` (none by default), for
browser apps that call it with a key (Open WebUI's direct connections): a preflight carries
no credentials by design, so it is answered without a key; the request that follows still
needs one. Other origins get no CORS headers (their preflights a 403 naming the setting).

A pattern may hold one `*` (any text there); `*` alone allows every origin.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from synapse.api.protocol import json_response
from synapse.errors import Forbidden
from synapse.http.message import Request, Response

if TYPE_CHECKING:
    from synapse.gateway import Gateway

LOOPBACK_ORIGINS = tuple(
    f"{scheme}://{host}{port}"
    for host in ("localhost", "127.0.0.1", "0.0.0.0")
    for scheme in ("http", "https")
    for port in ("", ":*")
)
DEFAULT_ORIGINS = (
    *LOOPBACK_ORIGINS,
    "app://*",
    "file://*",
    "tauri://*",
    "vscode-webview://*",
    "vscode-file://*",
)

ALLOW_METHODS = "GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS"
ALLOW_HEADERS = ", ".join(
    [
        "Authorization",
        "Content-Type",
        "User-Agent",
        "Accept",
        "X-Requested-With",
        "X-Request-ID",
        "X-Api-Key",
        "OpenAI-Beta",
        *(
            f"x-stainless-{h}"
            for h in (
                "arch",
                "async",
                "custom-poll-interval",
                "helper-method",
                "lang",
                "os",
                "package-version",
                "poll-helper",
                "retry-count",
                "runtime",
                "runtime-version",
                "timeout",
            )
        ),
    ]
)


def matches(pattern: str, origin: str) -> bool:
    pattern, origin = pattern.strip().lower().rstrip("/"), origin.lower()
    if pattern == "*":
        return True
    head, star, tail = pattern.partition("*")
    if not star:
        return origin == pattern
    return (
        len(origin) >= len(head) + len(tail) and origin.startswith(head) and origin.endswith(tail)
    )


def allowed(request: Request, origin: str, extra: list[str]) -> bool:
    if origin in (f"http://{request.host}", f"https://{request.host}"):
        return True  # same origin: not a cross-origin request at all
    return any(matches(p, origin) for p in (*DEFAULT_ORIGINS, *extra))


def screen(request: Request, gateway: Gateway) -> Response | None:
    """Refuses foreign origins and answers preflights, before the key is asked for; every
    answer to an allowed origin (streams and errors included) says so."""
    origin = request.headers.get("Origin")
    if not origin:
        return None
    if not allowed(request, origin, gateway.router.config.settings.ollama_origins):
        return json_response(
            {
                "error": f"origin {origin} is not allowed: add it to "
                "synapse_settings.ollama_origins (as OLLAMA_ORIGINS for Ollama)"
            },
            status=403,
        )
    return _allow(request, origin)


def screen_keyed(request: Request, gateway: Gateway) -> Response | None:
    """The keyed port: preflights from `cors_origins` answered (before the key is asked for),
    and every answer to them (errors such as 401 included) readable by the page."""
    origin = request.headers.get("Origin")
    patterns = gateway.router.config.settings.cors_origins
    if not origin or not patterns:
        return None
    if not any(matches(p, origin) for p in patterns):
        if _is_preflight(request):
            raise Forbidden(
                f"origin {origin} is not allowed: add it to synapse_settings.cors_origins"
            )
        return None  # not a browser's concern: no CORS headers, the key decides as ever
    return _allow(request, origin)


def _is_preflight(request: Request) -> bool:
    return request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers


def _allow(request: Request, origin: str) -> Response | None:
    request.reply_headers["Access-Control-Allow-Origin"] = origin
    request.reply_headers["Vary"] = "Origin"
    if _is_preflight(request):
        return Response(
            status=204,
            headers={
                "Access-Control-Allow-Methods": ALLOW_METHODS,
                "Access-Control-Allow-Headers": ALLOW_HEADERS,
                "Access-Control-Max-Age": "43200",
            },
        )
    return None
