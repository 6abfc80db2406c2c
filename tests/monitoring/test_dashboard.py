"""The Grafana dashboard: provisionable by the sidecar as it is, and showing what issue 7 asks."""

from __future__ import annotations

from itertools import combinations
from typing import Any

import promql_parser as pp
import pytest

from . import sources
from .promql import selectors

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
UNQUERIED = {"row", "text"}


@pytest.fixture(scope="module")
def dash() -> dict[str, Any]:
    return sources.dashboard()


def _series(dash: dict[str, Any]) -> set[str]:
    return {vs.name for e in sources.dashboard_exprs() for vs in selectors(pp.parse(e.promql))}


def test_identity(dash: dict[str, Any]) -> None:
    assert dash["uid"] == "synapse-overview"
    assert dash["title"]
    assert dash["schemaVersion"] >= 36
    assert dash["id"] is None  # Grafana assigns ids; a fixed one clashes across instances


def test_datasource_is_a_prometheus_variable(dash: dict[str, Any]) -> None:
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for var in sources.query_variables(dash):
        assert var["datasource"] == DATASOURCE, var["name"]
    for panel in sources.panels(dash):
        if panel["type"] in UNQUERIED:
            continue
        assert panel.get("datasource") == DATASOURCE, panel["title"]
        assert panel.get("targets"), panel["title"]
        for target in panel["targets"]:
            assert target.get("datasource", DATASOURCE) == DATASOURCE, panel["title"]
            assert target.get("expr"), panel["title"]


def test_panel_ids_unique_and_layout_without_overlap(dash: dict[str, Any]) -> None:
    found = sources.panels(dash)
    ids = [p["id"] for p in found]
    assert len(ids) == len(set(ids))
    boxes = []
    for p in dash["panels"]:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24 and g["h"] > 0, p["title"]
        boxes.append((p["title"], g["x"], g["y"], g["x"] + g["w"], g["y"] + g["h"]))
    for (a, ax0, ay0, ax1, ay1), (b, bx0, by0, bx1, by1) in combinations(boxes, 2):
        overlap = ax0 < bx1 and bx0 < ax1 and ay0 < by1 and by0 < ay1
        assert not overlap, f"panels {a!r} and {b!r} overlap"


def test_says_ollama_exports_no_metrics(dash: dict[str, Any]) -> None:
    texts = [p["options"]["content"] for p in sources.panels(dash) if p["type"] == "text"]
    assert any("Ollama" in t and "/metrics" in t for t in texts)


def test_latency_percentiles(dash: dict[str, Any]) -> None:
    exprs = [e.promql for e in sources.dashboard_exprs()]
    for metric in (
        "synapse_request_duration_seconds_bucket",
        "synapse_time_to_first_token_seconds_bucket",
    ):
        for q in ("0.5", "0.95", "0.99"):
            assert any(f"histogram_quantile({q}," in e and metric in e for e in exprs), (metric, q)


def test_vllm_gpu_and_gateway_series(dash: dict[str, Any]) -> None:
    series = _series(dash)
    expected = {
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        "vllm:kv_cache_usage_perc",
        "DCGM_FI_DEV_GPU_TEMP",
        "DCGM_FI_DEV_GPU_UTIL",
        "process_resident_memory_bytes",
    }
    assert sorted(expected - series) == []
    assert "vllm:gpu_cache_usage_perc" not in series  # removed from vLLM


def test_errors_are_shown_by_status(dash: dict[str, Any]) -> None:
    assert any(
        "synapse_requests_total" in e.promql and "by (status)" in e.promql
        for e in sources.dashboard_exprs()
    )


def test_event_loop_lag_and_stalls(dash: dict[str, Any]) -> None:
    """Issue 24: lag as a percentile, and stalls counted the way SynapseEventLoopStalled does."""
    exprs = [e.promql for e in sources.dashboard_exprs()]
    lag = "synapse_event_loop_lag_seconds"
    assert any("histogram_quantile(0.99," in e and f"{lag}_bucket" in e for e in exprs)
    assert any(f"{lag}_count" in e and 'le="0.25"' in e for e in exprs)
