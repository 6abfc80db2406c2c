"""Method and path to handler: exact paths in a dict, a few `prefix{name}` routes after them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

Handler = Callable[[Any], Awaitable[Any]]


class NoRoute(Exception):
    """404 (no such path) or 405 (path known, method not): `allowed` says which."""

    def __init__(self, allowed: frozenset[str]) -> None:
        super().__init__("no route")
        self.allowed = allowed


class Routes:
    def __init__(self) -> None:
        self._exact: dict[str, dict[str, Handler]] = {}
        self._prefixed: list[tuple[str, str, dict[str, Handler]]] = []

    def add(self, method: str, path: str, handler: Handler) -> None:
        """`path` is exact, or ends in `{name}`: the rest of the path, at least one character."""
        methods = {method, "HEAD"} if method == "GET" else {method}
        if path.endswith("}"):
            prefix, _, name = path[:-1].rpartition("{")
            for pfx, nm, table in self._prefixed:
                if (pfx, nm) == (prefix, name):
                    table.update(dict.fromkeys(methods, handler))
                    return
            self._prefixed.append((prefix, name, dict.fromkeys(methods, handler)))
        else:
            self._exact.setdefault(path, {}).update(dict.fromkeys(methods, handler))

    def match(self, method: str, path: str) -> tuple[Handler, str, dict[str, str]]:
        """(handler, the route as declared, path parameters) or NoRoute."""
        table = self._exact.get(path)
        if table is not None:
            handler = table.get(method)
            if handler is None:
                raise NoRoute(frozenset(table))
            return handler, path, {}
        for prefix, name, table in self._prefixed:
            if path.startswith(prefix) and len(path) > len(prefix):
                handler = table.get(method)
                if handler is None:
                    raise NoRoute(frozenset(table))
                return handler, f"{prefix}{{{name}}}", {name: path[len(prefix) :]}
        raise NoRoute(frozenset())
