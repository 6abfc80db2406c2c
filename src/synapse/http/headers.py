"""A message's header fields, looked up case-insensitively."""

from __future__ import annotations

from collections.abc import Iterator


class Headers:
    """Fields in arrival order; `get` answers the first of a repeated name.

    Names and values are decoded as latin-1 (RFC 9110: field values are octets), so any byte
    survives the round trip and nothing here can fail to decode.
    """

    __slots__ = ("_index", "_items")

    def __init__(self, items: list[tuple[str, str]] | None = None) -> None:
        self._items = items if items is not None else []
        self._index: dict[str, str] | None = None

    def add(self, name: str, value: str) -> None:
        self._items.append((name, value))
        if self._index is not None:
            self._index.setdefault(name.lower(), value)

    def _lookup(self) -> dict[str, str]:
        if self._index is None:
            index: dict[str, str] = {}
            for name, value in self._items:
                index.setdefault(name.lower(), value)
            self._index = index
        return self._index

    def get(self, name: str, default: str | None = None) -> str | None:
        return self._lookup().get(name.lower(), default)

    def getall(self, name: str) -> list[str]:
        wanted = name.lower()
        return [v for n, v in self._items if n.lower() == wanted]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._lookup()

    def __getitem__(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise KeyError(name)
        return value

    def items(self) -> list[tuple[str, str]]:
        return list(self._items)

    def __iter__(self) -> Iterator[str]:
        return (n for n, _ in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"
