"""Checks of the node before a phase needs it: a free GPU and the nvidia RuntimeClass before
vLLM (risk R2: the consumer's own Ollama must have given the GPU back), and room on the disk for
every PersistentVolumeClaim the manifests will create (local-path writes to the node's disk,
and nothing stops a claim from promising more than the disk has)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from synapse.ops.kube import Kube
    from synapse.ops.output import Check

GPU = "nvidia.com/gpu"
RUNTIME_CLASS = "nvidia"
VLLM_APP = "vllm-inference"
# The kubelet evicts pods once the node's filesystem has less than 10 % free (its default
# hard eviction threshold nodefs.available<10%): claims must fit below that.
EVICTION_FREE = 0.10
GI = 1024**3


def runtime_class(kube: Kube) -> Check:
    from lightkube.resources.node_v1 import RuntimeClass

    from synapse.ops.output import verdict

    found = kube.get(RuntimeClass, RUNTIME_CLASS)
    handler = getattr(found, "handler", None) if found is not None else None
    return verdict(
        f"RuntimeClass {RUNTIME_CLASS}",
        found is not None,
        f"handler {handler}" if found is not None else "missing",
        "K3s creates it when it detects the NVIDIA container runtime"
        if found is None
        else "vLLM's pods run with runtimeClassName: nvidia",
    )


def _gpus(resources: Any) -> int:
    if resources is None:
        return 0
    wanted = (resources.requests or {}).get(GPU) or (resources.limits or {}).get(GPU) or 0
    return int(str(wanted))


def gpu_free(kube: Kube, need: int = 1) -> Check:
    """Allocatable nvidia.com/gpu on the nodes minus what running pods other than vLLM's hold
    (a running vLLM holds its own GPU: that is not contention)."""
    from lightkube import ALL_NS
    from lightkube.resources.core_v1 import Node, Pod

    from synapse.ops.output import verdict

    allocatable = {
        n.metadata.name: int(str(((n.status.allocatable if n.status else None) or {}).get(GPU, 0)))
        for n in kube.list(Node)
    }
    holders: list[str] = []
    used: dict[str, int] = {}
    for pod in kube.list(Pod, ALL_NS):
        if pod.status and pod.status.phase in ("Succeeded", "Failed"):
            continue
        spec = pod.spec
        if spec is None:
            continue
        gpus = sum(
            _gpus(c.resources) for c in [*(spec.containers or []), *(spec.initContainers or [])]
        )
        labels = pod.metadata.labels or {}
        if not gpus or labels.get("app") == VLLM_APP:
            continue
        node = spec.nodeName or "?"
        used[node] = used.get(node, 0) + gpus
        holders.append(f"{pod.metadata.namespace}/{pod.metadata.name} ({gpus})")
    free = {n: a - used.get(n, 0) for n, a in allocatable.items()}
    best = max(free.values(), default=0)
    total = sum(allocatable.values())
    detail = f"allocatable {total}, held by: {', '.join(holders) or 'nothing else'}"
    if total == 0:
        detail = "no node advertises nvidia.com/gpu: is the NVIDIA device plugin running?"
    elif best < need:
        detail += " — decommission the consumer's own Ollama first (risk R2)"
    return verdict(f"{GPU} free for vLLM", best >= need, f"{best} free", detail)


def pvc_sizes(kube: Kube, namespace: str, planned: list[dict[str, Any]] | None) -> dict[str, int]:
    """Requested bytes per claim: the planned ones (rendered manifests) and those in the cluster."""
    from lightkube.resources.core_v1 import PersistentVolumeClaim
    from lightkube.utils.quantity import parse_quantity

    sizes: dict[str, int] = {}
    for doc in planned or []:
        if doc.get("kind") == "PersistentVolumeClaim":
            storage = doc["spec"]["resources"]["requests"]["storage"]
            sizes[doc["metadata"]["name"]] = int(parse_quantity(storage) or 0)
    for pvc in kube.list(PersistentVolumeClaim, namespace):
        requests = (pvc.spec.resources.requests if pvc.spec and pvc.spec.resources else None) or {}
        sizes.setdefault(pvc.metadata.name, int(parse_quantity(requests.get("storage", "0")) or 0))
    return sizes


def planned_manifests() -> tuple[list[dict[str, Any]] | None, str]:
    """Every object of the end state (manifests/phases/final), when the repo is at hand."""
    from synapse.ops.budget import BudgetError, find_manifests, load_docs, render

    try:
        folder = find_manifests() / "phases" / "final"
        return load_docs(render(folder)), str(folder)
    except BudgetError as exc:
        return None, str(exc)


def disk_fits(kube: Kube, namespace: str) -> Check:
    from lightkube.resources.core_v1 import Node
    from lightkube.utils.quantity import parse_quantity

    from synapse.ops.output import Check, verdict

    planned, source = planned_manifests()
    sizes = pvc_sizes(kube, namespace, planned)
    disks = [
        int(parse_quantity(cap) or 0)
        for n in kube.list(Node)
        if (cap := ((n.status.capacity if n.status else None) or {}).get("ephemeral-storage"))
    ]
    if not disks:
        return Check(
            "PVCs fit the disk", "skip", "no capacity", "no node reports ephemeral-storage"
        )
    want, disk = sum(sizes.values()), min(disks)
    room = disk * (1 - EVICTION_FREE)
    claims = ", ".join(f"{n} {s / GI:.0f}Gi" for n, s in sorted(sizes.items()))
    where = f"planned from {source}" if planned is not None else f"cluster only ({source})"
    return verdict(
        "PVCs fit the disk",
        want <= room,
        f"{want / GI:.0f}Gi of {disk / GI:.0f}Gi",
        f"{claims}; {where}; the kubelet evicts pods below 10 % free (room {room / GI:.0f}Gi)",
    )
