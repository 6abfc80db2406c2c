"""A small Kubernetes API server for the ops tests, faithful to the API's JSON where ops uses it.

- Objects with metadata.resourceVersion / uid / generation; list kinds (`ConfigMapList`, ...)
  with list metadata; label selectors (equality).
- Errors as `Status` objects: 404 NotFound, 409 AlreadyExists, 409 Conflict when a patch or
  replace carries a stale metadata.resourceVersion, 415 for unknown patch types.
- Merge patch (RFC 7386) and strategic merge patch (maps merged; lists by `name`).
- Deployments whose rollout status advances one step per GET, like a controller would, and
  pods synthesised from each Deployment's status.
- Pods created by clients (probe pods) run their `curl` command against the registered
  service map, then report Succeeded/Failed, with the output at `.../pods/NAME/log`.
- Service proxy `/api/v1/namespaces/NS/services/NAME:PORT/proxy/...` and pod proxy forward to
  local HTTP servers; the API server strips `Authorization` from proxied requests, so this does.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import json
import shlex
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

KINDS = {
    "configmaps": "ConfigMap",
    "deployments": "Deployment",
    "pods": "Pod",
    "persistentvolumeclaims": "PersistentVolumeClaim",
    "services": "Service",
    "secrets": "Secret",
    "namespaces": "Namespace",
    "nodes": "Node",
    "networkpolicies": "NetworkPolicy",
    "cronjobs": "CronJob",
    "ingresses": "Ingress",
    "prometheusrules": "PrometheusRule",
    "runtimeclasses": "RuntimeClass",
}
API_VERSION = {
    "deployments": "apps/v1",
    "networkpolicies": "networking.k8s.io/v1",
    "ingresses": "networking.k8s.io/v1",
    "cronjobs": "batch/v1",
    "prometheusrules": "monitoring.coreos.com/v1",
    "runtimeclasses": "node.k8s.io/v1",
}
CLUSTER_SCOPED = {"namespaces", "nodes", "runtimeclasses"}
HOP_HEADERS = {"authorization", "host", "content-length", "transfer-encoding", "connection"}


def kjson(doc: Any, status: int = 200) -> web.Response:
    """JSON as the API server sends it: Content-Type exactly `application/json`."""
    return web.Response(
        body=json.dumps(doc).encode(), status=status, headers={"Content-Type": "application/json"}
    )


def status(code: int, reason: str, message: str, kind: str = "", name: str = "") -> web.Response:
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if kind or name:
        body["details"] = {"name": name, "kind": kind}
    return kjson(body, status=code)


def not_found(plural: str, name: str) -> web.Response:
    return status(404, "NotFound", f'{plural} "{name}" not found', plural, name)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def strategic_merge(target: Any, patch: Any) -> Any:
    """Strategic merge for what ops sends: maps merge, lists of named items merge by name."""
    if isinstance(patch, dict) and isinstance(target, dict):
        result = dict(target)
        for key, value in patch.items():
            if value is None:
                result.pop(key, None)
            else:
                result[key] = strategic_merge(result.get(key), value)
        return result
    named = isinstance(patch, list) and isinstance(target, list)
    if named and all(isinstance(x, dict) and "name" in x for x in patch + target):
        merged = {x["name"]: x for x in target}
        for item in patch:
            merged[item["name"]] = strategic_merge(merged.get(item["name"]), item)
        return list(merged.values())
    return copy.deepcopy(patch)


def selector_matches(selector: str | None, labels: dict[str, str]) -> bool:
    if not selector:
        return True
    for term in selector.split(","):
        if "!=" in term:
            k, v = term.split("!=", 1)
            if labels.get(k) == v:
                return False
        elif "=" in term:
            k, v = term.split("=", 1)
            if labels.get(k.rstrip("=")) != v.lstrip("="):
                return False
        elif labels.get(term) is None:
            return False
    return True


class FakeCluster:
    """State plus the aiohttp app; tests mutate state directly through the helpers."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[tuple[str, str], dict[str, Any]]] = {}
        self.rv = itertools.count(1000)
        self.services: dict[tuple[str, str, int], str] = {}  # (ns, name, port) -> base URL
        # (ns, deployment, port) -> base URL per replica index, for the pod proxy.
        self.pod_targets: dict[tuple[str, str, int], list[str]] = {}
        self.blocked: set[tuple[str, str]] = set()  # (from namespace, "host:port")
        self.stuck: set[tuple[str, str]] = set()  # deployments that never finish rolling out
        # (plural, ns, name) -> n: another writer updates the object right after our n-th GET.
        self.conflict_after_get: dict[tuple[str, str, str], int] = {}
        self.requests: list[tuple[str, str, str]] = []  # (method, path, content-type)
        self.proxied_headers: list[dict[str, str]] = []
        self.metrics: dict[tuple[str, str], dict[str, str]] = {}  # (ns, pod) -> memory usage
        self.on_scale: list[Callable[[str, str, int], None]] = []
        self.probe_delay_gets = 1
        self.lock = threading.RLock()
        self._rr = itertools.count()

    # -- state helpers --------------------------------------------------------------------

    def _bucket(self, plural: str) -> dict[tuple[str, str], dict[str, Any]]:
        return self.objects.setdefault(plural, {})

    def put(self, plural: str, obj: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            obj = copy.deepcopy(obj)
            meta = obj.setdefault("metadata", {})
            ns = "" if plural in CLUSTER_SCOPED else meta.setdefault("namespace", "default")
            meta.setdefault("uid", str(uuid.uuid4()))
            meta.setdefault("creationTimestamp", "2026-01-01T00:00:00Z")
            meta["resourceVersion"] = str(next(self.rv))
            meta.setdefault("generation", 1)
            obj.setdefault("apiVersion", API_VERSION.get(plural, "v1"))
            obj.setdefault("kind", KINDS[plural])
            if plural == "deployments":
                self._settle(obj)
            self._bucket(plural)[(ns, meta["name"])] = obj
            return obj

    def obj(self, plural: str, ns: str, name: str) -> dict[str, Any] | None:
        return self._bucket(plural).get(("" if plural in CLUSTER_SCOPED else ns, name))

    def add_namespace(self, name: str) -> None:
        self.put("namespaces", {"metadata": {"name": name}, "status": {"phase": "Active"}})

    def add_deployment(
        self,
        ns: str,
        name: str,
        replicas: int = 1,
        *,
        labels: dict[str, str] | None = None,
        resources: dict[str, Any] | None = None,
        container_extra: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        labels = labels or {"app": name}
        container = {"name": name, "image": f"{name}:1", **(container_extra or {})}
        if resources:
            container["resources"] = resources
        return self.put(
            "deployments",
            {
                "metadata": {"name": name, "namespace": ns, "labels": labels},
                "spec": {
                    "replicas": replicas,
                    "selector": {"matchLabels": labels},
                    "template": {
                        "metadata": {"labels": labels},
                        "spec": {"containers": [container]},
                    },
                },
            },
        )

    def add_service(self, ns: str, name: str, port: int, target: str | None) -> None:
        self.put(
            "services",
            {
                "metadata": {"name": name, "namespace": ns},
                "spec": {"ports": [{"port": port}], "selector": {"app": name}},
            },
        )
        if target:
            self.services[(ns, name, port)] = target

    # -- deployment controller ------------------------------------------------------------

    @staticmethod
    def _settle(dep: dict[str, Any]) -> None:
        n = dep["spec"].get("replicas", 1)
        dep["status"] = {
            "observedGeneration": dep["metadata"]["generation"],
            "replicas": n,
            "updatedReplicas": n,
            "readyReplicas": n,
            "availableReplicas": n,
            "conditions": [{"type": "Available", "status": "True" if n else "False"}],
        }

    def _advance(self, ns: str, dep: dict[str, Any]) -> None:
        """One controller step per GET: observe, then bring one new replica up at a time."""
        meta, spec, st = dep["metadata"], dep["spec"], dep.setdefault("status", {})
        want = spec.get("replicas", 1)
        if (ns, meta["name"]) in self.stuck:
            if st.get("observedGeneration", 0) < meta["generation"]:
                st["observedGeneration"] = meta["generation"]
                st["updatedReplicas"] = 0
            st["conditions"] = [
                {
                    "type": "Progressing",
                    "status": "False",
                    "reason": "ProgressDeadlineExceeded",
                    "message": f'ReplicaSet "{meta["name"]}-new" has timed out progressing.',
                }
            ]
            return
        if st.get("observedGeneration", 0) < meta["generation"]:
            st["observedGeneration"] = meta["generation"]
            if dep.get("_template_changed"):
                st["updatedReplicas"] = 0
                st["replicas"] = want + (1 if want else 0)
                st["availableReplicas"] = st["readyReplicas"] = want
            else:
                st["replicas"] = st["updatedReplicas"] = want
                st["readyReplicas"] = st["availableReplicas"] = min(
                    want, st.get("availableReplicas", 0)
                )
            dep.pop("_template_changed", None)
            return
        if st.get("updatedReplicas", 0) < want:
            st["updatedReplicas"] = st.get("updatedReplicas", 0) + 1
            st["availableReplicas"] = st["readyReplicas"] = max(0, st["updatedReplicas"] - 1)
            return
        if st.get("replicas", 0) > want or st.get("availableReplicas", 0) < want:
            st["replicas"] = want
            st["availableReplicas"] = st["readyReplicas"] = want

    def pods_of(self, ns: str) -> list[dict[str, Any]]:
        """Pods the Deployments in `ns` would have, ready as their status says, plus probe pods."""
        pods = []
        for (dns, name), dep in self._bucket("deployments").items():
            if ns and dns != ns:  # "" lists every namespace
                continue
            st = dep.get("status", {})
            labels = dep["spec"]["selector"]["matchLabels"]
            containers = dep["spec"]["template"]["spec"]["containers"]
            gen = dep["metadata"]["generation"]
            for i in range(st.get("replicas", 0)):
                ready = i < st.get("readyReplicas", 0)
                rs = gen if i < st.get("updatedReplicas", 0) else gen - 1  # new or old ReplicaSet
                pods.append(
                    {
                        "metadata": {
                            "name": f"{name}-{rs:x}f7c-{i}",
                            "namespace": dns,
                            "labels": dict(labels),
                            "resourceVersion": dep["metadata"]["resourceVersion"],
                        },
                        "spec": {"containers": copy.deepcopy(containers), "nodeName": "forge"},
                        "status": {
                            "phase": "Running" if ready else "Pending",
                            "conditions": [{"type": "Ready", "status": str(ready)}],
                            "containerStatuses": [
                                {
                                    "name": containers[0]["name"],
                                    "ready": ready,
                                    "restartCount": 0,
                                    "image": containers[0]["image"],
                                    "imageID": "",
                                }
                            ],
                        },
                    }
                )
        pods += [p for (pns, _), p in self._bucket("pods").items() if not ns or pns == ns]
        return pods

    # -- the HTTP side ----------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        self.requests.append((request.method, path, request.headers.get("Content-Type", "")))
        parts = [p for p in path.split("/") if p]
        if "proxy" in parts:
            return await self.proxy(request, parts)
        if parts[:2] == ["api", "v1"]:
            rest = parts[2:]
        elif parts[:1] == ["apis"] and len(parts) >= 3:
            rest = parts[3:]
        else:
            return status(404, "NotFound", "the server could not find the requested resource")
        ns = ""
        if rest[:1] == ["namespaces"] and len(rest) >= 3:
            ns, rest = rest[1], rest[2:]
        plural = rest[0] if rest else ""
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        if plural == "namespaces" and name is None and ns:
            plural, name = "namespaces", ns
        if parts[:2] == ["apis", "metrics.k8s.io"]:
            return self.pod_metrics(ns)
        if plural not in KINDS:
            return status(
                404, "NotFound", "the server could not find the requested resource", plural
            )
        if request.method == "GET" and plural == "pods" and name and sub is None:
            pod = self.obj("pods", ns, name)
            if pod is not None:
                await self._run_probe(pod)
        with self.lock:
            if sub == "log":
                return self.pod_log(ns, name or "")
            if request.method == "GET" and name is None:
                return self.list_objects(plural, ns, request.query.get("labelSelector"))
            if request.method == "GET":
                return self.get_object(plural, ns, name or "")
            body = await request.read()
            if request.method == "POST":
                return self.create(plural, ns, json.loads(body))
            if request.method == "PATCH":
                return self.patch(
                    plural, ns, name or "", request.headers.get("Content-Type", ""), body
                )
            if request.method == "PUT":
                return self.replace(plural, ns, name or "", json.loads(body))
            if request.method == "DELETE":
                return self.delete(plural, ns, name or "")
        return status(405, "MethodNotAllowed", "method not allowed")

    def list_objects(self, plural: str, ns: str, selector: str | None) -> web.Response:
        if plural == "pods":
            items = self.pods_of(ns)
            for dep_ns, dep in list(self._bucket("deployments").items()):
                if not ns or dep_ns[0] == ns:
                    self._advance(dep_ns[0], dep)
        else:
            items = [o for (ons, _), o in self._bucket(plural).items() if not ns or ons == ns]
        items = [
            {k: v for k, v in o.items() if not k.startswith("_")}
            for o in items
            if selector_matches(selector, o["metadata"].get("labels") or {})
        ]
        return kjson(
            {
                "kind": f"{KINDS[plural]}List",
                "apiVersion": API_VERSION.get(plural, "v1"),
                "metadata": {"resourceVersion": str(next(self.rv))},
                "items": items,
            }
        )

    def _public(self, obj: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in obj.items() if not k.startswith("_")}

    def get_object(self, plural: str, ns: str, name: str) -> web.Response:
        if plural == "pods" and (ns, name) not in self._bucket("pods"):
            for pod in self.pods_of(ns):
                if pod["metadata"]["name"] == name:
                    return kjson(pod)
        obj = self.obj(plural, ns, name)
        if obj is None:
            return not_found(plural, name)
        if plural == "deployments":
            self._advance(ns, obj)
        response = kjson(self._public(obj))
        key = (plural, ns, name)
        if key in self.conflict_after_get:
            self.conflict_after_get[key] -= 1
            if self.conflict_after_get[key] == 0:  # someone else writes right after this read
                del self.conflict_after_get[key]
                obj["metadata"]["resourceVersion"] = str(next(self.rv))
        return response

    def create(self, plural: str, ns: str, obj: dict[str, Any]) -> web.Response:
        meta = obj.setdefault("metadata", {})
        if "generateName" in meta and "name" not in meta:
            meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
        meta["namespace"] = ns
        if self.obj(plural, ns, meta["name"]) is not None:
            return status(
                409,
                "AlreadyExists",
                f'{plural} "{meta["name"]}" already exists',
                plural,
                meta["name"],
            )
        if plural == "pods":
            obj["status"] = {"phase": "Pending"}
            obj["_gets"] = 0
        return kjson(self._public(self.put(plural, obj)), status=201)

    def _check_rv(self, plural: str, obj: dict[str, Any], body: dict[str, Any]) -> bool:
        want = (body.get("metadata") or {}).get("resourceVersion")
        return want is None or want == obj["metadata"]["resourceVersion"]

    def _conflict(self, plural: str, name: str) -> web.Response:
        return status(
            409,
            "Conflict",
            f'Operation cannot be fulfilled on {plural} "{name}": the object has been '
            "modified; please apply your changes to the latest version and try again",
            plural,
            name,
        )

    def patch(self, plural: str, ns: str, name: str, ctype: str, raw: bytes) -> web.Response:
        obj = self.obj(plural, ns, name)
        if obj is None:
            return not_found(plural, name)
        body = json.loads(raw)
        if ctype.startswith("application/merge-patch+json"):
            fn = merge_patch
        elif ctype.startswith("application/strategic-merge-patch+json"):
            fn = strategic_merge
        else:
            return status(
                415,
                "UnsupportedMediaType",
                f"the body of the request was in an unknown format: {ctype}",
            )
        if not self._check_rv(plural, obj, body):
            return self._conflict(plural, name)
        (body.get("metadata") or {}).pop("resourceVersion", None)
        new = fn({k: v for k, v in obj.items() if not k.startswith("_")}, body)
        new["metadata"]["resourceVersion"] = obj["metadata"]["resourceVersion"]
        return self._store_update(plural, ns, name, obj, new)

    def replace(self, plural: str, ns: str, name: str, body: dict[str, Any]) -> web.Response:
        obj = self.obj(plural, ns, name)
        if obj is None:
            return not_found(plural, name)
        if not self._check_rv(plural, obj, body):
            return self._conflict(plural, name)
        return self._store_update(plural, ns, name, obj, body)

    def _store_update(
        self, plural: str, ns: str, name: str, old: dict[str, Any], new: dict[str, Any]
    ) -> web.Response:
        new["metadata"]["resourceVersion"] = str(next(self.rv))
        if plural == "deployments" and new.get("spec") != old.get("spec"):
            new["metadata"]["generation"] = old["metadata"].get("generation", 1) + 1
            new["_template_changed"] = new["spec"].get("template") != old["spec"].get("template")
            new["status"] = old.get("status", {})
            old_n, new_n = old["spec"].get("replicas"), new["spec"].get("replicas")
            if old_n != new_n:
                for hook in self.on_scale:
                    hook(ns, name, new_n)
        self._bucket(plural)[(ns, name)] = new
        return kjson(self._public(new))

    def delete(self, plural: str, ns: str, name: str) -> web.Response:
        if plural == "pods" and (ns, name) not in self._bucket("pods"):
            for (dns, dname), dep in self._bucket("deployments").items():
                if (
                    dns == ns
                    and name.startswith(f"{dname}-")
                    and name[len(dname) + 1 :].count("-") == 1
                ):
                    # The ReplicaSet replaces the pod: ready again after a few steps.
                    dep["metadata"]["generation"] += 1
                    dep["_template_changed"] = True
                    return kjson({"kind": "Status", "apiVersion": "v1", "status": "Success"})
        obj = self._bucket(plural).pop(("" if plural in CLUSTER_SCOPED else ns, name), None)
        if obj is None:
            return not_found(plural, name)
        return kjson(self._public(obj))

    # -- probe pods -------------------------------------------------------------------------

    async def _run_probe(self, pod: dict[str, Any]) -> None:
        """After a GET or two in Pending, 'run' the pod's curl command for real."""
        if pod["status"]["phase"] != "Pending":
            return
        pod["_gets"] += 1
        if pod["_gets"] <= self.probe_delay_gets:
            return
        container = pod["spec"]["containers"][0]
        argv = list(container.get("command") or []) + list(container.get("args") or [])
        env = {}
        for e in container.get("env") or []:
            if "value" in e:
                env[e["name"]] = e["value"]
            elif "valueFrom" in e:
                ref = e["valueFrom"]["secretKeyRef"]
                secret = self.obj("secrets", pod["metadata"]["namespace"], ref["name"])
                import base64

                env[e["name"]] = base64.b64decode(secret["data"][ref["key"]]).decode()
        argv = [_expand(a, env) for a in argv]
        # In a thread: the target servers share this event loop.
        code, out = await asyncio.to_thread(run_curl, self, pod["metadata"]["namespace"], argv)
        pod["_log"] = out
        pod["status"] = {
            "phase": "Succeeded" if code == 0 else "Failed",
            "containerStatuses": [
                {
                    "name": container["name"],
                    "ready": False,
                    "restartCount": 0,
                    "image": container["image"],
                    "imageID": "",
                    "state": {
                        "terminated": {
                            "exitCode": code,
                            "reason": "Completed" if code == 0 else "Error",
                        }
                    },
                }
            ],
        }
        pod["_argv"] = argv

    def pod_log(self, ns: str, name: str) -> web.Response:
        pod = self.obj("pods", ns, name)
        if pod is None:
            return not_found("pods", name)
        if pod["status"]["phase"] == "Pending":
            return status(
                400,
                "BadRequest",
                f'container "{pod["spec"]["containers"][0]["name"]}" in pod "{name}" is waiting to start: ContainerCreating',
            )
        return web.Response(text=pod.get("_log", ""), content_type="text/plain")

    def pod_metrics(self, ns: str) -> web.Response:
        items = [
            {
                "metadata": {"name": pod, "namespace": pns},
                "timestamp": "2026-01-01T00:00:00Z",
                "window": "15s",
                "containers": [{"name": "main", "usage": usage}],
            }
            for (pns, pod), usage in self.metrics.items()
            if pns == ns
        ]
        return kjson(
            {
                "kind": "PodMetricsList",
                "apiVersion": "metrics.k8s.io/v1beta1",
                "metadata": {},
                "items": items,
            }
        )

    # -- proxying ---------------------------------------------------------------------------

    def resolve(self, from_ns: str, url: str) -> tuple[str | None, str]:
        """In-cluster DNS: `svc`, `svc.ns`, `svc.ns.svc.cluster.local` -> a local base URL."""
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port or 80
        labels = host.split(".")
        ns = labels[1] if len(labels) > 1 else from_ns
        if (from_ns, f"{host}:{port}") in self.blocked:
            return None, "blocked"
        base = self.services.get((ns, labels[0], port))
        if base is None:
            return None, "unknown"
        return (base[0] if isinstance(base, list) else base), ""

    async def proxy(self, request: web.Request, parts: list[str]) -> web.StreamResponse:
        idx = parts.index("proxy")
        ns, kind, target = parts[3], parts[4], parts[5]
        bits = target.split(":")
        name = bits[-2] if len(bits) >= 2 else bits[0]
        port = int(bits[-1]) if len(bits) >= 2 else 80
        if kind == "services":
            if self.obj("services", ns, name) is None:
                return not_found("services", name)
            base = self.services.get((ns, name, port))
            if isinstance(base, list):
                base = base[next(self._rr) % len(base)]
            if base is None:
                return status(
                    503, "ServiceUnavailable", f'no endpoints available for service "{name}"'
                )
        else:
            base = None
            for (tns, dep, tport), urls in self.pod_targets.items():
                stem, _, index = name.rpartition("-")
                if tns == ns and tport == port and stem.rpartition("-")[0] == dep:
                    base = urls[int(index)]
            if base is None:
                return not_found("pods", name)
        rest = "/" + "/".join(parts[idx + 1 :])
        if request.path.endswith("/") and rest != "/":
            rest += "/"
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_HEADERS}
        self.proxied_headers.append(dict(request.headers))
        body = await request.read()
        url = base + rest + (f"?{request.query_string}" if request.query_string else "")
        try:
            async with (
                aiohttp.ClientSession() as session,
                session.request(
                    request.method, url, data=body or None, headers=headers
                ) as upstream,
            ):
                resp = web.StreamResponse(status=upstream.status)
                for k, v in upstream.headers.items():
                    if k.lower() not in HOP_HEADERS:
                        resp.headers[k] = v
                await resp.prepare(request)
                async for chunk in upstream.content.iter_any():
                    await resp.write(chunk)
                await resp.write_eof()
                return resp
        except aiohttp.ClientConnectionError as exc:
            return status(
                503,
                "ServiceUnavailable",
                f"error trying to reach service: dial tcp {base}: connect: connection refused ({exc})",
            )


def _expand(arg: str, env: dict[str, str]) -> str:
    for k, v in env.items():
        arg = arg.replace(f"$({k})", v)
    return arg


def run_curl(cluster: FakeCluster, ns: str, argv: list[str]) -> tuple[int, str]:
    """Execute the subset of curl the probe pods use, against the fake service map."""
    import httpx2

    if not argv or argv[0] != "curl":
        return 127, f"exec: {shlex.join(argv)}: not found\n"
    headers: dict[str, str] = {}
    data = None
    method = None
    write_out = ""
    max_time = 30.0
    url = None
    it = iter(argv[1:])
    for a in it:
        if a in ("-H", "--header"):
            k, _, v = next(it).partition(":")
            headers[k.strip()] = v.strip()
        elif a in ("-d", "--data", "--data-binary", "--data-raw"):
            data = next(it).encode()
        elif a in ("-X", "--request"):
            method = next(it)
        elif a in ("-w", "--write-out"):
            write_out = next(it)
        elif a in ("-m", "--max-time"):
            max_time = float(next(it))
        elif a in ("-o", "--output"):
            next(it)
        elif a.startswith("-"):
            continue
        else:
            url = a
    if url is None:
        return 2, "curl: no URL specified\n"
    base, why = cluster.resolve(ns, url)
    if base is None:
        if why == "blocked":
            return (
                28,
                f"curl: (28) Connection timed out after {int(max_time * 1000)} milliseconds\n",
            )
        return 6, f"curl: (6) Could not resolve host: {urlsplit(url).hostname}\n"
    parts = urlsplit(url)
    target = base + parts.path + (f"?{parts.query}" if parts.query else "")
    method = method or ("POST" if data is not None else "GET")
    started = time.perf_counter()
    try:
        r = httpx2.request(method, target, content=data, headers=headers, timeout=max_time)
    except httpx2.TransportError:
        return 7, f"curl: (7) Failed to connect to {parts.hostname} port {parts.port}\n"
    elapsed = time.perf_counter() - started
    out = r.text
    if write_out:
        out += (
            write_out.replace("\\n", "\n")
            .replace("%{http_code}", str(r.status_code))
            .replace("%{time_total}", f"{elapsed:.6f}")
        )
    return 0, out


class Served:
    """Run aiohttp apps on 127.0.0.1 free ports in one background event loop thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.runners: list[web.AppRunner] = []

    def start(self, app: web.Application) -> str:
        async def go() -> str:
            runner = web.AppRunner(app)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            self.runners.append(runner)
            port = runner.addresses[0][1]
            return f"http://127.0.0.1:{port}"

        return asyncio.run_coroutine_threadsafe(go(), self.loop).result(10)

    def close(self) -> None:
        async def stop() -> None:
            for r in self.runners:
                await r.cleanup()

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def write_kubeconfig(path: Any, server: str, context: str = "fake") -> str:
    """A kubeconfig naming the fake API server, with a token the server ignores."""
    import yaml

    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": context, "cluster": {"server": server}}],
        "users": [{"name": context, "user": {"token": "fake-token"}}],
        "contexts": [{"name": context, "context": {"cluster": context, "user": context}}],
        "current-context": context,
    }
    path.write_text(yaml.safe_dump(doc))
    return str(path)
