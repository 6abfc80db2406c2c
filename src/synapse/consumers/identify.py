"""Who is calling: the master key, a consumer's key, or (keyless listener) its consumer.

Every comparison is constant-time and every consumer is compared, so the time taken says
nothing about which key, or how much of one, matched.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from synapse.config import Config
from synapse.config.consumers import MASTER
from synapse.config.model import Consumer
from synapse.errors import BadRequest, Forbidden, Unauthorized
from synapse.http.message import Request


@dataclass(frozen=True, slots=True)
class Caller:
    """`consumer` None: the master key's holder or an anonymous caller of an open listener."""

    label: str  # consumer name, "master", or "" (anonymous): metrics and the log line
    consumer: Consumer | None = None

    @property
    def priority(self) -> str:
        return self.consumer.priority if self.consumer else "interactive"

    def may_use(self, group: str | None) -> bool:
        allowed = self.consumer.models if self.consumer else None
        return allowed is None or group in allowed

    def check_model(self, name: str, group: str) -> None:
        """403 naming the model when it is outside the consumer's allow-list."""
        if self.may_use(group):
            return
        allowed = sorted(self.consumer.models or ()) if self.consumer else []
        raise Forbidden(
            f"consumer {self.label!r} may not use model {name!r}; "
            f"allowed: {', '.join(allowed) or 'none'}",
            param="model",
            code="model_not_allowed",
        )


ANONYMOUS = Caller("")
OPERATOR = Caller(MASTER)


def presented_key(request: Request) -> str:
    """`Authorization: Bearer <key>`, else `X-Api-Key` (the Kubernetes API server's service
    proxy strips Authorization: ops tools use this); "" when neither is sent."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        token = request.headers.get("X-Api-Key", "")
    token = token.strip()
    if not (token.isascii() and token.isprintable()):  # bytes the header decoder could not map
        raise BadRequest("malformed API key: expected printable ASCII after 'Bearer '")
    return token


def is_master(token: str, master_key: str | None) -> bool:
    return bool(master_key) and hmac.compare_digest(token.encode(), (master_key or "").encode())


def find_consumer(token: str, consumers: tuple[Consumer, ...]) -> Consumer | None:
    digest = hashlib.sha256(token.encode()).digest()
    found = None
    for consumer in consumers:  # no early exit: constant time in the position of the match
        if hmac.compare_digest(digest, consumer.key_sha256):
            found = consumer
    return found


def identify(request: Request, config: Config, *, keyed: bool) -> Caller:
    """The caller of this request; 401 on a keyed listener without a valid key.

    A keyed listener needs a key once a master key or any consumer is configured (fail
    closed). On the keyless Ollama listener a valid key still names its holder; everyone
    else is `ollama_consumer` (when set), so its allow-list and limits apply there too.
    """
    try:
        token = presented_key(request)
    except BadRequest:
        if keyed:
            raise
        token = ""  # an open listener ignores what it cannot read, as it always has
    if token:
        if is_master(token, config.master_key):
            return OPERATOR
        consumer = find_consumer(token, config.consumers)
        if consumer is not None:
            return Caller(consumer.name, consumer)
    if keyed and (config.master_key or config.consumers):
        raise Unauthorized("invalid or missing API key: send 'Authorization: Bearer <key>'")
    if config.ollama_consumer is not None and not keyed:
        return Caller(config.ollama_consumer.name, config.ollama_consumer)
    return ANONYMOUS
