"""Kubernetes access for the ops commands, on lightkube (small, typed, httpx-based).

Honours `--kubeconfig`, `$KUBECONFIG` (several files merged as kubectl does), the in-cluster
service account and `--context`. Wraps the few operations the commands need: reads, patches
guarded by resourceVersion, `kubectl rollout restart` semantics, rollout waits and scaling.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx2
import yaml
from lightkube import ApiError, Client
from lightkube.config.client_adapter import Client as _adapter_client
from lightkube.config.client_adapter import ConnectionParams
from lightkube.config.kubeconfig import KubeConfig, SingleConfig
from lightkube.core.exceptions import ConfigError
from lightkube.resources.apps_v1 import Deployment
from lightkube.types import PatchType

from synapse.ops.output import OpsError, Unreachable

FIELD_MANAGER = "synapse-cli"
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
T = TypeVar("T")

# kubeconfig fields that hold file paths, resolved against the file that names them.
_PATH_FIELDS = {
    "clusters": ("cluster", ("certificate-authority",)),
    "users": ("user", ("client-certificate", "client-key", "tokenFile")),
}


def merge_kubeconfigs(docs: Sequence[tuple[Path, dict[str, Any]]]) -> dict[str, Any]:
    """Merge kubeconfig files the way kubectl does: the first file to define a name wins."""
    merged: dict[str, Any] = {"clusters": [], "contexts": [], "users": []}
    seen: dict[str, set[str]] = {k: set() for k in merged}
    current = None
    for path, doc in docs:
        current = current or doc.get("current-context") or None
        for section in merged:
            for entry in doc.get(section) or []:
                name = entry.get("name")
                if name is None or name in seen[section]:
                    continue
                seen[section].add(name)
                merged[section].append(_absolute_paths(section, entry, path.parent))
    merged["current-context"] = current
    return merged


def _absolute_paths(section: str, entry: dict[str, Any], base: Path) -> dict[str, Any]:
    if section not in _PATH_FIELDS:
        return entry
    inner_key, fields = _PATH_FIELDS[section]
    inner = dict(entry.get(inner_key) or {})
    for f in fields:
        value = inner.get(f)
        if value and not os.path.isabs(os.path.expanduser(value)):
            inner[f] = str(base / value)
    return {**entry, inner_key: inner}


def load_kubeconfig(kubeconfig: str | None = None, context: str | None = None) -> SingleConfig:
    """Find the cluster the way kubectl does and pick the context."""
    try:
        if kubeconfig:
            paths = [Path(kubeconfig).expanduser()]
        elif os.environ.get("KUBECONFIG"):
            paths = [Path(p).expanduser() for p in os.environ["KUBECONFIG"].split(os.pathsep) if p]
        elif os.environ.get("KUBERNETES_SERVICE_HOST") and context is None:
            return KubeConfig.from_service_account().get()
        else:
            paths = [Path("~/.kube/config").expanduser()]
        existing = [p for p in paths if p.is_file()]
        if not existing:
            raise OpsError(f"no kubeconfig found (looked at {', '.join(map(str, paths))})")
        docs = [(p, yaml.safe_load(p.read_text()) or {}) for p in existing]
        config = KubeConfig.from_dict(merge_kubeconfigs(docs), fname=existing[0])
        single = config.get(context)
    except ConfigError as exc:
        raise OpsError(f"kubeconfig: {exc}") from exc
    except (OSError, yaml.YAMLError) as exc:
        raise OpsError(f"kubeconfig: {exc}") from exc
    assert single is not None
    return single


@dataclass(frozen=True)
class RolloutState:
    """Where a Deployment's rollout stands, judged as `kubectl rollout status` judges it."""

    name: str
    done: bool
    message: str
    desired: int
    updated: int
    available: int
    failed: bool = False


def rollout_state(dep: Deployment) -> RolloutState:
    """kubectl's deployment status viewer, condition by condition."""
    name = dep.metadata.name if dep.metadata else "?"
    spec_replicas = dep.spec.replicas if dep.spec and dep.spec.replicas is not None else 1
    st = dep.status
    generation = (dep.metadata.generation if dep.metadata else None) or 0
    observed = (st.observedGeneration if st else None) or 0
    updated = (st.updatedReplicas if st else None) or 0
    replicas = (st.replicas if st else None) or 0
    available = (st.availableReplicas if st else None) or 0

    def state(done: bool, message: str, failed: bool = False) -> RolloutState:
        return RolloutState(name, done, message, spec_replicas, updated, available, failed)

    if generation > observed:
        return state(False, "waiting for the deployment spec update to be observed")
    for cond in (st.conditions if st else None) or []:
        if cond.type == "Progressing" and cond.reason == "ProgressDeadlineExceeded":
            return state(False, f"exceeded its progress deadline: {cond.message}", failed=True)
    if updated < spec_replicas:
        return state(False, f"{updated} of {spec_replicas} new replicas have been updated")
    if replicas > updated:
        return state(False, f"{replicas - updated} old replicas are pending termination")
    if available < updated:
        return state(False, f"{available} of {updated} updated replicas are available")
    return state(True, f"successfully rolled out ({available}/{spec_replicas} available)")


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def api_error_message(exc: ApiError) -> str:
    status = exc.status
    return f"{status.code} {status.reason or ''}: {status.message}".replace("  ", " ")


class Kube:
    """One cluster connection: lightkube for objects, its httpx client for proxied HTTP."""

    def __init__(self, config: SingleConfig, *, timeout: float = 15.0) -> None:
        self.config = config
        self.server = config.cluster.server
        self.client = Client(config, timeout=httpx2.Timeout(timeout), field_manager=FIELD_MANAGER)
        # Same credentials and TLS settings as the client, for service-proxy requests.
        self.http = _adapter_client(config, ConnectionParams(timeout=httpx2.Timeout(timeout)))

    @classmethod
    def connect(cls, kubeconfig: str | None = None, context: str | None = None) -> Kube:
        return cls(load_kubeconfig(kubeconfig, context))

    def close(self) -> None:
        self.client.close()
        self.http.close()

    def __enter__(self) -> Kube:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- error handling -------------------------------------------------------------------

    def call(self, fn: Callable[[], T], what: str) -> T:
        """Run one API call; ApiError and transport errors become OpsError with context."""
        try:
            return fn()
        except ApiError as exc:
            raise OpsError(f"{what}: {api_error_message(exc)}") from exc
        except httpx2.TransportError as exc:
            raise Unreachable(f"cannot reach the Kubernetes API at {self.server}: {exc}") from exc

    def get(self, res: type[T], name: str, namespace: str | None = None) -> T | None:
        """The object, or None when the API answers 404 NotFound."""
        try:
            return self.client.get(res, name, namespace=namespace)  # type: ignore[arg-type,return-value]
        except ApiError as exc:
            if exc.status.code == 404:
                return None
            raise OpsError(f"get {res.__name__} {name}: {api_error_message(exc)}") from exc
        except httpx2.TransportError as exc:
            raise Unreachable(f"cannot reach the Kubernetes API at {self.server}: {exc}") from exc

    def list(
        self, res: type[T], namespace: str | None = None, labels: dict[str, str] | None = None
    ) -> list[T]:
        return self.call(
            lambda: list(self.client.list(res, namespace=namespace, labels=labels)),  # type: ignore[arg-type]
            f"list {res.__name__} in {namespace or 'all namespaces'}",
        )

    # -- optimistic updates --------------------------------------------------------------

    def update_with_retry(
        self,
        res: type[T],
        name: str,
        namespace: str,
        make_patch: Callable[[T], dict[str, Any] | None],
        *,
        attempts: int = 5,
    ) -> tuple[T | None, T | None]:
        """Read, build a merge patch pinned to the read resourceVersion, apply; on 409 re-read.

        `make_patch` sees the freshest object each time and returns None when nothing is to be
        done. Returns (object as read, object after the patch or None when nothing was done).
        """
        for attempt in range(attempts):
            current = self.get(res, name, namespace)
            if current is None:
                raise OpsError(f"{res.__name__} {namespace}/{name} not found")
            patch = make_patch(current)
            if patch is None:
                return current, None
            meta = patch.setdefault("metadata", {})
            meta["resourceVersion"] = current.metadata.resourceVersion  # type: ignore[attr-defined]
            try:
                updated = self.client.patch(
                    res,  # type: ignore[arg-type]
                    name,
                    patch,
                    namespace=namespace,
                    patch_type=PatchType.MERGE,
                )
                return current, updated  # type: ignore[return-value]
            except ApiError as exc:
                if exc.status.code == 409 and attempt + 1 < attempts:
                    time.sleep(0.05 * (attempt + 1))
                    continue
                raise OpsError(
                    f"patch {res.__name__} {namespace}/{name}: {api_error_message(exc)}"
                ) from exc
            except httpx2.TransportError as exc:
                raise Unreachable(
                    f"cannot reach the Kubernetes API at {self.server}: {exc}"
                ) from exc
        raise OpsError(f"patch {res.__name__} {namespace}/{name}: conflict after {attempts} tries")

    # -- deployments ------------------------------------------------------------------------

    def deployment(self, namespace: str, name: str) -> Deployment | None:
        return self.get(Deployment, name, namespace)

    def restart(self, namespace: str, name: str, at: str | None = None) -> str:
        """`kubectl rollout restart`: stamp the pod template so the Deployment rolls."""
        at = at or now_rfc3339()
        body = {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: at}}}}}
        self.call(
            lambda: self.client.patch(
                Deployment, name, body, namespace=namespace, patch_type=PatchType.STRATEGIC
            ),
            f"restart deployment {namespace}/{name}",
        )
        return at

    def scale(self, namespace: str, name: str, replicas: int) -> None:
        body = {"spec": {"replicas": replicas}}
        self.call(
            lambda: self.client.patch(
                Deployment, name, body, namespace=namespace, patch_type=PatchType.MERGE
            ),
            f"scale deployment {namespace}/{name}",
        )

    def rollout(self, namespace: str, name: str) -> RolloutState:
        dep = self.deployment(namespace, name)
        if dep is None:
            return RolloutState(name, False, "deployment not found", 0, 0, 0, failed=True)
        return rollout_state(dep)

    def wait_rollouts(
        self,
        namespace: str,
        names: Sequence[str],
        *,
        timeout: float,
        max_interval: float = 2.0,
        on_update: Callable[[dict[str, RolloutState]], None] | None = None,
    ) -> dict[str, RolloutState]:
        """Poll until every rollout is done, one has failed, or the timeout passes.

        Polls quickly at first (small rollouts finish in seconds), then backs off.
        """
        deadline = time.monotonic() + timeout
        states: dict[str, RolloutState] = {}
        interval = 0.1
        while True:
            for name in names:
                if name not in states or not states[name].done:
                    states[name] = self.rollout(namespace, name)
            if on_update:
                on_update(dict(states))
            if all(s.done for s in states.values()) or any(s.failed for s in states.values()):
                return states
            if time.monotonic() >= deadline:
                return states
            time.sleep(interval)
            interval = min(max_interval, interval * 1.5)

    # -- HTTP to in-cluster services through the API server ------------------------------

    def service_proxy_path(
        self, namespace: str, service: str, port: int | str, *, scheme: str = "http"
    ) -> str:
        """`[scheme:]name:port`: the scheme is spelled out only when it is not plain http."""
        target = f"{service}:{port}" if scheme == "http" else f"{scheme}:{service}:{port}"
        return f"/api/v1/namespaces/{namespace}/services/{target}/proxy"

    def pod_proxy_path(self, namespace: str, pod: str, port: int | str) -> str:
        return f"/api/v1/namespaces/{namespace}/pods/{pod}:{port}/proxy"

    def list_pods(self, namespace: str, labels: dict[str, str] | None = None) -> list[Any]:
        from lightkube.resources.core_v1 import Pod

        return self.list(Pod, namespace, labels)


def pod_ready(pod: Any) -> bool:
    st = pod.status
    if st is None or st.phase != "Running":
        return False
    return any(c.type == "Ready" and c.status == "True" for c in st.conditions or [])
