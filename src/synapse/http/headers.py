"""A message's header fields, looked up case-insensitively."""

from __future__ import annotations


class Headers:
    """Fields in arrival order; `get` answers the first of a repeated name.

    Names and values are decoded as latin-1 (RFC 9110: field values are octets), so any byte
    survives the round trip and nothing here can fail to decode. The index is built on the
    first lookup: most heads are read by name a few times, many never.
    """

    __slots__ = ("_index", "_items")

    def __init__(self, items: list[tuple[str, str]]) -> None:
        self._items = items
        self._index: dict[str, str] | None = None

    def _lookup(self) -> dict[str, str]:
        if self._index is None:
            index: dict[str, str] = {}
            for name, value in self._items:
                index.setdefault(name.lower(), value)
            self._index = index
        return self._index

    def get(self, name: str, default: str | None = None) -> str | None:
        return self._lookup().get(name.lower(), default)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._lookup()

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"
