"""Vectors already computed, keyed by (group, parameters, text): repeats skip the backend.

Bounded in bytes, least recently used evicted first. Vectors are stored as doubles, so a hit
returns exactly the floats the backend sent.
"""

from __future__ import annotations

import time
from array import array
from collections import OrderedDict
from dataclasses import dataclass

from synapse import metrics
from synapse.config.schema import EmbeddingCache as CacheSettings

_ENTRY_OVERHEAD = 200  # dict slot, key tuple, entry object and array header, approximately

Key = tuple[str, bytes, str]  # group, parameters key, text


@dataclass(slots=True)
class Entry:
    vector: array
    tokens: int
    expires: float
    size: int


class VectorCache:
    def __init__(self, settings: CacheSettings) -> None:
        self._entries: OrderedDict[Key, Entry] = OrderedDict()
        self.bytes = 0
        self.configure(settings)

    def configure(self, settings: CacheSettings) -> None:
        self.enabled = settings.enabled
        self.max_bytes = int(settings.max_mb * 1024 * 1024) if settings.enabled else 0
        self.ttl = settings.ttl
        self._shrink()

    def get(self, key: Key) -> Entry | None:
        if not self.enabled:
            return None
        entry = self._entries.get(key)
        if entry is not None and entry.expires and entry.expires < time.monotonic():
            self._drop(key)
            metrics.EMBEDDING_CACHE.labels("expired").inc()
            entry = None
        if entry is None:
            metrics.EMBEDDING_CACHE.labels("miss").inc()
            return None
        self._entries.move_to_end(key)
        metrics.EMBEDDING_CACHE.labels("hit").inc()
        return entry

    def put(self, key: Key, vector: list[float], tokens: int) -> None:
        if not self.enabled:
            return
        stored = array("d", vector)
        size = stored.itemsize * len(stored) + len(key[1]) + len(key[2]) + _ENTRY_OVERHEAD
        if size > self.max_bytes:
            return
        self._drop(key)
        expires = time.monotonic() + self.ttl if self.ttl else 0.0
        self._entries[key] = Entry(stored, tokens, expires, size)
        self.bytes += size
        metrics.EMBEDDING_CACHE_BYTES.set(self.bytes)
        self._shrink()

    def drop_groups(self, groups: set[str]) -> None:
        """Forget every entry of `groups` (their deployments changed: old vectors may differ)."""
        for key in [k for k in self._entries if k[0] in groups]:
            self._drop(key)

    def __len__(self) -> int:
        return len(self._entries)

    def _shrink(self) -> None:
        while self.bytes > self.max_bytes and self._entries:
            key = next(iter(self._entries))
            self._drop(key)
            metrics.EMBEDDING_CACHE.labels("eviction").inc()

    def _drop(self, key: Key) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self.bytes -= entry.size
            metrics.EMBEDDING_CACHE_BYTES.set(self.bytes)
