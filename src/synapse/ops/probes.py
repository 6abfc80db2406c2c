"""Checks shared by `synapse health` and `synapse verify`: pods ready, PVCs bound, HTTP
answers with their latency, the gateway's metrics, pod memory, the master key."""

from __future__ import annotations

import base64
import os
import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from synapse.ops.output import Check, OpsError, failed, verdict

if TYPE_CHECKING:
    from synapse.ops.endpoints import Endpoint
    from synapse.ops.kube import Kube

NAMESPACE = "llm-infra"
MASTER_KEY_SECRET = ("synapse-master-key", "master-key")
GATEWAY_URL = "http://synapse.llm-infra.svc.cluster.local:8000"
GATEWAY_OLLAMA_URL = "http://synapse.llm-infra.svc.cluster.local:11434"
# The gateway serves /metrics only on its own port (synapse_settings.metrics_port).
METRICS_PORT = 9090
PROMETHEUS_URL = "http://kube-prometheus-stack-prometheus.monitoring.svc.cluster.local:9090"
OLLAMA_URL = "http://ollama.llm-infra.svc.cluster.local:11434"
VLLM_URL = "http://vllm-inference.llm-infra.svc.cluster.local:8001"
STT_URL = "http://speaches-stt.llm-infra.svc.cluster.local:8000"
TTS_URL = "http://piper-tts.llm-infra.svc.cluster.local:8000"

# What each phase deploys (cumulative in manifests/phases/phaseN).
PHASE_APPS = {
    1: ["ollama"],
    2: ["vllm-inference"],
    3: ["synapse"],
    4: ["speaches-stt", "piper-tts"],
}
PHASE_PVCS = {1: ["ollama-models"], 2: ["vllm-model-cache"]}
PHASE_BACKENDS = {
    1: [("ollama", OLLAMA_URL, "/")],
    2: [("vllm-inference", VLLM_URL, "/health")],
    4: [("speaches-stt", STT_URL, "/health"), ("piper-tts", TTS_URL, "/health")],
}


def upto(table: dict[int, list[Any]], phase: int) -> list[Any]:
    return [x for p in sorted(table) if p <= phase for x in table[p]]


# -- cluster objects -----------------------------------------------------------------------


def namespace_check(kube: Kube, ns: str) -> Check:
    from lightkube.resources.core_v1 import Namespace

    obj = kube.get(Namespace, ns)
    if obj is None:
        return failed(f"namespace {ns}", "missing")
    phase = obj.status.phase if obj.status else "?"
    return verdict(f"namespace {ns}", phase == "Active", phase or "?")


def pods_ready(kube: Kube, ns: str, app: str, *, want: int | None = None) -> Check:
    """Ready pods of an app against its Deployment's replicas (or `want`)."""
    from synapse.ops.kube import pod_ready

    name = f"pods {app}"
    dep = kube.deployment(ns, app)
    pods = kube.list_pods(ns, {"app": app})
    ready = sum(1 for p in pods if pod_ready(p))
    desired = want if want is not None else (dep.spec.replicas if dep and dep.spec else None)
    if dep is None and not pods:
        return failed(name, "no deployment", f"deployment {ns}/{app} not found")
    if desired is None:
        desired = 1
    detail = ", ".join(
        f"{p.metadata.name}: {p.status.phase if p.status else '?'}"
        for p in pods
        if not pod_ready(p)
    )
    ok = desired > 0 and ready >= desired
    return verdict(name, ok, f"{ready}/{desired} ready", detail, ready=ready, desired=desired)


def pvc_checks(kube: Kube, ns: str, expected: Iterable[str]) -> list[Check]:
    from lightkube.resources.core_v1 import PersistentVolumeClaim

    found = {p.metadata.name: p for p in kube.list(PersistentVolumeClaim, ns)}
    checks = []
    for name in expected:
        pvc = found.get(name)
        if pvc is None:
            checks.append(failed(f"pvc {name}", "missing"))
            continue
        phase = pvc.status.phase if pvc.status else "?"
        cap = ((pvc.status.capacity or {}) if pvc.status else {}).get("storage", "")
        checks.append(verdict(f"pvc {name}", phase == "Bound", f"{phase} {cap}".strip()))
    return checks


# -- HTTP -------------------------------------------------------------------------------------


@dataclass
class Timed:
    status: int
    seconds: float
    body: Any
    text: str


def timed(ep: Endpoint, method: str, path: str, **kw: Any) -> Timed:
    started = time.perf_counter()
    resp = ep.request(method, path, **kw)
    seconds = time.perf_counter() - started
    body: Any = None
    if "json" in resp.headers.get("content-type", ""):
        try:
            body = resp.json()
        except ValueError:
            body = None
    return Timed(resp.status_code, seconds, body, resp.text if body is None else "")


def http_check(
    name: str,
    ep: Endpoint,
    path: str,
    *,
    expect: str | None = None,
    headers: dict[str, str] | None = None,
) -> Check:
    try:
        r = timed(ep, "GET", path, headers=headers)
    except OpsError as exc:
        return failed(name, "unreachable", str(exc))
    ok = r.status < 400 and (expect is None or expect in r.text)
    detail = f"GET {path} on {ep.label}"
    if not ok:
        detail += f": {r.text[:160] or r.body}"
    return verdict(name, ok, f"HTTP {r.status}, {r.seconds * 1000:.0f} ms", detail)


def median_ms(samples: Iterable[float]) -> float:
    return statistics.median(samples) * 1000


# -- the gateway's metrics --------------------------------------------------------------------


def gateway_metrics_url(port: int) -> str:
    return f"http://synapse.{NAMESPACE}.svc.cluster.local:{port}"


def scrape(ep: Endpoint) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Prometheus text → {(sample name, sorted labels): value}."""
    from prometheus_client.parser import text_string_to_metric_families

    resp = ep.request("GET", "/metrics")
    if resp.status_code != 200:
        raise OpsError(f"GET /metrics on {ep.label}: HTTP {resp.status_code}")
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    try:
        for family in text_string_to_metric_families(resp.text):
            for s in family.samples:
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    except ValueError as exc:
        raise OpsError(f"/metrics on {ep.label} is not Prometheus text: {exc}") from exc
    return out


def series(
    metrics: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **match: str
) -> list[tuple[dict[str, str], float]]:
    rows = []
    for (n, labels), v in metrics.items():
        d = dict(labels)
        if n == name and all(d.get(k) == val for k, val in match.items()):
            rows.append((d, v))
    return rows


def total(
    metrics: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **match: str
) -> float:
    return sum(v for _, v in series(metrics, name, **match))


# -- memory (metrics.k8s.io, i.e. `kubectl top`) --------------------------------------------


def pod_memory(kube: Kube, ns: str, prefix: str | None = None) -> dict[str, float]:
    """Working-set bytes per pod from metrics-server; OpsError when it is not installed."""
    from lightkube.generic_resource import create_namespaced_resource
    from lightkube.utils.quantity import parse_quantity

    pod_metrics = create_namespaced_resource(
        "metrics.k8s.io", "v1beta1", "PodMetrics", "pods", verbs=["get", "list"]
    )
    items = kube.list(pod_metrics, ns)
    out: dict[str, float] = {}
    for item in items:
        name = item["metadata"]["name"]
        if prefix and not name.startswith(prefix):
            continue
        out[name] = float(
            sum(parse_quantity(c["usage"]["memory"]) or 0 for c in item.get("containers", []))
        )
    return out


GI = 1024**3


def memory_check(
    name: str, kube: Kube, ns: str, limit_bytes: float, prefix: str | None = None
) -> Check:
    try:
        usage = pod_memory(kube, ns, prefix)
    except OpsError as exc:
        return Check(name, "skip", "no metrics", f"metrics.k8s.io unavailable: {exc}")
    if not usage:
        return Check(
            name, "skip", "no pods", f"no pod metrics{f' for {prefix}*' if prefix else ''}"
        )
    used = sum(usage.values())
    return verdict(
        name,
        used < limit_bytes,
        f"{used / GI:.1f} Gi",
        f"limit {limit_bytes / GI:g} Gi",
        bytes=used,
    )


# -- the master key -------------------------------------------------------------------------


def master_key(
    kube_factory: Callable[[], Kube] | None, explicit: str | None, ns: str = NAMESPACE
) -> str | None:
    """--master-key, else $SYNAPSE_MASTER_KEY, else the cluster's Secret (if readable)."""
    if explicit:
        return explicit
    if os.environ.get("SYNAPSE_MASTER_KEY"):
        return os.environ["SYNAPSE_MASTER_KEY"]
    if kube_factory is None:
        return None
    from lightkube.resources.core_v1 import Secret

    try:
        secret = kube_factory().get(Secret, MASTER_KEY_SECRET[0], ns)
    except OpsError:
        return None
    data = (secret.data or {}) if secret is not None else {}
    raw = data.get(MASTER_KEY_SECRET[1])
    return base64.b64decode(raw).decode() if raw else None


def keyed_hint(status: int, ep: Endpoint) -> str:
    if status == 403:
        return " (a consumer's key? these checks need the master key)"
    if status != 401:
        return ""
    if ep.via_proxy:
        return (
            " (the API server's proxy strips Authorization; the key went as x-api-key too — "
            "or pass --gateway-url)"
        )
    return " (wrong or missing master key: --master-key or $SYNAPSE_MASTER_KEY)"
