"""A stall of the event loop is measured (synapse_event_loop_lag_seconds) and named (one log
line with the loop's stack and the request it serves), against a gateway whose handler blocks
the loop on purpose (tests/stubs/blocking_gateway.py)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from synapse.config import ConfigError, load_config
from tests.conftest import MASTER_KEY, Backend, Gateway, routing_config

LAUNCHER = "tests.stubs.blocking_gateway"
LAG = "synapse_event_loop_lag_seconds"


@pytest.fixture(scope="module")
def blocking_gateway(
    ollama_backend: Backend, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    config = routing_config(None, ollama_backend, loop_stall_threshold=0.25)
    gw = Gateway(config, tmp_path_factory.mktemp("loopwatch"), module=LAUNCHER)
    yield gw
    gw.stop()


def block(gateway: Gateway, seconds: float, request_id: str) -> None:
    response = httpx.post(
        f"{gateway.url}/debug/block?seconds={seconds}",
        headers={"Authorization": f"Bearer {MASTER_KEY}", "X-Request-ID": request_id},
        timeout=30,
    )
    assert response.status_code == 200, response.text


def stall_lines(gateway: Gateway) -> list[dict]:
    lines = []
    for line in gateway.log.splitlines():
        if '"loop_stall"' in line:
            lines.append(json.loads(line))
    return lines


def lag(gateway: Gateway) -> dict[str, float]:
    """The histogram's samples: `count`, `sum`, and each bucket by its `le`."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(httpx.get(gateway.metrics_url).text):
        if family.name != LAG:
            continue
        for sample in family.samples:
            key = sample.labels.get("le") or sample.name.removeprefix(LAG + "_")
            out[key] = sample.value
    return out


def test_a_stall_logs_one_line_naming_the_code_and_the_request(blocking_gateway: Gateway) -> None:
    before = lag(blocking_gateway)
    block(blocking_gateway, 1.0, "stall-probe-1")
    after = lag(blocking_gateway)

    [line] = [x for x in stall_lines(blocking_gateway) if x["request_id"] == "stall-probe-1"]
    assert line["level"] == "warning" and line["logger"] == "synapse.loopwatch"
    assert line["route"] == "/debug/block" and line["consumer"] == "master"
    assert line["threshold_ms"] == 250.0 and 250 < line["late_ms"] < 1000
    # The loop thread's stack at that moment, most recent call last: the sleep in the handler.
    assert "in block_on_purpose: time.sleep(seconds)" in line["stack"][-1]

    # The metric shows the stall once it is over: one wake between 0.5 s and 2.5 s late.
    assert after["count"] > before["count"]
    assert after["0.5"] - before["0.5"] == after["count"] - before["count"] - 1
    assert after["2.5"] - before["2.5"] == after["count"] - before["count"]
    assert after["sum"] - before["sum"] >= 0.9


def test_each_stall_is_logged_once_and_short_waits_not_at_all(blocking_gateway: Gateway) -> None:
    block(blocking_gateway, 0.05, "short-wait")
    block(blocking_gateway, 0.6, "stall-a")
    time.sleep(1.1)  # past LOG_GAP: lines closer than that are counted, not written
    block(blocking_gateway, 0.6, "stall-b")
    ids = [x["request_id"] for x in stall_lines(blocking_gateway)]
    assert "short-wait" not in ids
    assert ids.count("stall-a") == 1 and ids.count("stall-b") == 1


def test_stalls_in_quick_succession_are_counted_in_the_next_line(
    blocking_gateway: Gateway,
) -> None:
    time.sleep(1.1)
    # two stalls back to back: seen about 0.6 s apart, within LOG_GAP: one line, one counted
    block(blocking_gateway, 0.6, "burst-0")
    block(blocking_gateway, 0.6, "burst-1")
    time.sleep(1.1)
    block(blocking_gateway, 0.6, "after-burst")
    lines = {x["request_id"]: x for x in stall_lines(blocking_gateway)}
    assert "burst-0" in lines and "burst-1" not in lines
    assert lines["after-burst"]["stalls_not_logged"] == 1


def test_threshold_is_validated_at_load(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "model_list: [{model_name: a, litellm_params: {model: ollama/a}}]\n"
        "synapse_settings: {loop_stall_threshold: -1}\n"
    )
    with pytest.raises(ConfigError) as err:
        load_config(path, {})
    text = str(err.value)
    assert "synapse_settings.loop_stall_threshold:" in text and "greater than or equal to 0" in text
