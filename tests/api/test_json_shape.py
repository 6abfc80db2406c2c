"""The depth and value count read from a JSON body's bytes equal those of the parsed value.

Checked against a walk of the parsed value, for any JSON (strings full of brackets, commas,
quotes and backslashes included), written compactly or indented, escaped to ASCII or not.
"""

from __future__ import annotations

import json
from unittest.mock import patch

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from synapse.api import json_shape
from synapse.errors import BadRequest, PayloadTooLarge

TRICKY = st.text(alphabet='[]{},:"\\/ab\n\u00e9\u2028', max_size=12)
SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | TRICKY
VALUES = st.recursive(
    SCALARS, lambda inner: st.lists(inner) | st.dictionaries(TRICKY, inner), max_leaves=40
)


def walk(value: object) -> tuple[int, int]:
    """(values, depth) as json_shape counts them: each container one, each `,` and `:` one."""
    if isinstance(value, list):
        inner = [walk(v) for v in value]
        return 1 + max(len(value) - 1, 0) + sum(n for n, _ in inner), 1 + max(
            (d for _, d in inner), default=0
        )
    if isinstance(value, dict):
        inner = [walk(v) for v in value.values()]
        count = 1 + max(len(value) - 1, 0) + len(value) + sum(n for n, _ in inner)
        return count, 1 + max((d for _, d in inner), default=0)
    return 0, 0


def check(raw: bytes, values: int, depth: int) -> None:
    with (
        patch.object(json_shape, "MAX_VALUES", values),
        patch.object(json_shape, "MAX_DEPTH", depth),
    ):
        json_shape.check(raw)


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])  # a shared, busy machine
@given(st.dictionaries(TRICKY, VALUES, max_size=6), st.sampled_from([None, 1]), st.booleans())
def test_the_bytes_count_what_the_parsed_value_holds(
    body: dict, indent: int | None, ascii_only: bool
) -> None:
    raw = json.dumps(body, indent=indent, ensure_ascii=ascii_only).encode()
    values, depth = walk(body)
    check(raw, values, depth)  # exactly at both limits: accepted
    with pytest.raises(PayloadTooLarge):
        check(raw, values - 1, depth)
    with pytest.raises(BadRequest, match="nested deeper"):
        check(raw, values, depth - 1)


@pytest.mark.parametrize(
    ("raw", "values", "depth"),
    [
        (rb'{"a": "\\"}', 2, 1),  # an escaped backslash, then the closing quote
        (rb'{"a": "\\\"[[[", "b": []}', 5, 2),  # escaped backslash, escaped quote, text
        (rb'{"\\\\\\\\": "\"]]]}}}"}', 2, 1),
        (b'{"a": "\\u005c"}', 2, 1),  # a backslash written as \u005c
        (b"{}", 1, 1),
    ],
)
def test_escapes_never_end_a_string_early(raw: bytes, values: int, depth: int) -> None:
    assert walk(json.loads(raw)) == (values, depth)
    check(raw, values, depth)
    with pytest.raises(PayloadTooLarge):
        check(raw, values - 1, depth)


def test_a_wide_body_is_refused_by_count_before_any_depth_work() -> None:
    raw = b'{"m": [' + b"{}," * (json_shape.MAX_VALUES // 2) + b"{}]}"
    with pytest.raises(PayloadTooLarge, match=f"more than {json_shape.MAX_VALUES} values"):
        json_shape.check(raw)


def test_many_empty_strings_are_too_many_values() -> None:
    raw = b'{"m": [' + b'"",' * json_shape.MAX_VALUES + b'""]}'
    with pytest.raises(PayloadTooLarge):
        json_shape.check(raw)


@pytest.mark.parametrize("depth", [129, 254, 1000])
def test_deep_nesting_is_a_400(depth: int) -> None:
    with pytest.raises(BadRequest, match="nested deeper than 128"):
        json_shape.check(b'{"a": ' + b"[" * depth + b"]" * depth + b"}")


def test_nesting_at_the_limit_is_accepted() -> None:
    json_shape.check(b'{"a": ' + b"[" * 127 + b"]" * 127 + b"}")
