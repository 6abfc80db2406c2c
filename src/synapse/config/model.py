"""The validated, resolved configuration the gateway runs on; swapped whole on reload."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from yarl import URL

from synapse.config.schema import Mode, SynapseSettings

OPENAI_COMPATIBLE = frozenset({"openai", "hosted_vllm"})
OLLAMA = frozenset({"ollama", "ollama_chat"})


@dataclass(frozen=True, slots=True)
class Deployment:
    """One backend serving one model group (a `model_list` entry)."""

    id: str
    group: str
    provider: str
    backend_model: str
    api_base: str
    api_key: str | None
    timeout: float
    stream_timeout: float
    mode: Mode | None  # model_info.mode; None: not declared, any route goes
    max_parallel_requests: int | None

    @property
    def api_url(self) -> URL:
        return URL(self.api_base)

    @property
    def host_port(self) -> str:
        """The backend server, as the connection pools count it."""
        url = self.api_url
        return f"{url.host}:{url.port}"

    @property
    def public_api_base(self) -> str:
        """`api_base` without any `user:pass@` (for /health and logs)."""
        return str(self.api_url.with_user(None)) if "@" in self.api_base else self.api_base

    @property
    def speaks_ollama(self) -> bool:
        return self.provider in OLLAMA

    @property
    def openai_base(self) -> str:
        """Base URL of the backend's OpenAI-compatible API (always ends in /v1)."""
        return self.api_base if self.api_base.endswith("/v1") else self.api_base + "/v1"

    @property
    def ollama_base(self) -> str:
        """Root URL of an Ollama server (its native API lives under /api)."""
        return self.api_base.removesuffix("/v1")


@dataclass(frozen=True, slots=True)
class Consumer:
    """A caller with its own key (stored only as a SHA-256 digest), allow-list and limits."""

    name: str
    key_sha256: bytes
    models: frozenset[str] | None  # model group names; None: every model
    priority: str  # interactive | batch
    rpm: int | None  # this pod's share of the deployment-wide limit
    max_parallel: int | None  # this pod's share too


@dataclass(frozen=True, slots=True)
class Config:
    path: Path
    groups: dict[str, tuple[Deployment, ...]]
    aliases: dict[str, str]
    hidden_aliases: frozenset[str]
    fallbacks: dict[str, tuple[str, ...]]
    num_retries: int
    allowed_fails: int
    cooldown_time: float
    retry_after: float
    master_key: str | None
    settings: SynapseSettings
    warnings: tuple[str, ...] = field(default=())
    consumers: tuple[Consumer, ...] = field(default=())
    ollama_consumer: Consumer | None = None

    @property
    def deployments(self) -> tuple[Deployment, ...]:
        return tuple(d for group in self.groups.values() for d in group)
