"""What Prometheus itself says about Synapse: whether the PrometheusRule's alerts are loaded
(/api/v1/rules) and whether the gateway is scraped (/api/v1/targets). A PrometheusRule or
ServiceMonitor that exists but lacks the label the Prometheus selects is silently ignored, so
only Prometheus's own answer proves monitoring works."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from synapse.ops.endpoints import Endpoint
    from synapse.ops.output import Check

LABEL_HINT = (
    "is the `release` label in monitoring/kustomization.yaml the one your Prometheus selects? "
    "kubectl -n monitoring get prometheus -o jsonpath='{.items[0].spec.ruleSelector}'"
)


def _data(ep: Endpoint, path: str) -> Any:
    from synapse.ops.output import OpsError

    doc = ep.get_json(path)
    if not isinstance(doc, dict) or doc.get("status") != "success":
        raise OpsError(f"{path} on {ep.label}: not a Prometheus API answer: {str(doc)[:200]}")
    return doc.get("data") or {}


def loaded_alerts(ep: Endpoint) -> set[str]:
    return {
        str(rule.get("name"))
        for group in _data(ep, "/api/v1/rules").get("groups") or []
        for rule in group.get("rules") or []
        if rule.get("type") == "alerting"
    }


def rules_check(ep: Endpoint, wanted: list[str]) -> Check:
    from synapse.ops.output import verdict

    loaded = loaded_alerts(ep)
    absent = [a for a in wanted if a not in loaded]
    detail = f"missing: {', '.join(absent)}; {LABEL_HINT}" if absent else ep.label
    return verdict(
        "alert rules loaded in Prometheus",
        bool(wanted) and not absent,
        f"{len(wanted) - len(absent)}/{len(wanted)} alerts",
        detail,
    )


def targets_check(ep: Endpoint, job: str, namespace: str) -> Check:
    from synapse.ops.output import verdict

    targets = [
        t
        for t in _data(ep, "/api/v1/targets").get("activeTargets") or []
        if (t.get("labels") or {}).get("job") == job
        and (t.get("labels") or {}).get("namespace", namespace) == namespace
    ]
    up = [t for t in targets if t.get("health") == "up"]
    errors = "; ".join(str(t.get("lastError")) for t in targets if t.get("lastError"))
    if not targets:
        detail = f"no active target with job={job}: {LABEL_HINT}"
    else:
        detail = ", ".join(str(t.get("scrapeUrl", "?")) for t in targets)
        if errors:
            detail += f"; errors: {errors}"
    return verdict(
        f"Prometheus scrapes {job}", bool(up), f"{len(up)}/{len(targets)} targets up", detail
    )
