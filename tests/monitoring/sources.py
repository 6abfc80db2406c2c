"""The monitoring sources under test: alert rules, promtool tests, dashboard, kustomization.

Every PromQL expression is gathered here once, with where it came from, so that each check
reports failures by alert name or dashboard panel.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "monitoring"
ALERTS_FILE = MONITORING / "alerts" / "synapse-alerts.yaml"
ALERT_TESTS_DIR = MONITORING / "alerts" / "tests"
DASHBOARD_FILE = MONITORING / "dashboards" / "synapse-overview.json"
# The name the promtool test files give in rule_files.
RULES_FILE_NAME = "synapse-alerts.rules.yaml"

# What Grafana puts in place of its built-in variables, for parsing only.
GRAFANA_BUILTINS = {
    "$__rate_interval": "5m",
    "$__interval": "1m",
    "$__range": "1h",
}


@dataclass(frozen=True)
class Expr:
    origin: str  # "alert OllamaDown" or "panel 'Requests/s by model' A"
    promql: str
    legend: str = ""  # dashboard legendFormat, may use {{label}}


def prometheus_rule() -> dict[str, Any]:
    return yaml.safe_load(ALERTS_FILE.read_text())


def rules_spec() -> dict[str, Any]:
    """The PrometheusRule's spec: a plain Prometheus rules file (`groups:`)."""
    return prometheus_rule()["spec"]


def alert_rules() -> list[dict[str, Any]]:
    return [r for g in rules_spec()["groups"] for r in g["rules"] if "alert" in r]


def write_plain_rules(directory: Path) -> Path:
    path = directory / RULES_FILE_NAME
    path.write_text(yaml.safe_dump(rules_spec(), sort_keys=False))
    return path


def alert_test_files() -> list[Path]:
    return sorted(ALERT_TESTS_DIR.glob("*.test.yaml"))


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD_FILE.read_text())


def panels(dash: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """All panels, rows' nested panels included (collapsed rows keep theirs inside)."""
    out: list[dict[str, Any]] = []
    for panel in (dash or dashboard())["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def query_variables(dash: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    return [v for v in (dash or dashboard())["templating"]["list"] if v["type"] == "query"]


def substitute_variables(promql: str, variables: list[dict[str, Any]]) -> str:
    """Grafana's variables replaced by what Prometheus could receive.

    Query variables stand in regex matchers (`=~"$model"`): any regex is fine there.
    """
    for name, value in GRAFANA_BUILTINS.items():
        promql = promql.replace(name, value)
    for var in variables:
        for spelling in (f"${{{var['name']}}}", f"${var['name']}"):
            promql = promql.replace(spelling, ".*")
    return promql


def alert_exprs() -> list[Expr]:
    return [Expr(f"alert {r['alert']}", r["expr"]) for r in alert_rules()]


def dashboard_exprs() -> list[Expr]:
    dash = dashboard()
    variables = query_variables(dash)
    out = []
    for panel in panels(dash):
        for target in panel.get("targets", []):
            if target.get("expr"):
                out.append(
                    Expr(
                        f"panel {panel['title']!r} {target['refId']}",
                        substitute_variables(target["expr"], variables),
                        target.get("legendFormat", ""),
                    )
                )
    return out


def all_exprs() -> list[Expr]:
    return alert_exprs() + dashboard_exprs()


LABEL_VALUES = re.compile(r"^label_values\((?P<metric>[^,()]+),\s*(?P<label>\w+)\)$")


def variable_queries() -> list[tuple[str, str, str]]:
    """(variable, metric selector, label) of each `label_values(metric, label)` variable."""
    out = []
    for var in query_variables():
        query = var["query"]
        text = query["query"] if isinstance(query, dict) else query
        match = LABEL_VALUES.match(text.strip())
        assert match, f"variable {var['name']}: unsupported query {text!r}"
        out.append((var["name"], match["metric"].strip(), match["label"]))
    return out
