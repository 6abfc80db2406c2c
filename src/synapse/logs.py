"""Structured logs: one JSON object per line on stderr.

The per-request line skips the logging module (record objects, handler locks, a flush per
line): lines are buffered and written once per event-loop turn, so a burst costs one write.
Field values come from callers (a model name, an id, a path): they are cut to
`FIELD_LIMIT` characters and made valid UTF-8, so a line is never lost nor megabytes long.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time

import orjson

FIELD_LIMIT = 1024
ITEM_LIMIT = 32  # list items per field (errors of every attempt, say)


def clean(value: object) -> object:
    """A value safe and small to log: strings cut and re-encoded, containers bounded."""
    if isinstance(value, str):
        if len(value) > FIELD_LIMIT:
            value = f"{value[:FIELD_LIMIT]}…({len(value)} chars)"
        return _utf8(value)
    if isinstance(value, list | tuple):
        return [clean(v) for v in value[:ITEM_LIMIT]]
    if isinstance(value, dict):
        return {_utf8(str(k)[:FIELD_LIMIT]): clean(v) for k, v in list(value.items())[:ITEM_LIMIT]}
    if value is None or isinstance(value, bool | int | float):
        return value
    return clean(str(value))


def _cleaned(value: object) -> object:
    """`clean`, with the common values (short ASCII strings, numbers, None) passed as they are."""
    kind = type(value)
    if kind is str:
        return value if len(value) <= FIELD_LIMIT and value.isascii() else clean(value)  # type: ignore[arg-type]
    if value is None or kind is int or kind is float or kind is bool:
        return value
    return clean(value)


def _utf8(text: str) -> str:
    """Undecodable header bytes arrive as lone surrogates, which orjson refuses: escape them."""
    return text if text.isascii() else text.encode("utf-8", "backslashreplace").decode("utf-8")


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": _utf8(record.getMessage()),
        }
        fields = getattr(record, "fields", None)
        if fields:
            entry.update({k: clean(v) for k, v in fields.items()})
        if record.exc_info:
            entry["exc"] = _utf8(self.formatException(record.exc_info))
        return orjson.dumps(entry).decode()


def setup(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JSONFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    REQUESTS.enabled = logging.getLogger("synapse.request").isEnabledFor(logging.INFO)


class RequestLog:
    """Writes pre-built JSON lines to stderr, coalesced per event-loop iteration."""

    def __init__(self) -> None:
        self._pending: list[bytes] = []
        self._second = 0
        self._stamp = ""
        self.enabled = True

    def write(self, fields: dict[str, object], *, clean_all: bool = True) -> None:
        """`clean_all=False`: the caller cleaned what came from outside (the request line's
        path, a model name); the rest (ids it checked, config names, numbers) goes as is."""
        if not self.enabled:
            return
        t = time.time()
        second = int(t)
        if second != self._second:
            self._second, self._stamp = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t))
        entry = {
            "ts": f"{self._stamp}.{int(t % 1 * 1000):03d}Z",
            "level": "info",
            "logger": "synapse.request",
            "msg": "request",
        }
        if clean_all:
            entry.update((k, _cleaned(v)) for k, v in fields.items())
        else:
            entry.update(fields)
        if not self._pending:
            asyncio.get_running_loop().call_soon(self.flush)
        self._pending.append(orjson.dumps(entry))

    def flush(self) -> None:
        if self._pending:
            lines, self._pending = self._pending, []
            lines.append(b"")
            sys.stderr.buffer.write(b"\n".join(lines))
            sys.stderr.flush()


REQUESTS = RequestLog()
