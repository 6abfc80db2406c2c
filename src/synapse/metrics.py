"""Prometheus metrics: the cluster's only view of backends that export none (Ollama, Speaches).

Every series the alerts and the dashboard use is defined here, so a test can check them
against this registry instead of against a running process.
"""

from __future__ import annotations

from contextvars import ContextVar

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)

disable_created_metrics()  # halves the exposition; *_created series are unused here

REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)  # process_resident_memory_bytes, process_cpu_seconds_total

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)

# The consumer label of the request the current task serves (set by the request middleware),
# so code that counts tokens or audio deep in a relay need not be handed it.
CONSUMER: ContextVar[str] = ContextVar("consumer", default="")

REQUESTS = Counter(
    "synapse_requests",
    "Requests answered, by model group, deployment, route, HTTP status and consumer.",
    ["model", "deployment", "route", "status", "consumer"],
    registry=REGISTRY,
)
REQUEST_DURATION = Histogram(
    "synapse_request_duration_seconds",
    "Time from request received to response complete (streams: last byte).",
    ["model", "route", "consumer"],
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
TIME_TO_FIRST_TOKEN = Histogram(
    "synapse_time_to_first_token_seconds",
    "Streaming requests: time from request received to the first body chunk sent.",
    ["model", "route"],
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
IN_FLIGHT = Gauge(
    "synapse_requests_in_flight",
    "Requests currently being served by a deployment.",
    ["deployment"],
    registry=REGISTRY,
)
QUEUED = Gauge(
    "synapse_requests_queued",
    "Requests waiting for a free slot on a deployment (max_parallel_requests).",
    ["deployment"],
    registry=REGISTRY,
)
RETRIES = Counter(
    "synapse_retries",
    "Attempts repeated after a retryable failure, by model group and failed deployment.",
    ["model", "deployment"],
    registry=REGISTRY,
)
FALLBACKS = Counter(
    "synapse_fallbacks",
    "Requests moved to a fallback model group.",
    ["from_model", "to_model"],
    registry=REGISTRY,
)
DEPLOYMENT_UP = Gauge(
    "synapse_deployment_up",
    "1 when the deployment's circuit breaker is closed or half-open, 0 when open.",
    ["model", "deployment", "provider"],
    registry=REGISTRY,
)
BREAKER_STATE = Gauge(
    "synapse_circuit_breaker_state",
    "Circuit breaker state per deployment: 0 closed, 1 half-open, 2 open.",
    ["deployment"],
    registry=REGISTRY,
)
PROMPT_TOKENS = Counter(
    "synapse_prompt_tokens",
    "Prompt tokens reported by backends.",
    ["model", "consumer"],
    registry=REGISTRY,
)
COMPLETION_TOKENS = Counter(
    "synapse_completion_tokens",
    "Completion tokens reported by backends.",
    ["model", "consumer"],
    registry=REGISTRY,
)
AUDIO_BYTES = Counter(
    "synapse_audio_bytes",
    "Audio bytes uploaded for transcription (direction=in) or returned by speech (out).",
    ["model", "direction", "consumer"],
    registry=REGISTRY,
)
CONFIG_RELOADS = Counter(
    "synapse_config_reloads",
    "Configuration reloads, by result (ok, failed).",
    ["result"],
    registry=REGISTRY,
)


EMBEDDING_BATCH_SIZE = Histogram(
    "synapse_embedding_batch_size",
    "Texts per embedding call sent to a backend (1: no company to batch with).",
    ["model"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
    registry=REGISTRY,
)
EMBEDDING_BATCH_WAIT = Histogram(
    "synapse_embedding_batch_wait_seconds",
    "Time an embedding request waited for its batch to be sent (0 when sent at once).",
    ["model"],
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
    registry=REGISTRY,
)
EMBEDDING_HELD = Gauge(
    "synapse_embedding_requests_held",
    "Embedding requests held while their group's backend is at capacity, waiting for a call.",
    ["model"],
    registry=REGISTRY,
)
EMBEDDING_CACHE = Counter(
    "synapse_embedding_cache",
    "Embedding cache lookups and removals, by result (hit, miss, eviction, expired).",
    ["result"],
    registry=REGISTRY,
)
EMBEDDING_CACHE_BYTES = Gauge(
    "synapse_embedding_cache_bytes",
    "Bytes held by the embedding cache (vectors, texts and entry overhead).",
    registry=REGISTRY,
)
EVENT_LOOP_LAG = Histogram(
    "synapse_event_loop_lag_seconds",
    "How late the event loop's 100 ms timer woke: every caller waited at least this long.",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
    registry=REGISTRY,
)


for _result in ("ok", "failed"):  # present at 0 from the start, so increase() sees the first
    CONFIG_RELOADS.labels(_result)
for _result in ("hit", "miss", "eviction", "expired"):
    EMBEDDING_CACHE.labels(_result)


def exposition() -> bytes:
    return generate_latest(REGISTRY)
