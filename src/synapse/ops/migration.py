"""Consumer migration decisions, free of I/O: which ConfigMap, which keys change to what,
what to record for rollback, and whether Synapse serves every model the consumer uses.

The build plan's Consumer Migration Plan, steps 1-5, for ai-memory-system in jarvis-cortex, in
its two steps (phase 1: the shared Ollama; phase 3: the gateway), each recorded in a history on
the ConfigMap so rollback undoes one step at a time. Its step 2 (an ExternalName alias) is not
needed: the ConfigMap points at FQDNs.
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
DEFAULT_TARGET = "http://synapse.llm-infra.svc.cluster.local:11434"
DEFAULT_CONSUMER_OLLAMA = "http://ollama:11434"
DEFAULT_SYNAPSE_OLLAMA = "http://ollama.llm-infra.svc.cluster.local:11434"
# The plan's two steps: phase 1 moves the consumer onto the shared CPU Ollama (so its own,
# GPU-holding Ollama can go before vLLM needs the GPU, risk R2); phase 3 onto the gateway.
PHASE_TARGETS = {1: DEFAULT_SYNAPSE_OLLAMA, 3: DEFAULT_TARGET}


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


@dataclass(frozen=True)
class Record:
    """One migration step: the values it replaced, where it pointed them, when."""

    values: dict[str, str | None]
    target: str
    at: str
    phase: int | None = None

    def as_json(self) -> dict[str, Any]:
        return {"values": self.values, "target": self.target, "recordedAt": self.at} | (
            {"phase": self.phase} if self.phase is not None else {}
        )


def parse_history(raw: str | None) -> list[Record]:
    """The recorded steps, oldest first (a record of the single-step format counts as one)."""
    if not raw:
        return []
    try:
        doc = json.loads(raw)
        records = [_record(e) for e in doc.get("history", [doc])]
    except (json.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError) as exc:
        raise OpsError(
            f"annotation {ANNOTATION} is not a record this tool wrote: {raw[:200]}"
        ) from exc
    return records


def _record(entry: Any) -> Record:
    values = entry["values"]
    if not isinstance(values, dict) or not all(isinstance(v, str | None) for v in values.values()):
        raise TypeError("values")
    phase = entry.get("phase")
    if phase is not None and not isinstance(phase, int):
        raise TypeError("phase")
    return Record(
        {str(k): v for k, v in values.items()},
        str(entry.get("target", "")),
        str(entry.get("recordedAt", "")),
        phase,
    )


def dump_history(records: Sequence[Record]) -> str | None:
    """The annotation value; None (delete it) once nothing is left to roll back."""
    if not records:
        return None
    return json.dumps({"history": [r.as_json() for r in records]}, sort_keys=True)


def last_record(annotations: Mapping[str, str]) -> Record:
    history = parse_history(annotations.get(ANNOTATION))
    if not history:
        raise OpsError(f"no {ANNOTATION} annotation: nothing recorded to roll back to")
    return history[-1]


def apply_patch(
    data: Mapping[str, str],
    annotations: Mapping[str, str],
    keys: Sequence[str],
    target: str,
    *,
    at: str,
    phase: int | None = None,
) -> dict[str, Any] | None:
    """The merge patch that moves the ConfigMap to `target`, or None when it points there.

    Every step is appended to the history, so rollback returns to the value the step replaced
    (phase 3's rollback lands on phase 1's shared Ollama, not on a decommissioned one).
    """
    changes = plan_changes(data, keys, target)
    if not any(c.changed for c in changes):
        return None
    history = parse_history(annotations.get(ANNOTATION))  # refuses a record it cannot read
    history.append(Record({c.key: c.old for c in changes}, target, at, phase))
    return {
        "data": {c.key: c.new for c in changes if c.changed},
        "metadata": {"annotations": {ANNOTATION: dump_history(history)}},
    }


def rollback_patch(data: Mapping[str, str], annotations: Mapping[str, str]) -> dict[str, Any]:
    """Undo the last step: restore the values it replaced (deleting keys that did not exist)
    and drop it from the history."""
    history = parse_history(annotations.get(ANNOTATION))
    if not history:
        raise OpsError(f"no {ANNOTATION} annotation: nothing recorded to roll back to")
    restore: dict[str, str | None] = {}
    for key, old in history[-1].values.items():
        if old is None and key in data:
            restore[key] = None
        elif old is not None and data.get(key) != old:
            restore[key] = old
    patch: dict[str, Any] = {"metadata": {"annotations": {ANNOTATION: dump_history(history[:-1])}}}
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
    """The endpoint the consumer uses before this step: its current value when that is not the
    target yet, else what the last recorded step replaced."""
    for key in keys:
        value = data.get(key)
        if value and value.rstrip("/") != target.rstrip("/"):
            return value
    history = parse_history(annotations.get(ANNOTATION))
    for record in reversed(history):
        if record.target and record.target.rstrip("/") != target.rstrip("/"):
            continue
        for key in keys:
            old = record.values.get(key)
            if old:
                return old
    return fallback


def reads_configmap(pod_spec: Mapping[str, Any], name: str) -> bool:
    """Whether a pod template reads ConfigMap `name` (envFrom, env valueFrom, volumes), so that
    a restart picks up its new values."""
    for container in [*(pod_spec.get("containers") or []), *(pod_spec.get("initContainers") or [])]:
        for source in container.get("envFrom") or []:
            if (source.get("configMapRef") or {}).get("name") == name:
                return True
        for env in container.get("env") or []:
            if ((env.get("valueFrom") or {}).get("configMapKeyRef") or {}).get("name") == name:
                return True
    for volume in pod_spec.get("volumes") or []:
        if (volume.get("configMap") or {}).get("name") == name:
            return True
        for source in (volume.get("projected") or {}).get("sources") or []:
            if (source.get("configMap") or {}).get("name") == name:
                return True
    return False


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
