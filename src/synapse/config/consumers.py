"""`synapse_settings.consumers` → resolved `Consumer`s, with every problem named by key path.

Keys are kept only as SHA-256 digests: the running gateway never holds a consumer's secret,
and a config may carry `key_sha256` so the ConfigMap holds none either.
"""

from __future__ import annotations

import hashlib
import math

from synapse.config.model import Consumer
from synapse.config.schema import ConsumerEntry, SynapseSettings

# Same floor as the master key: shorter keys are placeholders or guessable.
MIN_KEY_LENGTH = 16
# The consumer label of requests made with the master key (so no consumer may be named so).
MASTER = "master"


def key_digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def resolve_consumers(
    settings: SynapseSettings,
    groups: set[str],
    aliases: dict[str, str],
    master_key: str | None,
) -> tuple[tuple[Consumer, ...], Consumer | None, list[str]]:
    """The consumers, the Ollama port's consumer, and the problems found (all of them)."""
    problems: list[str] = []
    consumers: list[Consumer] = []
    names: dict[str, int] = {}
    digests: dict[bytes, str] = {}
    if master_key:
        digests[key_digest(master_key)] = "general_settings.master_key"
    for i, entry in enumerate(settings.consumers):
        where = f"synapse_settings.consumers[{i}]"
        if entry.name == MASTER:
            problems.append(f"{where}.name: {MASTER!r} is reserved for the master key's requests")
        if entry.name in names:
            problems.append(
                f"{where}.name: duplicate consumer name {entry.name!r} "
                f"(also synapse_settings.consumers[{names[entry.name]}])"
            )
        names.setdefault(entry.name, i)
        digest, problem = _digest(entry, where)
        if problem:
            problems.append(problem)
        elif digest in digests:
            problems.append(f"{where}: the same key as {digests[digest]}; give each its own key")
        else:
            digests[digest] = where
        allowed, unknown = _allowed_groups(entry, groups, aliases)
        for j, name in unknown:
            problems.append(
                f"{where}.models[{j}]: expected a model_name or model_group_alias; got {name!r} "
                f"(known: {', '.join(sorted(groups | set(aliases)))})"
            )
        rpm = _share(entry.rpm, settings.replicas, f"{where}.rpm", problems)
        parallel = _share(entry.max_parallel, settings.replicas, f"{where}.max_parallel", problems)
        consumers.append(Consumer(entry.name, digest, allowed, entry.priority, rpm, parallel))
    ollama = None
    if settings.ollama_consumer is not None:
        ollama = next((c for c in consumers if c.name == settings.ollama_consumer), None)
        if ollama is None:
            problems.append(
                "synapse_settings.ollama_consumer: expected the name of a consumer in "
                f"synapse_settings.consumers; got {settings.ollama_consumer!r}"
            )
    return tuple(consumers), ollama, problems


def _digest(entry: ConsumerEntry, where: str) -> tuple[bytes, str | None]:
    if (entry.key is None) == (entry.key_sha256 is None):
        return b"", f"{where}: expected exactly one of key or key_sha256"
    if entry.key_sha256 is not None:
        return bytes.fromhex(entry.key_sha256), None
    length = len((entry.key or "").strip())
    if length < MIN_KEY_LENGTH or not (entry.key or "").isprintable():
        got = f"{length} characters" if length else "an empty value"
        return b"", (
            f"{where}.key: expected a printable key of at least {MIN_KEY_LENGTH} characters; "
            f"got {got}"
        )
    return key_digest((entry.key or "").strip()), None


def _allowed_groups(
    entry: ConsumerEntry, groups: set[str], aliases: dict[str, str]
) -> tuple[frozenset[str] | None, list[tuple[int, str]]]:
    """An alias in the list allows its group: both names reach the same backends."""
    if entry.models is None:
        return None, []
    allowed: set[str] = set()
    unknown: list[tuple[int, str]] = []
    for j, name in enumerate(entry.models):
        group = name if name in groups else aliases.get(name)
        if group is None:
            unknown.append((j, name))
        else:
            allowed.add(group)
    return frozenset(allowed), unknown


def _share(limit: int | None, replicas: int, where: str, problems: list[str]) -> int | None:
    """This pod's part of a deployment-wide limit; rounding down so the sum never exceeds it."""
    if limit is None:
        return None
    if limit < replicas:
        problems.append(
            f"{where}: expected at least synapse_settings.replicas ({replicas}), so each "
            f"replica may serve at least one; got {limit}"
        )
        return None
    return math.floor(limit / replicas)
