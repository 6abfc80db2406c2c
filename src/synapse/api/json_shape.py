"""A JSON body's nesting depth and number of values, read from its bytes before it is parsed.

Parsing builds a Python object per value (70-120 bytes each: a 16 MiB body of `[{},{},…]`
would hold about 800 MiB), so the count is checked first, on the raw bytes. Every step is a
bytes method running in C (count, replace, translate, split, accumulate over an array):
linear in the body, no Python work per value.
"""

from __future__ import annotations

from array import array
from itertools import accumulate

from synapse.errors import BadRequest, PayloadTooLarge

# orjson parses up to 1024 levels but serialises only 254: anything deeper than this is refused
# at the door, with room left for the levels a translation adds.
MAX_DEPTH = 128
# Values, counted as `[`, `{`, `,` and `:` outside strings (each element after the first of a
# container follows a `,`, each member has a `:`): parsed, at most about 40 MiB of Python
# objects (measured; README "Security"), and room for 300,000 tokens sent as token arrays.
MAX_VALUES = 1 << 19

_KEEP = b'[]{},:"'
_NOT_STRUCTURE = bytes(b for b in range(256) if b not in _KEEP)
_SIGNS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")  # +1 opens a level, -1 (as int8) closes


def check(raw: bytes) -> None:
    """Refuse a body nested deeper than MAX_DEPTH (400) or holding more than MAX_VALUES (413)."""
    structure = _outside_strings(raw)
    commas = structure.count(b",") + structure.count(b":")
    openers = structure.count(b"[") + structure.count(b"{")
    if openers + commas > MAX_VALUES:
        raise _too_many()
    if openers <= MAX_DEPTH:  # cannot nest deeper than it has levels
        return
    if max(accumulate(array("b", structure.translate(_SIGNS, b",:")))) > MAX_DEPTH:
        raise BadRequest(f"request JSON is nested deeper than {MAX_DEPTH} levels")


def _outside_strings(raw: bytes) -> bytes:
    """The structural bytes (`[]{},:`) of `raw` that are not inside a JSON string.

    Escaped backslashes go first (a run of them drops whole, or leaves the one that escapes
    the next byte), then escaped quotes: every `"` left opens or closes a string, so splitting
    on them leaves the outside at even positions. Invalid JSON gets a count that means
    nothing but is still linear to compute; the parser refuses it next.
    """
    if b"\\" in raw:
        raw = raw.replace(b"\\\\", b"").replace(b'\\"', b"")
    text = raw.translate(None, _NOT_STRUCTURE)
    if text.count(b'"') // 2 > MAX_VALUES:  # every string is a value (a key or an element)
        raise _too_many()
    # Strings with no structural byte inside are `""` now (two strings are never adjacent):
    # dropped in C, they leave `split` only the strings that hide structure.
    text = text.replace(b'""', b"")
    return b"".join(text.split(b'"')[::2]) if b'"' in text else text


def _too_many() -> PayloadTooLarge:
    return PayloadTooLarge(f"request JSON holds more than {MAX_VALUES} values")
