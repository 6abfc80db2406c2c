"""Every PromQL expression of the alerts and the dashboard parses (promtool) and uses only
series and labels that the gateway really exports (synapse.metrics.REGISTRY)."""

from __future__ import annotations

import re
from pathlib import Path

import promql_parser as pp
import pytest
import yaml

from . import sources, tools
from .exports import exported_series
from .promql import Checker, is_gateway_series, selectors

EXPRS = sources.all_exprs()


@pytest.fixture(scope="module")
def exported() -> dict[str, frozenset[str]]:
    return exported_series()


def _base_name(sample: str) -> str:
    return re.sub(r"_(total|bucket|sum|count)$", "", sample)


def test_every_expression_parses_with_promtool(tmp_path: Path) -> None:
    """One recording rule per expression, one `promtool check rules` run for all of them."""
    promtool = tools.require("promtool")
    records = {f"synapse_check:expr_{i}": e for i, e in enumerate(EXPRS)}
    rules = {
        "groups": [
            {
                "name": "parse-check",
                "rules": [{"record": name, "expr": e.promql} for name, e in records.items()],
            }
        ]
    }
    path = tmp_path / "exprs.rules.yaml"
    path.write_text(yaml.safe_dump(rules, sort_keys=False))
    proc = tools.run([promtool, "check", "rules", str(path)])
    failed = [
        f"{e.origin}: {e.promql}" for name, e in records.items() if f'"{name}"' in proc.stdout
    ]
    assert proc.returncode == 0 and not failed, f"{failed}\n{tools.output(proc)}"
    assert f"SUCCESS: {len(records)} rules found" in proc.stdout


def test_expressions_cover_alerts_and_dashboard() -> None:
    origins = [e.origin for e in EXPRS]
    assert sum(o.startswith("alert ") for o in origins) == len(sources.alert_rules())
    assert sum(o.startswith("panel ") for o in origins) >= 30


@pytest.mark.parametrize("expr", EXPRS, ids=[e.origin for e in EXPRS])
def test_gateway_series_and_labels_exist(
    expr: sources.Expr, exported: dict[str, frozenset[str]]
) -> None:
    assert Checker(exported).check(expr.promql, expr.legend) == []


def test_checker_sees_the_gateway_series(exported: dict[str, frozenset[str]]) -> None:
    """Guards the walk itself: the gateway series in the sources are found by the AST walk."""
    in_text = {m for e in EXPRS for m in re.findall(r"\b(?:synapse|process)_\w+", e.promql)}
    walked = {
        vs.name for e in EXPRS for vs in selectors(pp.parse(e.promql)) if is_gateway_series(vs.name)
    }
    assert walked == in_text
    assert walked <= set(exported)


def test_dashboard_shows_every_gateway_metric(exported: dict[str, frozenset[str]]) -> None:
    used = {
        _base_name(vs.name)
        for e in sources.dashboard_exprs()
        for vs in selectors(pp.parse(e.promql))
    }
    families = {_base_name(name) for name in exported if name.startswith("synapse_")}
    assert sorted(families - used) == []


def test_variable_queries_use_exported_series(exported: dict[str, frozenset[str]]) -> None:
    queries = sources.variable_queries()
    assert queries
    for variable, metric, label in queries:
        assert metric in exported, variable
        assert label in exported[metric], variable


def test_grafana_variables_only_where_any_regex_fits() -> None:
    """The parse checks put `.*` in place of query variables: valid only inside `=~"..."`."""
    variables = [v["name"] for v in sources.query_variables()]
    for panel in sources.panels():
        for target in panel.get("targets", []):
            expr = target.get("expr", "")
            for name in variables:
                for match in re.finditer(rf"\$\{{?{name}\b\}}?", expr):
                    before = expr[: match.start()]
                    assert re.search(r'=~\s*"$', before), (panel["title"], expr)
            left = sources.substitute_variables(expr, sources.query_variables())
            assert not re.findall(r"\$(?!\d)", left), (panel["title"], left)
