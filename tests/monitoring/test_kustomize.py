"""monitoring/ renders with kustomize into what Prometheus Operator and Grafana's sidecar read,
and the Makefile targets deploy it."""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Any

import promql_parser as pp
import pytest
import yaml

from . import sources, tools

NAMESPACE = "llm-infra"
# `kubectl apply` (client side) keeps the whole object in an annotation limited to 256 KiB.
ANNOTATION_LIMIT = 262144
# The Services the monitors select, as the contract names them, and the port each scrapes: the
# gateway serves /metrics only on its own port (synapse_settings.metrics_port), never on 8000.
MONITORED = {"synapse": "synapse", "vllm-inference": "vllm-inference"}
SCRAPED_PORT = {"synapse": "metrics", "vllm-inference": "http"}
SELECTED_KINDS = ("PrometheusRule", "ServiceMonitor", "Probe")


@pytest.fixture(scope="module")
def rendered() -> dict[tuple[str, str], dict[str, Any]]:
    kubectl = tools.require("kubectl")
    proc = tools.run([kubectl, "kustomize", str(sources.MONITORING)])
    assert proc.returncode == 0, tools.output(proc)
    docs = [d for d in yaml.safe_load_all(proc.stdout) if d]
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


def test_renders_the_expected_objects(rendered: dict) -> None:
    assert sorted(rendered) == [
        ("ConfigMap", "synapse-grafana-dashboard"),
        ("Probe", "synapse-ingress"),
        ("PrometheusRule", "synapse-alerts"),
        ("ServiceMonitor", "synapse"),
        ("ServiceMonitor", "vllm-inference"),
    ]
    for doc in rendered.values():
        assert doc["metadata"]["namespace"] == NAMESPACE
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "synapse"


def test_dashboard_configmap_for_the_grafana_sidecar(rendered: dict) -> None:
    cm = rendered[("ConfigMap", "synapse-grafana-dashboard")]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(cm["data"]["synapse-overview.json"]) == sources.dashboard()
    assert len(json.dumps(cm)) < ANNOTATION_LIMIT * 0.8


def test_prometheus_rule_is_the_tested_one(rendered: dict) -> None:
    assert rendered[("PrometheusRule", "synapse-alerts")]["spec"] == sources.rules_spec()


@pytest.mark.parametrize("name", sorted(MONITORED))
def test_service_monitor_scrapes_metrics(rendered: dict, name: str) -> None:
    spec = rendered[("ServiceMonitor", name)]["spec"]
    assert spec["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    assert spec["selector"]["matchLabels"] == {"app.kubernetes.io/name": MONITORED[name]}
    [endpoint] = spec["endpoints"]
    assert endpoint["port"] == SCRAPED_PORT[name]
    assert endpoint["path"] == "/metrics"


def test_prometheus_selector_label_is_one_kustomize_setting(rendered: dict) -> None:
    """kube-prometheus-stack ignores rules and monitors without its release label (issue 16.4):
    one `labels` entry in monitoring/kustomization.yaml puts it on every object it selects."""
    spec = yaml.safe_load((sources.MONITORING / "kustomization.yaml").read_text())
    [entry] = [e for e in spec["labels"] if "release" in e["pairs"]]
    assert not entry.get("includeSelectors"), "a selector label must not change selectors"
    release = entry["pairs"]["release"]
    selected = [d for (kind, _), d in rendered.items() if kind in SELECTED_KINDS]
    assert len(selected) == 4
    for doc in selected:
        assert doc["metadata"]["labels"]["release"] == release, doc["metadata"]["name"]
    sources_text = "".join(p.read_text() for p in (sources.MONITORING).rglob("*.yaml"))
    assert sources_text.count("release:") == 1, "set it in the kustomization only"


def test_certificate_probe_feeds_the_tls_alerts(rendered: dict) -> None:
    from tests.deploy.helpers import MANIFESTS, render

    probe = rendered[("Probe", "synapse-ingress")]["spec"]
    ingress = next(d for d in render(MANIFESTS / "infra" / "ingress") if d["kind"] == "Ingress")
    host = ingress["spec"]["rules"][0]["host"]
    assert probe["targets"]["staticConfig"]["static"] == [f"https://{host}/health/liveliness"]
    assert probe["module"] == "http_2xx"
    tls_rules = [
        r for g in sources.rules_spec()["groups"] if g["name"] == "synapse.tls" for r in g["rules"]
    ]
    assert len(tls_rules) == 3
    for rule in tls_rules:
        assert f'job="{probe["jobName"]}"' in rule["expr"], rule["alert"]


@functools.cache
def _manifest_docs() -> tuple[dict[str, Any], ...]:
    docs: list[dict[str, Any]] = []
    for path in sorted((sources.ROOT / "manifests").rglob("*.yaml")):
        try:
            docs += [d for d in yaml.safe_load_all(path.read_text()) if isinstance(d, dict)]
        except yaml.YAMLError:
            continue
    return tuple(docs)


def _manifests(kind: str, names: set[str]) -> dict[str, list[dict[str, Any]]]:
    """Objects of `kind` named in `names` in manifests/ (owned by the deploy area)."""
    found: dict[str, list[dict[str, Any]]] = {}
    for doc in _manifest_docs():
        name = (doc.get("metadata") or {}).get("name")
        if doc.get("kind") == kind and name in names and doc.get("spec"):
            found.setdefault(name, []).append(doc)
    return found


def _services_in_manifests() -> dict[str, list[dict[str, Any]]]:
    services = _manifests("Service", set(MONITORED))
    return {n: [s for s in docs if s["spec"].get("ports")] for n, docs in services.items()}


def _bytes(quantity: str) -> float:
    units = {"": 1, "k": 1e3, "M": 1e6, "G": 1e9, "Ki": 1024, "Mi": 1024**2, "Gi": 1024**3}
    number, unit = re.fullmatch(r"([\d.]+)([A-Za-z]*)", str(quantity)).groups()
    return float(number) * units[unit]


def test_memory_alert_fires_before_the_gateway_is_oom_killed() -> None:
    rule = next(r for r in sources.alert_rules() if r["alert"] == "SynapseGatewayHighMemory")
    expr = pp.parse(rule["expr"])
    assert str(expr.op) == ">" and isinstance(expr.rhs, pp.NumberLiteral)
    threshold = expr.rhs.val
    limits = [
        _bytes(c["resources"]["limits"]["memory"])
        for d in _manifests("Deployment", {"synapse"}).get("synapse", [])
        for c in d["spec"]["template"]["spec"]["containers"]
        if c["name"] == "synapse" and c.get("resources", {}).get("limits", {}).get("memory")
    ]
    if not limits:
        pytest.skip("no memory limit for the synapse container in manifests/ yet")
    for limit in limits:
        assert 0.5 * limit <= threshold < 0.95 * limit, (threshold, limit)


@pytest.mark.parametrize("name", sorted(MONITORED))
def test_monitor_matches_the_service_in_manifests(rendered: dict, name: str) -> None:
    """The ServiceMonitor selects the Service by label and port name, which manifests/ owns."""
    services = _services_in_manifests().get(name)
    if not services:
        pytest.skip(f"no Service {name} with ports in manifests/ yet")
    spec = rendered[("ServiceMonitor", name)]["spec"]
    for svc in services:
        labels = svc["metadata"].get("labels", {})
        for key, value in spec["selector"]["matchLabels"].items():
            assert labels.get(key) == value, f"Service {name} lacks label {key}: {value}"
        ports = {p.get("name") for p in svc["spec"]["ports"]}
        assert spec["endpoints"][0]["port"] in ports, f"Service {name} ports {ports}"
        # The Service port leads to the container port of the same name (the metrics listener).
        [port] = [p for p in svc["spec"]["ports"] if p["name"] == spec["endpoints"][0]["port"]]
        assert port["targetPort"] == port["name"]


def test_make_targets(tmp_path: Path) -> None:
    make = tools.require("make")
    proc = tools.run([make, "-s", "-n", "deploy-monitoring", "KUBECTL=kubectl"], cwd=sources.ROOT)
    assert proc.returncode == 0, tools.output(proc)
    assert "kubectl apply -k monitoring" in proc.stdout
    proc = tools.run([make, "-s", "help"], cwd=sources.ROOT)
    assert "deploy-monitoring" in proc.stdout and "test-alerts" in proc.stdout
