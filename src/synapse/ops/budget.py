"""`synapse budget`: the resource budget of a rendered deployment phase, checked against forge.

Renders `manifests/phases/phaseN` with `kubectl kustomize` (or reads a kustomization directory or
an already rendered file), adds up every workload's requests and limits with its replicas counted,
prints the build plan's budget table and fails when the plan's rules are broken:
memory limits above 157Gi (80 % of the node's 196 GB), requests above the node, or more than one
workload asking for the single GPU.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

GI = 1024**3

NODE_CPU = Fraction(64)
NODE_MEMORY = 196 * GI
LIMIT_BUDGET = 157 * GI  # 80 % of 196: the rest is for K3s, the OS and page cache
NODE_GPUS = 1
GPU_RESOURCE = "nvidia.com/gpu"
PHASES = (1, 2, 3, 4, 5)

_MEMORY_SUFFIXES = {
    "Ki": 1024,
    "Mi": 1024**2,
    "Gi": 1024**3,
    "Ti": 1024**4,
    "Pi": 1024**5,
    "Ei": 1024**6,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
    "m": Fraction(1, 1000),
}


class BudgetError(Exception):
    """The manifests could not be rendered or read."""


def parse_quantity(value: Any) -> Fraction:
    """A Kubernetes quantity ("500m", "16Gi", "1e9", 4) as an exact number."""
    text = str(value).strip()
    if not text:
        raise ValueError("empty quantity")
    for suffix in sorted(_MEMORY_SUFFIXES, key=len, reverse=True):
        if text.endswith(suffix) and suffix != text:
            number = text[: -len(suffix)]
            return Fraction(number) * _MEMORY_SUFFIXES[suffix]
    return Fraction(text)  # plain number, decimal or exponent ("1e9", "0.5")


@dataclass(frozen=True)
class PodResources:
    """One pod's effective requests and limits; None = a container without that limit."""

    cpu_request: Fraction = Fraction(0)
    cpu_limit: Fraction | None = Fraction(0)
    memory_request: Fraction = Fraction(0)
    memory_limit: Fraction | None = Fraction(0)
    gpu: Fraction = Fraction(0)
    unbounded: tuple[str, ...] = ()  # containers that set no memory limit


def _add(a: Fraction | None, b: Fraction | None) -> Fraction | None:
    return None if a is None or b is None else a + b


def _max(a: Fraction | None, b: Fraction | None) -> Fraction | None:
    return None if a is None or b is None else max(a, b)


def _container(container: dict[str, Any]) -> PodResources:
    resources = container.get("resources") or {}
    limits = resources.get("limits") or {}
    requests = resources.get("requests") or {}

    def pick(name: str) -> tuple[Fraction, Fraction | None]:
        limit = parse_quantity(limits[name]) if name in limits else None
        # The API server defaults a missing request to the limit.
        request = parse_quantity(requests[name]) if name in requests else (limit or Fraction(0))
        return request, limit

    cpu_request, cpu_limit = pick("cpu")
    memory_request, memory_limit = pick("memory")
    gpu = parse_quantity(limits.get(GPU_RESOURCE, requests.get(GPU_RESOURCE, 0)))
    name = str(container.get("name", "?"))
    return PodResources(
        cpu_request,
        cpu_limit,
        memory_request,
        memory_limit,
        gpu,
        () if memory_limit is not None else (name,),
    )


def _sum(parts: Iterable[PodResources]) -> PodResources:
    total = PodResources()
    for part in parts:
        total = PodResources(
            total.cpu_request + part.cpu_request,
            _add(total.cpu_limit, part.cpu_limit),
            total.memory_request + part.memory_request,
            _add(total.memory_limit, part.memory_limit),
            total.gpu + part.gpu,
            total.unbounded + part.unbounded,
        )
    return total


def pod_resources(spec: dict[str, Any]) -> PodResources:
    """Effective pod resources: max(sum of app containers + sidecars, largest init container)."""
    inits = spec.get("initContainers") or []
    sidecars = [c for c in inits if c.get("restartPolicy") == "Always"]
    plain_inits = [c for c in inits if c.get("restartPolicy") != "Always"]
    running = _sum(_container(c) for c in [*(spec.get("containers") or []), *sidecars])
    peak = running
    for init in plain_inits:
        one = _container(init)
        peak = PodResources(
            max(peak.cpu_request, one.cpu_request),
            _max(peak.cpu_limit, one.cpu_limit),
            max(peak.memory_request, one.memory_request),
            _max(peak.memory_limit, one.memory_limit),
            max(peak.gpu, one.gpu),
            peak.unbounded + one.unbounded,
        )
    return peak


@dataclass(frozen=True)
class Workload:
    """A pod-creating object and how many pods of it run at once."""

    kind: str
    name: str
    namespace: str
    replicas: int
    pod: PodResources
    phase: int | None = None

    def total(self, attribute: str) -> Fraction | None:
        value = getattr(self.pod, attribute)
        return None if value is None else value * self.replicas


def _pod_spec_and_replicas(doc: dict[str, Any]) -> tuple[dict[str, Any], int] | None:
    kind = doc.get("kind")
    spec = doc.get("spec") or {}
    if kind in ("Deployment", "StatefulSet", "ReplicaSet", "ReplicationController"):
        replicas = spec.get("replicas", 1)
        return (spec.get("template") or {}).get("spec") or {}, int(replicas)
    if kind == "DaemonSet":  # forge is a single node: one pod
        return (spec.get("template") or {}).get("spec") or {}, 1
    if kind == "Job":
        return (spec.get("template") or {}).get("spec") or {}, int(spec.get("parallelism", 1))
    if kind == "CronJob":
        job = (spec.get("jobTemplate") or {}).get("spec") or {}
        return (job.get("template") or {}).get("spec") or {}, int(job.get("parallelism", 1))
    if kind == "Pod":
        return spec, 1
    return None


def workloads(docs: Iterable[dict[str, Any]]) -> list[Workload]:
    """Every workload in rendered manifests, in document order."""
    found = []
    for doc in docs:
        shape = _pod_spec_and_replicas(doc)
        if shape is None:
            continue
        spec, replicas = shape
        meta = doc.get("metadata") or {}
        found.append(
            Workload(
                kind=str(doc["kind"]),
                name=str(meta.get("name", "?")),
                namespace=str(meta.get("namespace", "default")),
                replicas=replicas,
                pod=pod_resources(spec),
            )
        )
    return found


@dataclass
class Report:
    """Totals of a set of workloads and the budget rules they break."""

    workloads: list[Workload]
    cpu_request: Fraction
    cpu_limit: Fraction | None
    memory_request: Fraction
    memory_limit: Fraction | None
    gpu: Fraction
    gpu_workloads: list[str]
    violations: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations


def evaluate(found: list[Workload]) -> Report:
    """Apply the plan's rules to a phase's workloads."""

    def total(attribute: str) -> Fraction | None:
        values = [w.total(attribute) for w in found]
        return None if any(v is None for v in values) else sum(values, Fraction(0))

    gpu_workloads = [f"{w.kind}/{w.name}" for w in found if w.pod.gpu > 0]
    report = Report(
        workloads=found,
        cpu_request=total("cpu_request") or Fraction(0),
        cpu_limit=total("cpu_limit"),
        memory_request=total("memory_request") or Fraction(0),
        memory_limit=total("memory_limit"),
        gpu=sum((w.pod.gpu * w.replicas for w in found), Fraction(0)),
        gpu_workloads=gpu_workloads,
    )
    for w in found:
        for container in w.pod.unbounded:
            report.violations.append(f"{w.kind}/{w.name} container {container} has no memory limit")
    if report.memory_limit is not None and report.memory_limit > LIMIT_BUDGET:
        report.violations.append(
            f"memory limits {format_memory(report.memory_limit)} exceed the "
            f"{format_memory(LIMIT_BUDGET)} budget"
        )
    if report.memory_request > NODE_MEMORY:
        report.violations.append(
            f"memory requests {format_memory(report.memory_request)} exceed the node's "
            f"{format_memory(NODE_MEMORY)}"
        )
    if report.cpu_request > NODE_CPU:
        report.violations.append(
            f"CPU requests {format_cpu(report.cpu_request)} exceed the node's "
            f"{format_cpu(NODE_CPU)} cores"
        )
    if len(gpu_workloads) > 1:
        report.violations.append(
            f"{len(gpu_workloads)} workloads ask for the GPU: {', '.join(gpu_workloads)}"
        )
    if report.gpu > NODE_GPUS:
        report.violations.append(
            f"{format_cpu(report.gpu)} GPUs requested, the node has {NODE_GPUS}"
        )
    return report


def format_memory(value: Fraction | None) -> str:
    """Binary units, exact when possible ("16Gi", "128Mi", "1.5Gi")."""
    if value is None:
        return "unbounded"
    value = Fraction(value)
    for unit, size in (("Gi", GI), ("Mi", 1024**2), ("Ki", 1024)):
        if value >= size:
            number = value / size
            if number.denominator == 1:
                return f"{number.numerator}{unit}"
            return f"{float(number):.2f}".rstrip("0").rstrip(".") + unit
    return f"{float(value):g}"


def format_cpu(value: Fraction | None) -> str:
    if value is None:
        return "unbounded"
    value = Fraction(value)
    if value.denominator == 1:
        return str(value.numerator)
    return f"{float(value):.3f}".rstrip("0").rstrip(".")


# --- rendering -------------------------------------------------------------------------------


def find_manifests(start: Path | None = None) -> Path:
    """The repo's manifests/ folder: searched upwards from the working directory."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "manifests" / "phases").is_dir():
            return folder / "manifests"
    source = Path(__file__).resolve().parents[3] / "manifests"  # editable install: the repo
    if (source / "phases").is_dir():
        return source
    raise BudgetError("no manifests/phases found above the working directory")


def render(kustomization: Path, kubectl: str = "kubectl") -> str:
    """`kubectl kustomize DIR`: the YAML that `kubectl apply -k DIR` would send."""
    try:
        done = subprocess.run(
            [kubectl, "kustomize", str(kustomization)],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
    except FileNotFoundError as exc:
        raise BudgetError(f"{kubectl} not found: it renders the kustomizations") from exc
    if done.returncode != 0:
        raise BudgetError(f"kubectl kustomize {kustomization} failed:\n{done.stderr.strip()}")
    return done.stdout


def load_docs(text: str) -> list[dict[str, Any]]:
    import yaml

    try:
        return [doc for doc in yaml.safe_load_all(text) if isinstance(doc, dict)]
    except yaml.YAMLError as exc:
        raise BudgetError(f"not valid YAML: {exc}") from exc


def phase_workloads(manifests: Path, phase: int, kubectl: str) -> list[Workload]:
    """Workloads of phase N, each tagged with the first phase that deploys it."""
    first_seen: dict[tuple[str, str, str], int] = {}
    found: list[Workload] = []
    for number in range(1, phase + 1):
        found = workloads(load_docs(render(manifests / "phases" / f"phase{number}", kubectl)))
        for w in found:
            first_seen.setdefault((w.kind, w.namespace, w.name), number)
    tagged = [
        Workload(
            w.kind,
            w.name,
            w.namespace,
            w.replicas,
            w.pod,
            first_seen[(w.kind, w.namespace, w.name)],
        )
        for w in found
    ]
    return sorted(tagged, key=lambda w: (w.phase or 0, w.name))


# --- output ----------------------------------------------------------------------------------


def _cores(value: Fraction | None) -> float | None:
    return None if value is None else float(value)


def _bytes(value: Fraction | None) -> int | None:
    return None if value is None else int(value)


def as_json(report: Report, source: str) -> dict[str, Any]:
    return {
        "source": source,
        "ok": report.ok,
        "violations": report.violations,
        "workloads": [
            {
                "kind": w.kind,
                "name": w.name,
                "namespace": w.namespace,
                "phase": w.phase,
                "replicas": w.replicas,
                "cpu_request": _cores(w.total("cpu_request")),
                "cpu_limit": _cores(w.total("cpu_limit")),
                "memory_request_bytes": _bytes(w.total("memory_request")),
                "memory_limit_bytes": _bytes(w.total("memory_limit")),
                "gpu": _cores(w.total("gpu")),
            }
            for w in report.workloads
        ],
        "totals": {
            "cpu_request": _cores(report.cpu_request),
            "cpu_limit": _cores(report.cpu_limit),
            "memory_request_bytes": _bytes(report.memory_request),
            "memory_limit_bytes": _bytes(report.memory_limit),
            "gpu": _cores(report.gpu),
        },
        "budget": {
            "memory_limit_bytes": LIMIT_BUDGET,
            "node_memory_bytes": NODE_MEMORY,
            "node_cpu": float(NODE_CPU),
            "node_gpus": NODE_GPUS,
        },
    }


def print_report(report: Report, source: str) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title=f"Resource budget — {source}", show_footer=True, box=box.SIMPLE_HEAD)
    show_phase = any(w.phase is not None for w in report.workloads)
    table.add_column("Service", footer="Total", no_wrap=True)
    table.add_column("Pods", justify="right")
    table.add_column("CPU req", justify="right", footer=format_cpu(report.cpu_request))
    table.add_column("CPU lim", justify="right", footer=format_cpu(report.cpu_limit))
    table.add_column("Mem req", justify="right", footer=format_memory(report.memory_request))
    table.add_column("Mem lim", justify="right", footer=format_memory(report.memory_limit))
    table.add_column("GPU", justify="right", footer=format_cpu(report.gpu))
    if show_phase:
        table.add_column("Phase", justify="right")
    for w in report.workloads:
        row = [
            w.name,
            str(w.replicas),
            format_cpu(w.total("cpu_request")),
            format_cpu(w.total("cpu_limit")),
            format_memory(w.total("memory_request")),
            format_memory(w.total("memory_limit")),
            format_cpu(w.total("gpu")) if w.pod.gpu else "—",
        ]
        if show_phase:
            row.append(str(w.phase or "—"))
        table.add_row(*row)
    console.print(table)

    checks = Table(title="Budget rules", box=box.SIMPLE_HEAD)
    checks.add_column("Rule")
    checks.add_column("Value", justify="right")
    checks.add_column("Budget", justify="right")
    checks.add_column("Result")

    def verdict(ok: bool) -> str:
        return "[green]pass[/green]" if ok else "[red]FAIL[/red]"

    limit_ok = report.memory_limit is not None and report.memory_limit <= LIMIT_BUDGET
    checks.add_row(
        "memory limits ≤ 80 % of RAM",
        format_memory(report.memory_limit),
        format_memory(LIMIT_BUDGET),
        verdict(limit_ok),
    )
    checks.add_row(
        "memory requests ≤ node",
        format_memory(report.memory_request),
        format_memory(NODE_MEMORY),
        verdict(report.memory_request <= NODE_MEMORY),
    )
    checks.add_row(
        "CPU requests ≤ node",
        format_cpu(report.cpu_request),
        format_cpu(NODE_CPU),
        verdict(report.cpu_request <= NODE_CPU),
    )
    gpu_ok = len(report.gpu_workloads) <= 1 and report.gpu <= NODE_GPUS
    checks.add_row(
        "GPU: at most one workload",
        ", ".join(report.gpu_workloads) or "none",
        f"{NODE_GPUS} GPU",
        verdict(gpu_ok),
    )
    console.print(checks)
    for violation in report.violations:
        console.print(f"[red]✗[/red] {violation}")
    if report.ok:
        headroom = LIMIT_BUDGET - (report.memory_limit or 0)
        console.print(f"[green]✓[/green] within budget ({format_memory(headroom)} headroom)")


# --- command ---------------------------------------------------------------------------------


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "budget",
        help="check a deployment phase's requests and limits against the node",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--phase", type=int, choices=PHASES, default=5, help="manifests/phases/phaseN (default 5)"
    )
    source.add_argument("--path", type=Path, help="a kustomization directory to render instead")
    source.add_argument("--file", help="already rendered YAML instead ('-' for stdin)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument(
        "--kubectl",
        default=os.environ.get("KUBECTL", "kubectl"),
        help="kubectl binary used to render (default $KUBECTL or kubectl)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        if args.file:
            text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text()
            found, source = workloads(load_docs(text)), args.file
        elif args.path:
            found, source = workloads(load_docs(render(args.path, args.kubectl))), str(args.path)
        else:
            manifests = find_manifests()
            found = phase_workloads(manifests, args.phase, args.kubectl)
            source = f"phase {args.phase}"
    except (BudgetError, OSError, ValueError) as exc:
        print(f"synapse budget: {exc}", file=sys.stderr)
        return 2
    report = evaluate(found)
    if args.json:
        import json

        print(json.dumps(as_json(report, source), indent=2))
    else:
        print_report(report, source)
    return 0 if report.ok else 1
