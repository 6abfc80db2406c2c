"""Alert rules: promtool validates them and runs their unit tests; broken rules must be caught.

promtool reads plain rules files, not PrometheusRule objects: the spec is extracted into a
temporary directory next to copies of monitoring/alerts/tests/*.test.yaml.
"""

from __future__ import annotations

import re
import shutil
from collections import defaultdict
from pathlib import Path
from typing import Any

import promql_parser as pp
import pytest
import yaml

from . import sources, tools
from .promql import selectors

SEVERITIES = {"critical", "warning", "info"}
ANNOTATIONS = ("summary", "description", "runbook")

# Issue 7's alerts, with the series each must be built on.
REQUIRED_ALERTS = {
    "OllamaDown": {"synapse_deployment_up"},
    "SynapseGatewayHighMemory": {"process_resident_memory_bytes"},
    "VLLMQueueDepth": {"vllm:num_requests_waiting"},
    "GPUTemperatureHigh": {"DCGM_FI_DEV_GPU_TEMP"},
    "SynapseHighErrorRate": {"synapse_requests_total"},
    "SynapseHighFallbackRate": {"synapse_fallbacks_total"},
    "SynapseLatencyP95High": {"synapse_request_duration_seconds_bucket"},
    "SynapseLatencyP99High": {"synapse_request_duration_seconds_bucket"},
    "SynapseBackendDown": {"synapse_deployment_up"},
    "SynapseConfigReloadFailed": {"synapse_config_reloads_total"},
    # Issue 24: a stall of the event loop, and lag that stays high.
    "SynapseEventLoopStalled": {
        "synapse_event_loop_lag_seconds_count",
        "synapse_event_loop_lag_seconds_bucket",
    },
    "SynapseEventLoopLagHigh": {"synapse_event_loop_lag_seconds_bucket"},
    "SynapsePodCrashLooping": {
        "kube_pod_container_status_restarts_total",
        "kube_pod_container_status_waiting_reason",
    },
}


def _seconds(duration: str | None) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    return sum(int(n) * units[u] for n, u in re.findall(r"(\d+)(ms|s|m|h|d|w)", duration or "0s"))


def _promtool_dir(root: Path, rules: dict[str, Any], tests: dict[str, Any]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / sources.RULES_FILE_NAME).write_text(yaml.safe_dump(rules, sort_keys=False))
    for name, content in tests.items():
        (root / name).write_text(yaml.safe_dump(content, sort_keys=False))


def _results(output: str) -> dict[str, str]:
    """promtool test rules output, split per test file."""
    parts = re.split(r"^Unit Testing:\s+(\S+)\s*$", output, flags=re.M)
    return {parts[i]: parts[i + 1] for i in range(1, len(parts) - 1, 2)}


@pytest.fixture(scope="module")
def promtool() -> str:
    return tools.require("promtool")


@pytest.fixture(scope="module")
def rules_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("alerts")
    sources.write_plain_rules(directory)
    for test_file in sources.alert_test_files():
        shutil.copy(test_file, directory)
    return directory


@pytest.fixture(scope="module")
def unit_tests() -> dict[str, dict[str, Any]]:
    return {p.name: yaml.safe_load(p.read_text()) for p in sources.alert_test_files()}


def test_promtool_check_rules(promtool: str, rules_dir: Path) -> None:
    proc = tools.run([promtool, "check", "rules", sources.RULES_FILE_NAME], cwd=rules_dir)
    assert proc.returncode == 0, tools.output(proc)
    assert f"SUCCESS: {len(sources.alert_rules())} rules found" in proc.stdout


def test_promtool_unit_tests_pass(promtool: str, rules_dir: Path) -> None:
    files = [p.name for p in sources.alert_test_files()]
    assert files, "no monitoring/alerts/tests/*.test.yaml"
    out = tools.run_split([promtool, "test", "rules"], files, cwd=rules_dir)
    results = _results(out)
    assert sorted(results) == sorted(files), out
    assert all("SUCCESS" in r and "FAILED" not in r for r in results.values()), out


def test_unit_tests_load_the_extracted_rules(unit_tests: dict[str, dict[str, Any]]) -> None:
    for name, content in unit_tests.items():
        assert content["rule_files"] == [sources.RULES_FILE_NAME], name


def test_every_alert_is_tested_firing_and_silent(unit_tests: dict[str, dict[str, Any]]) -> None:
    """Static view of what the mutation test below proves."""
    fires: dict[str, int] = defaultdict(int)
    silent_after_for: dict[str, int] = defaultdict(int)
    waits = {r["alert"]: _seconds(r.get("for")) for r in sources.alert_rules()}
    for content in unit_tests.values():
        for test in content["tests"]:
            for check in test.get("alert_rule_test", []):
                name = check["alertname"]
                assert name in waits, f"test for unknown alert {name}"
                if check.get("exp_alerts"):
                    fires[name] += 1
                elif _seconds(check["eval_time"]) >= waits[name]:
                    silent_after_for[name] += 1
    assert sorted(n for n in waits if not fires[n]) == [], "alerts never tested firing"
    assert sorted(n for n in waits if not silent_after_for[n]) == [], (
        "alerts never tested silent at an eval_time past their `for`"
    )


def test_unit_tests_fail_when_an_alert_breaks(
    promtool: str, tmp_path: Path, unit_tests: dict[str, dict[str, Any]]
) -> None:
    """Each alert replaced by one that never fires, then by one that always fires: its unit
    tests must notice both. Each mutant runs only that alert's checks, to stay fast."""
    spec = sources.rules_spec()
    names = [r["alert"] for r in sources.alert_rules()]
    files: dict[str, str] = {}  # mutant test file -> the alert it must catch broken
    for name in names:
        for mode, expr in (("never", "vector(1) == 2"), ("always", "vector(1)")):
            rules = yaml.safe_load(yaml.safe_dump(spec))
            for group in rules["groups"]:
                for rule in group["rules"]:
                    if rule.get("alert") == name:
                        rule["expr"] = expr
            checks = _checks_for(unit_tests, name, firing=mode == "never")
            _promtool_dir(tmp_path / f"{mode}-{name}", rules, {"mutant.test.yaml": checks})
            files[f"{mode}-{name}/mutant.test.yaml"] = name
    out = tools.run_split([promtool, "test", "rules"], list(files), cwd=tmp_path)
    results = _results(out)
    assert sorted(results) == sorted(files), out
    missed = [
        path.removesuffix("/mutant.test.yaml")
        for path, text in results.items()
        if "FAILED" not in text or f"alertname: {files[path]}," not in text
    ]
    assert missed == [], f"unit tests did not catch these broken alerts: {missed}"


def _checks_for(
    unit_tests: dict[str, dict[str, Any]], alert: str, *, firing: bool
) -> dict[str, Any]:
    """The unit tests reduced to `alert`'s checks that expect it firing (or silent)."""
    kept = []
    for content in unit_tests.values():
        for test in content["tests"]:
            checks = [
                c
                for c in test.get("alert_rule_test", [])
                if c["alertname"] == alert and bool(c.get("exp_alerts")) == firing
            ]
            if checks:
                kept.append({**test, "alert_rule_test": checks})
    first = next(iter(unit_tests.values()))
    return {
        "rule_files": [sources.RULES_FILE_NAME],
        "evaluation_interval": first.get("evaluation_interval", "1m"),
        "tests": kept,
    }


def test_alert_conventions() -> None:
    names = [r["alert"] for r in sources.alert_rules()]
    assert len(names) == len(set(names)), "duplicate alert names"
    problems = []
    for rule in sources.alert_rules():
        if rule.get("labels", {}).get("severity") not in SEVERITIES:
            problems.append(f"{rule['alert']}: severity label not in {sorted(SEVERITIES)}")
        for key in ANNOTATIONS:
            if not str(rule.get("annotations", {}).get(key, "")).strip():
                problems.append(f"{rule['alert']}: no {key} annotation")
    assert problems == []


def test_prometheus_rule_object() -> None:
    rule = sources.prometheus_rule()
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["kind"] == "PrometheusRule"
    assert rule["metadata"]["namespace"] == "llm-infra"
    assert set(rule["spec"]) == {"groups"}


def test_required_alerts_use_their_series() -> None:
    rules = {r["alert"]: r for r in sources.alert_rules()}
    assert sorted(set(REQUIRED_ALERTS) - set(rules)) == []
    for name, series in REQUIRED_ALERTS.items():
        used = {vs.name for vs in selectors(pp.parse(rules[name]["expr"]))}
        assert series <= used, f"{name} uses {sorted(used)}"


def test_ollama_down_selects_both_ollama_providers_only() -> None:
    """Synapse's provider label is the LiteLLM prefix: ollama/ and ollama_chat/ are Ollama."""
    rule = next(r for r in sources.alert_rules() if r["alert"] == "OllamaDown")
    matchers = [
        m
        for vs in selectors(pp.parse(rule["expr"]))
        if vs.name == "synapse_deployment_up"
        for m in vs.matchers.matchers
        if m.name == "provider"
    ]
    assert matchers
    for m in matchers:
        assert m.op == pp.MatchOp.Re, m
        pattern = re.compile(m.value)
        assert pattern.fullmatch("ollama") and pattern.fullmatch("ollama_chat")
        assert not pattern.fullmatch("hosted_vllm") and not pattern.fullmatch("openai")
