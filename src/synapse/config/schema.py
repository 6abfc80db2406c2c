"""The config file's shape: LiteLLM's proxy format plus Synapse's own `synapse_settings` block.

LiteLLM sections allow unknown keys (the same file drives a LiteLLM proxy); the loader warns
about each one so nothing is silently misread. `synapse_settings` is ours and strict.
"""

from __future__ import annotations

import re
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

# scheme://host[:port] as in a browser's Origin header; `*` stands for any text.
_ORIGIN = re.compile(r"[a-z][a-z0-9+.-]*://[A-Za-z0-9*.\-\[\]:]+")
PROVIDERS = ("ollama", "ollama_chat", "hosted_vllm", "openai")
Mode = Literal["chat", "completion", "embedding", "audio_transcription", "audio_speech"]


class _LiteLLMSection(BaseModel):
    model_config = ConfigDict(extra="allow")


class LiteLLMParams(_LiteLLMSection):
    model: str
    api_base: str | None = None
    api_key: str | None = None
    timeout: float | None = Field(default=None, gt=0)
    stream_timeout: float | None = Field(default=None, gt=0)
    max_parallel_requests: int | None = Field(default=None, ge=1)

    @field_validator("model")
    @classmethod
    def _provider_prefix(cls, value: str) -> str:
        provider, _, backend_model = value.partition("/")
        if provider not in PROVIDERS or not backend_model:
            raise ValueError(
                f"expected '<provider>/<backend model>' with provider one of {', '.join(PROVIDERS)}"
            )
        return value

    @field_validator("api_base")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        """A URL the backend client would refuse at request time is refused here, at load."""
        if value is None:
            return value
        if not value.startswith(("http://", "https://")):
            raise ValueError("expected an http:// or https:// URL")
        if any(c.isspace() or not c.isprintable() for c in value):
            raise ValueError("expected a URL without whitespace or control characters")
        try:
            host = urlsplit(value).hostname
        except ValueError as exc:
            raise ValueError(f"expected a valid URL ({exc})") from None
        if not host:
            raise ValueError("expected a URL with a host, e.g. http://ollama:11434")
        return value


class ModelInfo(_LiteLLMSection):
    id: str | None = None
    mode: Mode | None = None
    # Deployments (and fallback groups) of different embedding models declared to return
    # comparable vectors; see config/spaces.py.
    embedding_space: str | None = Field(default=None, min_length=1)


class ModelEntry(_LiteLLMSection):
    model_name: str = Field(min_length=1)
    litellm_params: LiteLLMParams
    model_info: ModelInfo = ModelInfo()


class AliasTarget(_LiteLLMSection):
    model: str
    hidden: bool = False


class RouterSettings(_LiteLLMSection):
    fallbacks: list[dict[str, list[str]]] = []
    num_retries: int = Field(default=2, ge=0, le=10)
    timeout: float = Field(default=600.0, gt=0)
    stream_timeout: float | None = Field(default=None, gt=0)
    model_group_alias: dict[str, str | AliasTarget] = {}
    allowed_fails: int = Field(default=3, ge=1)
    cooldown_time: float = Field(default=30.0, ge=0)
    retry_after: float = Field(default=0.0, ge=0)
    routing_strategy: str | None = None


class GeneralSettings(_LiteLLMSection):
    master_key: str | None = None


class ConsumerEntry(BaseModel):
    """One caller of the gateway with its own key; see README "Consumers"."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
    key: str | None = None  # usually os.environ/NAME
    key_sha256: str | None = Field(default=None, pattern=r"^[0-9a-fA-F]{64}$")
    models: list[str] | None = None  # model groups or aliases; None: every model
    priority: Literal["interactive", "batch"] = "interactive"
    rpm: int | None = Field(default=None, ge=1)
    max_parallel: int | None = Field(default=None, ge=1)


class EmbeddingBatching(BaseModel):
    """Embedding requests held while a group's backend is busy, sent as one call."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    max_batch: int = Field(default=32, ge=1)  # texts in one backend call
    max_bytes: int = Field(default=1024 * 1024, ge=1024)  # UTF-8 bytes of those texts
    # Embedding calls in flight per group when its deployments do not all declare
    # max_parallel_requests (then their sum is the bound): one caller's flood cannot take
    # the backend's whole connection pool.
    max_in_flight: int = Field(default=16, ge=1)


class EmbeddingCache(BaseModel):
    """(group, text, parameters) → vector, in memory, least recently used evicted first."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    max_mb: float = Field(default=64, gt=0)
    ttl: float = Field(default=3600.0, ge=0)  # seconds; 0 keeps entries until evicted


class SynapseSettings(BaseModel):
    """Knobs LiteLLM has no name for. Strict: a typo here is an error, not a warning."""

    model_config = ConfigDict(extra="forbid")

    ollama_port: int | None = Field(default=None, ge=1, le=65535)
    ollama_requires_key: bool = False
    # Browser origins the Ollama port accepts besides Ollama's defaults (OLLAMA_ORIGINS syntax).
    ollama_origins: list[str] = []
    # Browser origins the keyed port answers CORS for (preflights without a key); none by default.
    cors_origins: list[str] = []
    metrics_port: int = Field(default=9090, ge=0, le=65535)
    header_read_timeout: float = Field(default=10.0, gt=0)
    # An idle client connection is closed after this; longer than the idle timeout of the
    # proxies in front (Traefik: 90 s), so a proxy never sends on a connection we are closing.
    keepalive_timeout: float = Field(default=120.0, gt=0)
    body_read_timeout: float = Field(default=60.0, gt=0)
    max_body_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    # Texts per embeddings request (OpenAI's own limit): each costs the loop a cache lookup
    # and a translation, so half a million tiny texts in 16 MiB would stall every caller.
    max_embedding_inputs: int = Field(default=2048, ge=1)
    max_audio_bytes: int = Field(default=25 * 1024 * 1024, ge=1024)
    audio_timeout: float = Field(default=900.0, gt=0)
    connect_timeout: float = Field(default=5.0, gt=0)
    stream_idle_timeout: float = Field(default=120.0, gt=0)
    # How long one write to a client may wait: a client that stops reading is cut after it
    # and its backend request cancelled, so it cannot hold a backend slot.
    write_timeout: float = Field(default=30.0, gt=0)
    # The largest answer read from a backend (whole body, or one SSE/NDJSON line).
    max_response_bytes: int = Field(default=64 * 1024 * 1024, ge=64 * 1024)
    # Connections to one backend host:port; raised to above the sum of the
    # max_parallel_requests sharing that host when that is larger.
    backend_connections: int = Field(default=64, ge=1)
    retry_backoff: float = Field(default=0.05, ge=0)
    queue_size: int = Field(default=128, ge=0)
    queue_timeout: float = Field(default=30.0, gt=0)
    health_check_interval: float = Field(default=15.0, ge=0)
    health_check_timeout: float = Field(default=5.0, gt=0)
    reload_interval: float = Field(default=2.0, ge=0)
    drain_delay: float = Field(default=5.0, ge=0)
    shutdown_grace: float = Field(default=25.0, ge=0)
    # The event loop late by more than this (seconds) logs one line naming the code and the
    # request running (synapse.loopwatch); 0: no line (the lag metric is always kept).
    loop_stall_threshold: float = Field(default=0.25, ge=0, le=60)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    consumers: list[ConsumerEntry] = []
    # The consumer whose allow-list and limits apply to keyless callers of the Ollama port.
    ollama_consumer: str | None = None
    # Gateway pods sharing the consumers' limits: each enforces rpm/replicas, max_parallel/replicas.
    replicas: int = Field(default=1, ge=1)
    # Seconds a queued batch request counts as having arrived later than an interactive one;
    # once it has waited that long it goes before interactive requests queued after it.
    batch_aging: float = Field(default=10.0, ge=0)

    embedding_batching: EmbeddingBatching = EmbeddingBatching()
    embedding_cache: EmbeddingCache = EmbeddingCache()

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        """Each entry as a browser sends `Origin`: a typo here would silently allow nothing."""
        for n, origin in enumerate(value):
            if origin != "*" and not (_ORIGIN.fullmatch(origin) and origin.count("*") <= 1):
                raise ValueError(
                    f"entry {n} ({origin!r}): expected an origin such as "
                    "https://chat.example.com (scheme://host[:port], no path; one '*' "
                    "allowed, e.g. https://*.example.com), or '*' for any origin"
                )
        return value


class ConfigFile(_LiteLLMSection):
    model_list: list[ModelEntry] = Field(min_length=1)
    router_settings: RouterSettings = RouterSettings()
    general_settings: GeneralSettings = GeneralSettings()
    litellm_settings: dict[str, object] = {}
    synapse_settings: SynapseSettings = SynapseSettings()
