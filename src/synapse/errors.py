"""Errors the gateway answers with; each API surface renders them in its own protocol."""

from __future__ import annotations


class GatewayError(Exception):
    """An error with an HTTP status, rendered as OpenAI JSON on /v1 and Ollama JSON on /api."""

    status = 500
    type = "api_error"
    code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        self.param = param
        if code is not None:
            self.code = code
        self.headers = headers or {}


class BadRequest(GatewayError):
    status = 400
    type = "invalid_request_error"


class Unauthorized(GatewayError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class Forbidden(GatewayError):
    status = 403
    type = "permission_error"


class ModelNotFound(GatewayError):
    status = 404
    type = "invalid_request_error"
    code = "model_not_found"


class RouteNotFound(GatewayError):
    """No such path: a distinct code, so clients do not read it as a missing model."""

    status = 404
    type = "invalid_request_error"
    code = "unknown_url"


class PayloadTooLarge(GatewayError):
    status = 413
    type = "invalid_request_error"
    code = "request_too_large"


class Overloaded(GatewayError):
    """The gateway's own queue for every candidate deployment is full (backpressure)."""

    status = 429
    type = "rate_limit_error"
    code = "overloaded"


class BadGateway(GatewayError):
    status = 502
    type = "api_error"
    code = "bad_gateway"


class Unavailable(GatewayError):
    status = 503
    type = "api_error"
    code = "no_deployment_available"


class GatewayTimeout(GatewayError):
    status = 504
    type = "timeout"
    code = "backend_timeout"


def with_article(word: str) -> str:
    """`word` after "a" or "an" ("an embedding", "a chat"): for mode names, whose first
    letter always says how they sound."""
    return f"{'an' if word[:1].lower() in ('a', 'e', 'i', 'o', 'u') else 'a'} {word}"
