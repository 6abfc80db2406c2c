"""`synapse health`: is the stack up? (replaces the build plan's scripts/health-check.sh)

Checks the namespace, ready pods per app, bound PVCs, each backend answering directly, the
gateway's readiness, its `/health`, and each backend as the gateway sees it (its
`synapse_deployment_up` series). `--phase N` checks what phases 1..N deploy.
In-cluster Services are reached through the API server's service proxy: no port-forward.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from synapse.ops.output import add_common_args, run_command

if TYPE_CHECKING:
    from synapse.ops.endpoints import Endpoints
    from synapse.ops.kube import Kube
    from synapse.ops.models import RoutingConfig
    from synapse.ops.output import Check


def add_gateway_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-n", "--namespace", default="llm-infra", help="Synapse's namespace")
    p.add_argument("--config", help="routing config (default: config/litellm-config.yaml)")
    p.add_argument(
        "--gateway-url",
        help="the gateway's keyed API (default: Service synapse:8000 through the API proxy)",
    )
    p.add_argument(
        "--master-key",
        help="gateway master key (default: $SYNAPSE_MASTER_KEY, else Secret synapse-master-key)",
    )
    p.add_argument(
        "--metrics-port",
        type=int,
        default=9090,
        help="the gateway's metrics port (synapse_settings.metrics_port): /metrics is served "
        "only there, never on the API ports (default 9090)",
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "health",
        help="check pods, PVCs, backends and the gateway",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--phase", type=int, choices=range(1, 6), default=5, help="check phases 1..N (default 5)"
    )
    add_gateway_args(p)
    add_common_args(p)
    p.set_defaults(func=lambda args: run_command(args, run))


def run(args: argparse.Namespace) -> int:
    from synapse.ops.endpoints import Endpoints
    from synapse.ops.kube import Kube
    from synapse.ops.models import routing_or_none
    from synapse.ops.output import guarded, render_checks

    routing = routing_or_none(args.config)
    kube = Kube.connect(args.kubeconfig, args.context)
    checks: list[Check] = []
    with Endpoints(lambda: kube, default_namespace=args.namespace) as eps:
        ns = args.namespace
        from synapse.ops import probes

        checks += guarded(f"namespace {ns}", lambda: probes.namespace_check(kube, ns))
        for app in probes.upto(probes.PHASE_APPS, args.phase):
            checks += guarded(f"pods {app}", lambda app=app: probes.pods_ready(kube, ns, app))
        checks += guarded(
            "pvcs", lambda: probes.pvc_checks(kube, ns, probes.upto(probes.PHASE_PVCS, args.phase))
        )
        for name, url, path in probes.upto(probes.PHASE_BACKENDS, args.phase):
            expect = "Ollama is running" if name == "ollama" else None
            checks += guarded(
                f"{name} direct",
                lambda url=url, path=path, name=name, expect=expect: probes.http_check(
                    f"{name} direct", eps.for_url(url), path, expect=expect
                ),
            )
        if args.phase >= 3:
            checks += gateway_checks(args, kube, eps, routing)
    return render_checks(f"synapse health (phases 1-{args.phase})", checks, as_json=args.json)


def gateway_checks(
    args: argparse.Namespace, kube: Kube, eps: Endpoints, routing: RoutingConfig | None
) -> list[Check]:
    from synapse.ops import probes
    from synapse.ops.endpoints import auth_headers
    from synapse.ops.output import OpsError, failed, passed, verdict

    gw = eps.for_url(args.gateway_url or probes.GATEWAY_URL)
    checks = [
        probes.http_check("gateway readiness", gw, "/health/readiness"),
        probes.http_check(
            "gateway ollama port",
            eps.for_url(probes.GATEWAY_OLLAMA_URL),
            "/",
            expect="Ollama is running",
        ),
    ]
    key = probes.master_key(lambda: kube, args.master_key, args.namespace)
    if key is None:
        checks.append(
            probes.Check("gateway /health", "skip", "no key", "no master key found to call it")
        )
    else:
        try:
            r = probes.timed(gw, "GET", "/health", headers=auth_headers(key))
            checks.append(
                verdict(
                    "gateway /health",
                    r.status == 200,
                    f"HTTP {r.status}",
                    summarize_health(r.body) + probes.keyed_hint(r.status, gw),
                )
            )
        except OpsError as exc:
            checks.append(failed("gateway /health", "unreachable", str(exc)))
    try:
        metrics = probes.scrape(eps.for_url(probes.gateway_metrics_url(args.metrics_port)))
    except OpsError as exc:
        return [*checks, failed("gateway metrics", "unreachable", str(exc))]
    deployed = set(probes.upto(probes.PHASE_APPS, args.phase))
    rows = probes.series(metrics, "synapse_deployment_up")
    if not rows:
        checks.append(failed("via gateway", "no series", "synapse_deployment_up not exported"))
    for labels, value in sorted(rows, key=lambda r: r[0].get("deployment", "")):
        dep = labels.get("deployment", "?")
        service = backend_service(routing, dep)
        if service is not None and service not in deployed:
            continue
        name = f"via gateway: {labels.get('model', '?')}"
        value_text = "up" if value == 1 else "down"
        detail = f"deployment {dep}" + (f" → {service}" if service else "")
        checks.append(
            passed(name, value_text, detail) if value == 1 else failed(name, value_text, detail)
        )
    return checks


def backend_service(routing: RoutingConfig | None, deployment_id: str) -> str | None:
    """The Service a gateway deployment points at (from its api_base), when the config says."""
    from synapse.ops.endpoints import service_ref

    if routing is None:
        return None
    for e in routing.entries:
        if e.id == deployment_id:
            ref = service_ref(e.api_base, "llm-infra")
            return ref.name if ref else None
    return None


def summarize_health(body: object) -> str:
    """One line from the gateway's /health JSON, whatever its exact shape."""
    if not isinstance(body, dict):
        return ""
    if "healthy_endpoints" in body or "unhealthy_endpoints" in body:
        healthy = len(body.get("healthy_endpoints") or [])
        bad = [
            e.get("model", "?")
            for e in body.get("unhealthy_endpoints") or []
            if isinstance(e, dict)
        ]
        return f"{healthy} healthy, {len(bad)} unhealthy" + (f": {', '.join(bad)}" if bad else "")
    return ", ".join(
        f"{k}={v}" for k, v in list(body.items())[:6] if not isinstance(v, dict | list)
    )
