"""`synapse migrate-consumer`: move an Ollama consumer onto Synapse (the build plan's
Consumer Migration Plan, steps 1-5; replaces scripts/migrate-consumer.sh), in the plan's two
steps: `--phase 1` points it at the shared Ollama (ollama.llm-infra:11434) so its own Ollama can
give the GPU back before vLLM (risk R2); `--phase 3` points it at the gateway (synapse:11434).

  plan          (default) the exact changes, and the pre-checks: every model the endpoint in
                use has (/api/tags) is served by the new one
  apply         append the replaced values to a history annotation on the ConfigMap, patch it,
                restart the Deployments that read the ConfigMap (`kubectl rollout restart`)
                and wait
  verify        an embedding from inside the consumer's namespace through the new endpoint,
                its dimension (and direction) compared with the old endpoint's; fails while
                the ConfigMap does not point at the phase's endpoint
  rollback      undo the last step (phase 3 → back on the shared Ollama), refusing to restore
                an endpoint that no longer answers (a decommissioned Ollama)
  decommission  scale the consumer's own Ollama to 0 (deleted only with --delete)
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from synapse.ops.output import add_common_args, run_command

if TYPE_CHECKING:
    from synapse.ops.endpoints import Endpoints
    from synapse.ops.kube import Kube, RolloutState
    from synapse.ops.migration import KeyChange, ModelRow
    from synapse.ops.output import Check

ACTIONS = ("plan", "apply", "verify", "rollback", "decommission")


def register(subparsers: argparse._SubParsersAction) -> None:
    from synapse.ops import migration as m

    p = subparsers.add_parser(
        "migrate-consumer",
        help="move an Ollama consumer (ai-memory-system) onto Synapse",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("action", nargs="?", default="plan", choices=ACTIONS)
    p.add_argument(
        "--phase",
        type=int,
        choices=sorted(m.PHASE_TARGETS),
        help="the plan's step: 1 = the shared Ollama, 3 = the gateway (plan, apply, verify)",
    )
    p.add_argument("-n", "--namespace", default=m.DEFAULT_NAMESPACE, help="consumer namespace")
    p.add_argument(
        "--configmap",
        help=f"ConfigMap to patch (default: the one holding the keys, else {m.DEFAULT_CONFIGMAP})",
    )
    p.add_argument(
        "--key",
        action="append",
        dest="keys",
        metavar="KEY",
        help=f"ConfigMap key to point at Synapse (repeatable; default {', '.join(m.DEFAULT_KEYS)})",
    )
    p.add_argument(
        "--deployment",
        action="append",
        dest="deployments",
        metavar="NAME",
        help="Deployment to restart (repeatable; default: every one that reads the ConfigMap)",
    )
    p.add_argument(
        "--target",
        help=f"new Ollama URL (default by --phase: 1 → {m.PHASE_TARGETS[1]}, "
        f"3 → {m.PHASE_TARGETS[3]})",
    )
    p.add_argument(
        "--consumer-ollama",
        help="the consumer's own Ollama URL (default: the recorded or current ConfigMap value)",
    )
    p.add_argument(
        "--synapse-ollama",
        default=m.DEFAULT_SYNAPSE_OLLAMA,
        help="Synapse's Ollama, checked for pulled models",
    )
    p.add_argument("--ollama-deployment", default="ollama", help="the consumer's own Ollama")
    p.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    p.add_argument(
        "--force",
        action="store_true",
        help="apply even when a pre-check fails; roll back to an endpoint that does not answer",
    )
    p.add_argument("--timeout", type=float, default=600.0, help="rollout wait, seconds")
    p.add_argument("--model", default="mxbai-embed-large", help="embedding model for verify")
    p.add_argument("--prompt", default="synapse migration check", help="text embedded by verify")
    p.add_argument(
        "--min-cosine",
        type=float,
        default=0.99,
        help="verify: least cosine similarity between old and new vectors",
    )
    p.add_argument("--curl-image", default=None, help="image of the verify probe pod")
    p.add_argument(
        "--delete", action="store_true", help="decommission: delete Deployment and Service"
    )
    p.add_argument("--delete-pvc", metavar="NAME", help="decommission: also delete this PVC")
    add_common_args(p)
    p.set_defaults(func=lambda args: run_command(args, run))


@dataclass
class Snapshot:
    """The consumer as read from the cluster."""

    namespace: str
    configmap: str
    resource_version: str
    data: dict[str, str]
    annotations: dict[str, str]
    deployments: dict[str, int | None]  # name -> replicas, None when missing
    keys: list[str]
    target: str

    @property
    def changes(self) -> list[KeyChange]:
        from synapse.ops.migration import plan_changes

        return plan_changes(self.data, self.keys, self.target)

    @property
    def migrated(self) -> bool:
        from synapse.ops.migration import migrated

        return migrated(self.data, self.keys, self.target)


@dataclass
class Plan:
    snapshot: Snapshot
    checks: list[Check] = field(default_factory=list)
    models: list[ModelRow] = field(default_factory=list)
    consumer_ollama: str = ""

    @property
    def ok(self) -> bool:
        return not any(c.failed for c in self.checks)


def run(args: argparse.Namespace) -> int:
    from synapse.ops.endpoints import Endpoints
    from synapse.ops.kube import Kube
    from synapse.ops.migration import DEFAULT_KEYS, PHASE_TARGETS
    from synapse.ops.output import OpsError

    args.keys = args.keys or list(DEFAULT_KEYS)
    if args.target is None and args.phase is not None:
        args.target = PHASE_TARGETS[args.phase]
    if args.target is None and args.action in ("plan", "apply", "verify"):
        raise OpsError(
            "which step? --phase 1 (the shared Ollama, before vLLM takes the GPU) or --phase 3 "
            "(the gateway), or --target URL"
        )
    kube = Kube.connect(args.kubeconfig, args.context)
    with Endpoints(lambda: kube, default_namespace=args.namespace) as eps:
        handler = {
            "plan": do_plan,
            "apply": do_apply,
            "verify": do_verify,
            "rollback": do_rollback,
            "decommission": do_decommission,
        }[args.action]
        return handler(args, kube, eps)


# -- reading the consumer ------------------------------------------------------------------


def read_snapshot(args: argparse.Namespace, kube: Kube) -> Snapshot:
    from lightkube.resources.apps_v1 import Deployment
    from lightkube.resources.core_v1 import ConfigMap, Namespace

    from synapse.ops.migration import ANNOTATION, choose_configmap, parse_history, reads_configmap
    from synapse.ops.output import OpsError

    ns = args.namespace
    if kube.get(Namespace, ns) is None:
        raise OpsError(f"namespace {ns} not found")
    cms = {c.metadata.name: dict(c.data or {}) for c in kube.list(ConfigMap, ns)}
    name = choose_configmap(cms, args.keys, args.configmap)
    cm = kube.get(ConfigMap, name, ns)
    if cm is None:
        raise OpsError(f"ConfigMap {ns}/{name} not found")
    deployments: dict[str, int | None] = {}
    if args.deployments:
        for dep_name in args.deployments:
            dep = kube.deployment(ns, dep_name)
            deployments[dep_name] = None if dep is None else (dep.spec.replicas or 0)
    else:  # the ones that read the ConfigMap: a restart is what makes them see the new values
        for dep in kube.list(Deployment, ns):
            if dep.spec and reads_configmap(dep.spec.template.to_dict().get("spec") or {}, name):
                deployments[dep.metadata.name] = dep.spec.replicas or 0
    annotations = dict(cm.metadata.annotations or {})
    target = args.target
    if target is None:  # rollback, decommission: the step last applied
        history = parse_history(annotations.get(ANNOTATION))
        target = history[-1].target if history else ""
    return Snapshot(
        namespace=ns,
        configmap=name,
        resource_version=cm.metadata.resourceVersion or "",
        data=dict(cm.data or {}),
        annotations=annotations,
        deployments=deployments,
        keys=list(args.keys),
        target=target,
    )


def build_plan(args: argparse.Namespace, kube: Kube, eps: Endpoints) -> Plan:
    """Read everything and run the pre-checks (plan's step 1: same models on Synapse)."""
    from synapse.ops.migration import ANNOTATION, consumer_ollama_url, model_rows, parse_history
    from synapse.ops.models import missing, tag_names
    from synapse.ops.output import OpsError, failed, passed, verdict

    snap = read_snapshot(args, kube)
    plan = Plan(snap)
    checks = plan.checks
    checks.append(passed("configmap", f"{snap.namespace}/{snap.configmap}"))
    if ANNOTATION in snap.annotations:
        try:
            steps = parse_history(snap.annotations[ANNOTATION])
            checks.append(passed("rollback record", f"{len(steps)} steps", ANNOTATION))
        except OpsError as exc:
            checks.append(failed("rollback record", "unreadable", str(exc)))
    if not snap.deployments:
        checks.append(
            failed(
                "deployments", "none", f"no Deployment in {snap.namespace} reads {snap.configmap}"
            )
        )
    for name, replicas in snap.deployments.items():
        checks.append(
            verdict(
                f"deployment {name}",
                replicas is not None,
                "missing" if replicas is None else f"{replicas} replicas",
            )
        )
    plan.consumer_ollama = args.consumer_ollama or consumer_ollama_url(
        snap.data, snap.annotations, snap.keys, snap.target
    )
    consumer_models: list[str] = []
    try:
        consumer_models = tag_names(eps.for_url(plan.consumer_ollama).get_json("/api/tags"))
        checks.append(
            passed("consumer Ollama", f"{len(consumer_models)} models", plan.consumer_ollama)
        )
    except OpsError as exc:
        status = failed if not snap.migrated else passed
        note = "" if not snap.migrated else "already migrated; "
        checks.append(status("consumer Ollama", "unreachable", f"{note}{exc}"))
    gateway = eps.for_url(snap.target)
    try:
        served = tag_names(gateway.get_json("/api/tags"))
        checks.append(passed("target", f"{len(served)} models", snap.target))
    except OpsError as exc:
        checks.append(failed("target", "unreachable", str(exc)))
        return plan
    shown = {}
    for name in missing(consumer_models, served):
        resp = gateway.request("POST", "/api/show", json_body={"model": name})
        shown[name] = resp.status_code == 200
    pulled: list[str] | None = None
    try:
        pulled = tag_names(eps.for_url(args.synapse_ollama).get_json("/api/tags"))
    except OpsError as exc:
        checks.append(_check("Synapse Ollama", "warn", "unreachable", str(exc)))
    plan.models = model_rows(consumer_models, served, shown, pulled)
    for row in plan.models:
        hint = ""
        if row.status == "warn":
            hint = f"served, but not pulled in Synapse's Ollama: synapse pull-models {row.name}"
        elif row.status == "fail":
            hint = "Synapse does not serve this model: add it to the routing config"
        checks.append(
            _check(f"model {row.name}", row.status, "served" if row.served else "not served", hint)
        )
    return plan


def _check(name: str, status: str, value: str, detail: str = "") -> Check:
    from synapse.ops.output import Check

    return Check(name, status, value, detail)


# -- output -----------------------------------------------------------------------------------


def plan_doc(plan: Plan) -> dict[str, Any]:
    s = plan.snapshot
    return {
        "namespace": s.namespace,
        "configmap": s.configmap,
        "resourceVersion": s.resource_version,
        "target": s.target,
        "already_migrated": s.migrated,
        "consumer_ollama": plan.consumer_ollama,
        "changes": [asdict(c) | {"changed": c.changed} for c in s.changes],
        "deployments": [
            {"name": n, "replicas": r, "found": r is not None} for n, r in s.deployments.items()
        ],
        "models": [asdict(r) | {"status": r.status} for r in plan.models],
        "checks": [asdict(c) for c in plan.checks],
        "ok": plan.ok,
    }


def print_plan(plan: Plan) -> None:
    from rich.table import Table

    from synapse.ops.output import console, render_checks

    s = plan.snapshot
    out = console()
    t = Table(
        title=f"ConfigMap {s.namespace}/{s.configmap} (resourceVersion {s.resource_version})",
        title_justify="left",
    )
    for col in ("key", "current", "new", ""):
        t.add_column(col)
    for c in s.changes:
        mark = "[yellow]change[/]" if c.changed else "[green]already set[/]"
        t.add_row(c.key, c.old if c.old is not None else "[dim](absent)[/]", c.new, mark)
    out.print(t)
    restart = ", ".join(n for n, r in s.deployments.items() if r is not None) or "none"
    out.print(f"Deployments to restart in {s.namespace}: {restart}")
    if plan.models:
        mt = Table(
            title=f"Models on the consumer's Ollama ({plan.consumer_ollama})", title_justify="left"
        )
        for col in ("model", "served by Synapse", "pulled in Synapse's Ollama"):
            mt.add_column(col)
        for r in plan.models:
            pulled = "?" if r.pulled is None else ("yes" if r.pulled else "[yellow]no[/]")
            mt.add_row(r.name, "yes" if r.served else "[bold red]no[/]", pulled)
        out.print(mt)
    render_checks("pre-checks", plan.checks, as_json=False)
    if s.migrated:
        out.print("[green]already migrated:[/] apply has nothing to do")


def confirm(args: argparse.Namespace, question: str) -> None:
    from synapse.ops.output import OpsError

    if args.yes:
        return
    if args.json or not sys.stdin.isatty():
        raise OpsError("refusing to change the cluster without confirmation: pass --yes")
    from rich.prompt import Confirm

    if not Confirm.ask(question, default=False):
        raise OpsError("cancelled")


# -- actions ----------------------------------------------------------------------------------


def do_plan(args: argparse.Namespace, kube: Kube, eps: Endpoints) -> int:
    from synapse.ops.output import print_json

    plan = build_plan(args, kube, eps)
    if args.json:
        print_json({"action": "plan"} | plan_doc(plan))
    else:
        print_plan(plan)
    return 0 if plan.ok else 1


def do_apply(args: argparse.Namespace, kube: Kube, eps: Endpoints) -> int:
    from lightkube.resources.core_v1 import ConfigMap

    from synapse.ops.kube import now_rfc3339
    from synapse.ops.migration import apply_patch
    from synapse.ops.output import OpsError, passed, print_json

    plan = build_plan(args, kube, eps)
    if not args.json:
        print_plan(plan)
    if not plan.ok and not args.force:
        raise OpsError("pre-checks failed: nothing changed (--force to apply anyway)")
    snap = plan.snapshot
    if snap.migrated:
        if args.json:
            print_json({"action": "apply", "changed": False} | plan_doc(plan))
        return 0
    confirm(args, f"Patch {snap.namespace}/{snap.configmap} and restart its deployments?")
    at = now_rfc3339()

    def make_patch(cm: Any) -> dict[str, Any] | None:
        return apply_patch(
            dict(cm.data or {}),
            dict(cm.metadata.annotations or {}),
            snap.keys,
            snap.target,
            at=at,
            phase=args.phase,
        )

    before, after = kube.update_with_retry(ConfigMap, snap.configmap, snap.namespace, make_patch)
    checks = []
    if after is not None:
        checks.append(
            passed(
                "configmap patched",
                f"rv {before.metadata.resourceVersion} → {after.metadata.resourceVersion}",
                ", ".join(snap.keys) + f" = {snap.target}",
            )
        )
    checks += restart_and_wait(args, kube, snap)
    return finish(args, "apply", checks, plan)


def restart_and_wait(args: argparse.Namespace, kube: Kube, snap: Snapshot) -> list[Check]:
    """`kubectl rollout restart` on each existing Deployment, then wait for all of them."""
    from synapse.ops.kube import now_rfc3339
    from synapse.ops.output import passed

    names = [n for n, r in snap.deployments.items() if r is not None]
    at = now_rfc3339()
    checks = []
    for name in names:
        kube.restart(snap.namespace, name, at)
        checks.append(passed(f"restart {name}", f"restartedAt {at}"))
    states = wait_with_status(args, kube, snap.namespace, names)
    return checks + rollout_checks(states, args.timeout)


def rollout_checks(states: dict[str, RolloutState], timeout: float) -> list[Check]:
    from synapse.ops.output import verdict

    out = []
    for name, st in states.items():
        detail = st.message
        if not st.done and not st.failed:
            detail = f"not done after {timeout:g}s: {st.message}"
        value = f"{st.available}/{st.desired} available"
        out.append(verdict(f"rollout {name}", st.done, value, detail))
    return out


def wait_with_status(
    args: argparse.Namespace, kube: Kube, namespace: str, names: list[str]
) -> dict[str, RolloutState]:
    if args.json or not names:
        return kube.wait_rollouts(namespace, names, timeout=args.timeout)
    from synapse.ops.output import console

    with console().status("waiting for rollouts") as status:

        def show(states: dict[str, RolloutState]) -> None:
            pending = [f"{n}: {s.message}" for n, s in states.items() if not s.done]
            status.update("waiting for rollouts: " + "; ".join(pending))

        return kube.wait_rollouts(namespace, names, timeout=args.timeout, on_update=show)


def finish(
    args: argparse.Namespace,
    action: str,
    checks: list[Check],
    plan: Plan | None = None,
    **extra: Any,
) -> int:
    from synapse.ops.output import render_checks

    doc: dict[str, Any] = {"action": action} | extra
    if plan is not None:
        doc |= {"namespace": plan.snapshot.namespace, "configmap": plan.snapshot.configmap}
    return render_checks(f"migrate-consumer {action}", checks, as_json=args.json, extra=doc)


def do_verify(args: argparse.Namespace, kube: Kube, eps: Endpoints) -> int:
    """Plan's step 4: embeddings from inside the consumer's namespace, old vs new endpoint."""
    from synapse.ops.incluster import CURL_IMAGE, run_probe
    from synapse.ops.migration import consumer_ollama_url, cosine, embedding_of
    from synapse.ops.output import OpsError, failed, passed, verdict

    snap = read_snapshot(args, kube)
    new_url = snap.data.get(snap.keys[0]) if snap.migrated else snap.target
    new_url = (new_url or snap.target).rstrip("/")
    old_url = (
        args.consumer_ollama
        or consumer_ollama_url(snap.data, snap.annotations, snap.keys, snap.target)
    ).rstrip("/")
    body = {"model": args.model, "prompt": args.prompt}
    image = args.curl_image or CURL_IMAGE
    checks: list[Check] = [
        verdict(
            "configmap",
            snap.migrated,
            "points at Synapse" if snap.migrated else "not migrated yet",
            ", ".join(f"{c.key}={c.old}" for c in snap.changes),
        )
    ]
    vectors: dict[str, list[float]] = {}
    for label, url in (("new", new_url), ("old", old_url)):
        probe = run_probe(
            kube,
            snap.namespace,
            f"{url}/api/embeddings",
            method="POST",
            json_body=body,
            image=image,
        )
        where = f"{url} from {snap.namespace} (pod {probe.pod})"
        if not probe.ok:
            detail = f"{where}: {probe.body.strip()[:200]}"
            if label == "old":
                checks.append(_check(f"{label} endpoint", "warn", probe.describe(), detail))
                continue
            checks.append(failed(f"{label} endpoint", probe.describe(), detail))
            continue
        try:
            vectors[label] = embedding_of(probe.json())
        except OpsError as exc:
            checks.append(failed(f"{label} endpoint", "no vector", str(exc)))
            continue
        ms = f", {probe.seconds * 1000:.0f} ms" if probe.seconds is not None else ""
        checks.append(passed(f"{label} endpoint", f"dim {len(vectors[label])}{ms}", where))
    if "new" in vectors and "old" in vectors:
        new, old = vectors["new"], vectors["old"]
        checks.append(
            verdict("dimension", len(new) == len(old), f"{len(new)} vs {len(old)}", "new vs old")
        )
        if len(new) == len(old):
            cos = cosine(new, old)
            checks.append(
                verdict(
                    "same model",
                    cos >= args.min_cosine,
                    f"cosine {cos:.4f}",
                    f"at least {args.min_cosine} expected for one model on both endpoints",
                )
            )
    elif "new" in vectors:
        checks.append(
            _check("dimension", "warn", f"{len(vectors['new'])}", "old endpoint gave no vector")
        )
    return finish(args, "verify", checks, new_url=new_url, old_url=old_url, model=args.model)


def do_rollback(args: argparse.Namespace, kube: Kube, eps: Endpoints) -> int:
    from lightkube.resources.core_v1 import ConfigMap

    from synapse.ops.migration import last_record, rollback_patch
    from synapse.ops.models import tag_names
    from synapse.ops.output import OpsError, passed

    snap = read_snapshot(args, kube)
    values = last_record(snap.annotations).values
    back_to = next((v for k in snap.keys if (v := values.get(k))), None)
    if back_to:  # never cut the consumer off: a decommissioned Ollama answers nothing
        try:
            tag_names(eps.for_url(back_to).get_json("/api/tags"))
        except OpsError as exc:
            if not args.force:
                raise OpsError(
                    f"refusing to roll back to {back_to}: it does not answer ({exc}). Was it "
                    "decommissioned? Bring it back first, or --force"
                ) from exc
    if not args.json:
        from synapse.ops.output import console

        out = console()
        out.print(f"Rollback of {snap.namespace}/{snap.configmap}:")
        for key, old in values.items():
            out.print(f"  {key}: {snap.data.get(key)} → {old if old is not None else '(removed)'}")
    confirm(args, "Restore these values and restart the deployments?")

    def make_patch(cm: Any) -> dict[str, Any]:
        return rollback_patch(dict(cm.data or {}), dict(cm.metadata.annotations or {}))

    before, after = kube.update_with_retry(ConfigMap, snap.configmap, snap.namespace, make_patch)
    assert after is not None
    checks = [
        passed(
            "configmap restored",
            f"rv {before.metadata.resourceVersion} → {after.metadata.resourceVersion}",
            ", ".join(f"{k}={v}" for k, v in values.items()),
        )
    ]
    checks += restart_and_wait(args, kube, snap)
    return finish(args, "rollback", checks, restored=values)


def do_decommission(args: argparse.Namespace, kube: Kube, eps: Endpoints) -> int:
    """Plan's step 5: scale the consumer's own Ollama to 0; delete only when asked."""
    from lightkube.resources.apps_v1 import Deployment
    from lightkube.resources.core_v1 import PersistentVolumeClaim, Service

    from synapse.ops.migration import REPLICAS_ANNOTATION
    from synapse.ops.output import OpsError, passed

    snap = read_snapshot(args, kube)
    if (not snap.target or not snap.migrated) and not args.force:
        where = snap.target or "Synapse's Ollama or the gateway"
        raise OpsError(
            f"{snap.namespace}/{snap.configmap} does not point at {where} yet: "
            "apply and verify first (--force to decommission anyway)"
        )
    ns, name = snap.namespace, args.ollama_deployment
    dep = kube.deployment(ns, name)
    if dep is None:
        raise OpsError(f"deployment {ns}/{name} not found (already decommissioned?)")
    replicas = dep.spec.replicas if dep.spec and dep.spec.replicas is not None else 1
    doing = [f"scale {ns}/{name} from {replicas} to 0"]
    if args.delete:
        doing.append(f"delete Deployment and Service {ns}/{name}")
    if args.delete_pvc:
        doing.append(f"delete PVC {ns}/{args.delete_pvc} (its data is lost)")
    if not args.json:
        from synapse.ops.output import console

        console().print("Decommission: " + "; ".join(doing))
    confirm(args, "Go ahead?")
    checks: list[Check] = []
    if replicas:
        annotations = {REPLICAS_ANNOTATION: str(replicas)}
        kube.call(
            lambda: kube.client.patch(
                Deployment,
                name,
                {"metadata": {"annotations": annotations}, "spec": {"replicas": 0}},
                namespace=ns,
            ),
            f"scale {ns}/{name}",
        )
    states = wait_with_status(args, kube, ns, [name])
    checks.append(passed(f"scale {name}", f"{replicas} → 0", f"{REPLICAS_ANNOTATION}={replicas}"))
    checks += rollout_checks(states, args.timeout)
    if args.delete:
        for res in (Deployment, Service):
            kube.call(
                lambda res=res: kube.client.delete(res, name, namespace=ns),
                f"delete {res.__name__} {ns}/{name}",
            )
            checks.append(passed(f"delete {res.__name__}", f"{ns}/{name}"))
    if args.delete_pvc:
        pvc = args.delete_pvc
        kube.call(
            lambda: kube.client.delete(PersistentVolumeClaim, pvc, namespace=ns),
            f"delete PVC {ns}/{pvc}",
        )
        checks.append(passed("delete PersistentVolumeClaim", f"{ns}/{pvc}"))
    return finish(args, "decommission", checks)
