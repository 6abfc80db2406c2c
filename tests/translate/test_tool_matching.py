"""Tool results are matched to tool calls as before the matching became linear.

The rule (README "Tool-call ids"): a result's `tool_call_id`, else its `tool_name`, else the
order of results picks the earliest unanswered call of the last assistant turn. The reference
below is the former quadratic implementation, kept here as the oracle.
"""

from __future__ import annotations

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from synapse.errors import BadRequest
from synapse.translate.chat import chat_request

IDS = st.none() | st.sampled_from(["", "a", "b", "c"])  # few ids: repeats and misses
NAMES = st.none() | st.sampled_from(["", "f", "g", "h"])


def reference(messages: list[dict]) -> list[dict]:
    """The earlier `_message` loop (two scans and a list.remove per tool message)."""
    pending: list[dict] = []
    out_all = []
    for i, message in enumerate(messages):
        out: dict[str, object] = {"role": message["role"], "content": message.get("content") or ""}
        calls = message.get("tool_calls")
        if isinstance(calls, list) and calls:
            pending.clear()
            out["tool_calls"] = []
            for n, call in enumerate(calls):
                fn = call.get("function") or {}
                openai_call = {
                    "id": call.get("id") or f"call_{i}_{n}",
                    "type": "function",
                    "function": {
                        "name": fn.get("name"),
                        "arguments": orjson.dumps(fn.get("arguments", {})).decode(),
                    },
                }
                out["tool_calls"].append(openai_call)  # type: ignore[union-attr]
                pending.append(openai_call)
        if message["role"] == "tool":
            call_id = message.get("tool_call_id")
            name = message.get("tool_name") or message.get("name")
            match = next((c for c in pending if c["id"] == call_id), None) or next(
                (c for c in pending if not name or c["function"]["name"] == name), None
            )
            if match is not None:
                pending.remove(match)
                call_id = match["id"]
            if call_id:
                out["tool_call_id"] = call_id
        if message.get("tool_name"):
            out["name"] = message["tool_name"]
        out_all.append(out)
    return out_all


def _drop_none(d: dict) -> dict:
    return {k: v for k, v in d.items() if v is not None}


CALL = st.builds(
    lambda id_, name, n: _drop_none({"id": id_, "function": {"name": name, "arguments": {"n": n}}}),
    IDS,
    NAMES,
    st.integers(0, 9),
)
ASSISTANT = st.builds(
    lambda calls: {"role": "assistant", "content": "", "tool_calls": calls}, st.lists(CALL)
)
TOOL = st.builds(
    lambda id_, tool_name, name: _drop_none(
        {"role": "tool", "content": "r", "tool_call_id": id_, "tool_name": tool_name, "name": name}
    ),
    IDS,
    NAMES,
    NAMES,
)
USER = st.just({"role": "user", "content": "q"})
HISTORY = st.lists(st.one_of(USER, ASSISTANT, TOOL), max_size=30)


def translated(messages: list[dict]) -> list[dict]:
    return chat_request({"messages": messages}, "m", "hosted_vllm", "dep")["messages"]


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])  # a shared, busy machine
@given(HISTORY)
def test_any_history_is_matched_as_before(messages: list[dict]) -> None:
    assert translated(messages) == reference(messages)


def turn(*calls: dict) -> dict:
    return {"role": "assistant", "content": "", "tool_calls": list(calls)}


def call(name: str, id_: str | None = None) -> dict:
    return _drop_none({"id": id_, "function": {"name": name, "arguments": {}}})


def result(**fields: str) -> dict:
    return {"role": "tool", "content": "r", **fields}


def ids(messages: list[dict]) -> list[object]:
    return [m.get("tool_call_id") for m in translated(messages) if m["role"] == "tool"]


def test_an_id_picks_its_call() -> None:
    history = [turn(call("f", "x"), call("f", "y")), result(tool_call_id="y"), result()]
    assert ids(history) == ["y", "x"]


def test_a_name_picks_the_earliest_unanswered_call_of_that_name() -> None:
    history = [
        turn(call("f"), call("g"), call("f")),
        result(tool_name="f"),
        result(tool_name="f"),
        result(tool_name="g"),
    ]
    assert ids(history) == ["call_0_0", "call_0_2", "call_0_1"]


def test_without_id_or_name_results_follow_the_order_of_calls() -> None:
    history = [turn(call("f"), call("g")), result(), result(), result()]
    assert ids(history) == ["call_0_0", "call_0_1", None]  # the third answers nothing


def test_an_unknown_id_falls_back_to_the_name() -> None:
    history = [turn(call("f", "x"), call("g", "y")), result(tool_call_id="zz", tool_name="g")]
    assert ids(history) == ["y"]


def test_a_new_turn_forgets_unanswered_calls() -> None:
    history = [turn(call("f", "x")), turn(call("g")), result(tool_call_id="x")]
    assert ids(history) == ["call_1_0"]


def test_many_results_are_matched_in_order() -> None:
    """10,000 calls and their results (named, in reverse): each finds its own call."""
    n = 10_000
    history = [turn(*(call(f"t{i}") for i in range(n)))]
    history += [result(tool_name=f"t{i}") for i in reversed(range(n))]
    assert ids(history) == [f"call_0_{i}" for i in reversed(range(n))]


@pytest.mark.parametrize(
    "message",
    [
        turn({"id": ["x"], "function": {"name": "f"}}),
        turn({"function": {"name": {"n": 1}}}),
        turn({"function": "f"}),
        result(tool_call_id=7),  # type: ignore[arg-type]
        result(tool_name=["f"]),  # type: ignore[arg-type]
    ],
)
def test_ids_and_names_that_are_not_strings_are_a_400(message: dict) -> None:
    with pytest.raises(BadRequest, match="must be"):
        translated([turn(call("f")), message])
