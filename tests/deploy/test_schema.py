"""Schema validation of everything rendered (kubernetes-validate, strict: unknown fields fail).

Custom resources are not in Kubernetes' schemas: Traefik's HelmChartConfig is checked here on its
own terms; the Prometheus Operator kinds belong to monitoring/ and are checked structurally.
"""

from __future__ import annotations

import re

import pytest
import yaml

from tests.deploy.helpers import CONFIG, CUSTOM_KINDS, Doc, find

# K3s releases follow Kubernetes; forge runs a current one. The oldest version listed is the
# floor these manifests promise (CronJob timeZone, sidecar-free pods: fine from 1.27 on).
K8S_VERSIONS = ("1.30.0", "1.35.0")


def _unique(docs: list[Doc]) -> list[Doc]:
    seen: dict[tuple[str, str, str], Doc] = {}
    for doc in docs:
        meta = doc["metadata"]
        seen[(doc["kind"], meta.get("namespace", ""), meta["name"])] = doc
    return list(seen.values())


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_builtin_objects_match_the_kubernetes_schema(version: str, everything: list[Doc]) -> None:
    import kubernetes_validate

    errors = []
    for doc in _unique(everything):
        if (doc["apiVersion"], doc["kind"]) in CUSTOM_KINDS:
            continue
        name = f"{doc['kind']}/{doc['metadata']['name']}"
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            errors.append(f"{name}: {path}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            errors.append(f"{name}: unknown kind: {exc.message}")
    assert not errors, "\n".join(errors)


def test_prometheus_operator_objects_are_well_formed(everything: list[Doc]) -> None:
    found = [d for d in everything if d["apiVersion"] == "monitoring.coreos.com/v1"]
    for doc in found:
        assert doc["metadata"]["name"], doc
        assert isinstance(doc.get("spec"), dict) and doc["spec"], doc["metadata"]["name"]


def _seconds(duration: str) -> float:
    """A Go duration such as "900s", "15m" or "1h30m"."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, duration
    return sum(float(n) * units[u] for n, u in parts)


def test_traefik_read_timeout_covers_the_longest_backend_timeout(everything: list[Doc]) -> None:
    config = find(everything, "HelmChartConfig", "traefik")
    assert config["apiVersion"] == "helm.cattle.io/v1"
    assert config["metadata"]["namespace"] == "kube-system"  # K3s only reads it there
    values = yaml.safe_load(config["spec"]["valuesContent"])
    timeouts = values["ports"]["websecure"]["transport"]["respondingTimeouts"]
    gateway = yaml.safe_load(CONFIG.read_text())
    longest = max(float(m["litellm_params"].get("timeout", 0)) for m in gateway["model_list"])
    assert _seconds(timeouts["readTimeout"]) >= longest
    # 0 = no write deadline; otherwise it must also outlast the longest request.
    write = _seconds(timeouts["writeTimeout"])
    assert write == 0 or write >= longest
