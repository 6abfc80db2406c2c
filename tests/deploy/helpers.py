"""Rendering and walking the kustomize output, shared by the tests in tests/deploy."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = REPO / "manifests"
MONITORING = REPO / "monitoring"
CONFIG = REPO / "config" / "litellm-config.yaml"
CONFIG_MIRROR = MANIFESTS / "apps" / "synapse" / "litellm-config.yaml"
NAMESPACE = "llm-infra"
PHASES = (1, 2, 3, 4, 5)
# Kinds whose schema is not in Kubernetes itself (checked on their own, or by their owners).
CUSTOM_KINDS = {
    ("traefik.io/v1alpha1", "ServersTransport"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
    ("monitoring.coreos.com/v1", "Probe"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PodMonitor"),
}
POD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob")

Doc = dict[str, Any]


def kubectl() -> str:
    found = shutil.which(os.environ.get("KUBECTL", "kubectl"))
    if not found:
        raise RuntimeError("kubectl is needed to render the kustomizations (kustomize is built in)")
    return found


def render(path: Path) -> list[Doc]:
    done = subprocess.run(
        [kubectl(), "kustomize", str(path)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise AssertionError(f"kubectl kustomize {path} failed:\n{done.stderr}")
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def everything_kustomization(workdir: Path) -> Path:
    """Every object this repo can deploy: the end state plus LiteLLM and its policies.

    kustomize only accepts relative paths to other kustomizations, so the file points back into
    the repo with relative paths from `workdir`.
    """
    workdir.mkdir(parents=True, exist_ok=True)

    def rel(path: Path) -> str:
        return os.path.relpath(path, workdir)

    spec = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [
            rel(MANIFESTS / "phases" / "final"),
            rel(MANIFESTS / "infra" / "networkpolicies" / "litellm"),
        ],
        "components": [rel(MANIFESTS / "apps" / "litellm")],
    }
    (workdir / "kustomization.yaml").write_text(yaml.safe_dump(spec))
    return workdir


def key(doc: Doc) -> tuple[str, str, str]:
    meta = doc.get("metadata") or {}
    return (doc["kind"], meta.get("namespace", ""), meta["name"])


def find(docs: list[Doc], kind: str, name: str) -> Doc:
    for doc in docs:
        if doc["kind"] == kind and doc["metadata"]["name"] == name:
            return doc
    raise AssertionError(f"{kind}/{name} not rendered")


def pod_template(doc: Doc) -> Doc:
    """The pod template (metadata + spec) of a workload."""
    spec = doc["spec"]
    if doc["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    return spec["template"]


def workloads(docs: list[Doc]) -> Iterator[Doc]:
    return (doc for doc in docs if doc["kind"] in POD_KINDS)


def containers(doc: Doc, init: bool = True) -> Iterator[Doc]:
    spec = pod_template(doc)["spec"]
    yield from spec.get("containers") or []
    if init:
        yield from spec.get("initContainers") or []


def label_selector_matches(selector: Doc | None, labels: dict[str, str]) -> bool:
    """Kubernetes label selector semantics (matchLabels AND matchExpressions); {} matches all."""
    if selector is None:
        return False
    for name, value in (selector.get("matchLabels") or {}).items():
        if labels.get(name) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        present = expr["key"] in labels
        value = labels.get(expr["key"])
        op = expr["operator"]
        if op == "In" and not (present and value in expr["values"]):
            return False
        if op == "NotIn" and present and value in expr["values"]:
            return False
        if op == "Exists" and not present:
            return False
        if op == "DoesNotExist" and present:
            return False
    return True


def selector_matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    """A Service's plain selector."""
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())
