"""Schema validation of everything rendered (kubernetes-validate, strict: unknown fields fail).

Custom resources are not in Kubernetes' schemas: Traefik's ServersTransport is checked here on its
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


def test_traefik_timeouts_are_scoped_to_the_gateway_route(everything: list[Doc]) -> None:
    """Issue 16.6: the long timeouts live in a ServersTransport that only the gateway's Service
    names, so neither Traefik's own configuration nor another app's route changes."""
    transport = find(everything, "ServersTransport", "synapse")
    assert transport["apiVersion"] == "traefik.io/v1alpha1"
    namespace = transport["metadata"]["namespace"]
    timeouts = transport["spec"]["forwardingTimeouts"]
    gateway = yaml.safe_load(CONFIG.read_text())
    longest = max(float(m["litellm_params"].get("timeout", 0)) for m in gateway["model_list"])
    header = _seconds(timeouts["responseHeaderTimeout"])
    assert header >= longest, "Traefik must wait as long as the slowest backend may take"
    reference = f"{namespace}-{transport['metadata']['name']}@kubernetescrd"
    users = [
        d["metadata"]["name"]
        for d in everything
        if (d["metadata"].get("annotations") or {}).get(
            "traefik.ingress.kubernetes.io/service.serverstransport"
        )
        == reference
    ]
    assert users == ["synapse"]
    assert find(everything, "Service", "synapse")["metadata"]["namespace"] == namespace
