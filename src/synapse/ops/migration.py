"""Consumer migration decisions, free of I/O: which ConfigMap, which keys change to what,
what to record for rollback, and whether Synapse serves every model the consumer uses.

The build plan's Consumer Migration Plan, steps 1-5, for ai-memory-system in jarvis-cortex.
Its step 2 (an ExternalName alias) is not needed: the ConfigMap points at the gateway's FQDN.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from synapse.ops.output import OpsError

ANNOTATION = "synapse.arunlabs.com/previous-values"
REPLICAS_ANNOTATION = "synapse.arunlabs.com/previous-replicas"
DEFAULT_NAMESPACE = "jarvis-cortex"
DEFAULT_CONFIGMAP = "ai-memory-config"
DEFAULT_KEYS = ("OLLAMA_BASE_URL", "OLLAMA_URL")
DEFAULT_DEPLOYMENTS = ("indexer", "extractor", "query", "graph-builder")
DEFAULT_TARGET = "http://synapse.llm-infra.svc.cluster.local:11434"
DEFAULT_CONSUMER_OLLAMA = "http://ollama:11434"
DEFAULT_SYNAPSE_OLLAMA = "http://ollama.llm-infra.svc.cluster.local:11434"


@dataclass(frozen=True)
class KeyChange:
    key: str
    old: str | None
    new: str

    @property
    def changed(self) -> bool:
        return self.old != self.new


def choose_configmap(
    configmaps: Mapping[str, Mapping[str, str]], keys: Sequence[str], requested: str | None
) -> str:
    """The ConfigMap to migrate: the one asked for, else the one holding the keys."""
    if requested:
        if requested not in configmaps:
            raise OpsError(f"ConfigMap {requested!r} not found")
        return requested
    holders = sorted(name for name, data in configmaps.items() if any(k in data for k in keys))
    if len(holders) == 1:
        return holders[0]
    if DEFAULT_CONFIGMAP in holders:
        return DEFAULT_CONFIGMAP
    if not holders:
        raise OpsError(f"no ConfigMap holds {' or '.join(keys)}; name it with --configmap")
    raise OpsError(
        f"several ConfigMaps hold {' or '.join(keys)}: {', '.join(holders)}; pick one with "
        "--configmap"
    )


def plan_changes(data: Mapping[str, str], keys: Sequence[str], target: str) -> list[KeyChange]:
    return [KeyChange(k, data.get(k), target) for k in keys]


def previous_record(
    changes: Sequence[KeyChange], existing: str | None, *, target: str, at: str
) -> str | None:
    """The annotation value to write, or None to keep the existing one.

    Only the first migration records: re-running apply must never record the target as the
    "previous" value, or rollback would restore nothing.
    """
    if existing:
        parse_record(existing)  # refuse to overwrite a record we cannot read
        return None
    record = {"values": {c.key: c.old for c in changes}, "target": target, "recordedAt": at}
    return json.dumps(record, sort_keys=True)


def parse_record(raw: str | None) -> dict[str, str | None]:
    """The recorded previous values (None for a key that did not exist)."""
    if not raw:
        raise OpsError(f"no {ANNOTATION} annotation: nothing recorded to roll back to")
    try:
        doc = json.loads(raw)
        values = doc["values"]
        if not isinstance(values, dict) or not all(
            isinstance(v, str | None) for v in values.values()
        ):
            raise TypeError
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise OpsError(
            f"annotation {ANNOTATION} is not a record this tool wrote: {raw[:200]}"
        ) from exc
    return {str(k): v for k, v in values.items()}


def apply_patch(
    data: Mapping[str, str],
    annotations: Mapping[str, str],
    keys: Sequence[str],
    target: str,
    *,
    at: str,
) -> dict[str, Any] | None:
    """The merge patch that migrates the ConfigMap, or None when it already points at Synapse."""
    changes = plan_changes(data, keys, target)
    if not any(c.changed for c in changes):
        return None
    patch: dict[str, Any] = {"data": {c.key: c.new for c in changes if c.changed}}
    record = previous_record(changes, annotations.get(ANNOTATION), target=target, at=at)
    if record is not None:
        patch["metadata"] = {"annotations": {ANNOTATION: record}}
    return patch


def rollback_patch(data: Mapping[str, str], annotations: Mapping[str, str]) -> dict[str, Any]:
    """Restore the recorded values (deleting keys that did not exist) and drop the record."""
    values = parse_record(annotations.get(ANNOTATION))
    restore: dict[str, str | None] = {}
    for key, old in values.items():
        if old is None and key in data:
            restore[key] = None
        elif old is not None and data.get(key) != old:
            restore[key] = old
    patch: dict[str, Any] = {"metadata": {"annotations": {ANNOTATION: None}}}
    if restore:
        patch["data"] = restore
    return patch


def consumer_ollama_url(
    data: Mapping[str, str],
    annotations: Mapping[str, str],
    keys: Sequence[str],
    target: str,
    fallback: str = DEFAULT_CONSUMER_OLLAMA,
) -> str:
    """The consumer's own Ollama: recorded before migration, else the current value."""
    raw = annotations.get(ANNOTATION)
    if raw:
        for key in keys:
            old = parse_record(raw).get(key)
            if old:
                return old
    for key in keys:
        value = data.get(key)
        if value and value.rstrip("/") != target.rstrip("/"):
            return value
    return fallback


def migrated(data: Mapping[str, str], keys: Sequence[str], target: str) -> bool:
    return all(data.get(k, "").rstrip("/") == target.rstrip("/") for k in keys)


@dataclass(frozen=True)
class ModelRow:
    name: str
    served: bool
    pulled: bool | None  # None: Synapse's Ollama not checked

    @property
    def status(self) -> str:
        if not self.served:
            return "fail"
        return "warn" if self.pulled is False else "pass"


def model_rows(
    consumer_models: Iterable[str],
    gateway_tags: Iterable[str],
    shown: Mapping[str, bool],
    synapse_ollama: Iterable[str] | None,
) -> list[ModelRow]:
    """Per consumer model: served by the gateway (tags, else /api/show), pulled in Synapse's
    Ollama. `x` and `x:latest` are the same model."""
    from synapse.ops.models import missing

    consumer = list(consumer_models)
    not_listed = set(missing(consumer, gateway_tags))
    not_pulled = set(missing(consumer, synapse_ollama)) if synapse_ollama is not None else None
    return [
        ModelRow(
            m,
            m not in not_listed or shown.get(m, False),
            None if not_pulled is None else m not in not_pulled,
        )
        for m in consumer
    ]


def embedding_of(doc: Any) -> list[float]:
    """The vector of an Ollama `/api/embeddings` (or `/api/embed`) answer."""
    if isinstance(doc, dict):
        if isinstance(doc.get("embedding"), list):
            return [float(x) for x in doc["embedding"]]
        embs = doc.get("embeddings")
        if isinstance(embs, list) and embs and isinstance(embs[0], list):
            return [float(x) for x in embs[0]]
    raise OpsError(f"no embedding in the answer: {str(doc)[:200]}")


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    if len(a) != len(b) or not a:
        return float("nan")
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    na = math.sqrt(sum(x * x for x in a))
    nb = math.sqrt(sum(y * y for y in b))
    return dot / (na * nb) if na and nb else float("nan")
