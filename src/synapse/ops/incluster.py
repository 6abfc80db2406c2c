"""HTTP requests made from inside a namespace: a short-lived pod running a pinned curl image.

Why a pod rather than `kubectl exec`: consumer images need not ship curl, the request really
starts in the namespace under test (so NetworkPolicies apply to it), and it needs only
create/get/delete on pods and pods/log. A key can come from a Secret through the pod's env,
so it never passes through this machine.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from synapse.ops.output import OpsError

if TYPE_CHECKING:
    from synapse.ops.kube import Kube

CURL_IMAGE = "curlimages/curl:8.11.1"
MARK = "__synapse_probe__"
PROBE_LABELS = {
    "app.kubernetes.io/name": "synapse-probe",
    "app.kubernetes.io/part-of": "synapse",
    "app.kubernetes.io/managed-by": "synapse-cli",
}
# curl exit codes worth naming in a report.
CURL_ERRORS = {
    6: "could not resolve host",
    7: "connection refused",
    28: "timed out",
    52: "empty reply",
    56: "connection reset",
}


@dataclass
class ProbeResult:
    exit_code: int
    http_code: int | None
    body: str
    seconds: float | None
    pod: str
    output: str

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and self.http_code is not None and self.http_code < 400

    def describe(self) -> str:
        if self.exit_code != 0:
            return f"curl exit {self.exit_code} ({CURL_ERRORS.get(self.exit_code, 'error')})"
        return f"HTTP {self.http_code}"

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except json.JSONDecodeError as exc:
            raise OpsError(f"probe {self.pod}: answer is not JSON: {self.body[:200]!r}") from exc


def curl_args(
    url: str,
    *,
    method: str = "GET",
    json_body: Any = None,
    headers: dict[str, str] | None = None,
    max_time: float = 30.0,
) -> list[str]:
    args = ["curl", "-sS", "-m", f"{max_time:g}", "-X", method]
    for k, v in (headers or {}).items():
        args += ["-H", f"{k}: {v}"]
    if json_body is not None:
        args += ["-H", "Content-Type: application/json", "--data-binary", json.dumps(json_body)]
    args += ["-w", f"\\n{MARK} %{{http_code}} %{{time_total}}\\n", url]
    return args


def parse_output(text: str) -> tuple[str, int | None, float | None]:
    """Split curl's output into the body and the `-w` trailer (status code, seconds)."""
    head, sep, tail = text.rpartition(MARK)
    if not sep:
        return text, None, None
    fields = tail.split()
    try:
        code = int(fields[0]) if fields else None
        seconds = float(fields[1]) if len(fields) > 1 else None
    except ValueError:
        return text, None, None
    return head.removesuffix("\n"), (code or None), seconds


def probe_pod(
    namespace: str,
    args: list[str],
    *,
    image: str,
    deadline: int,
    secret_env: dict[str, tuple[str, str]] | None = None,
) -> dict[str, Any]:
    env = [
        {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}
        for name, (secret, key) in (secret_env or {}).items()
    ]
    container: dict[str, Any] = {
        "name": "curl",
        "image": image,
        "command": args[:1],
        "args": args[1:],
        "resources": {
            "requests": {"cpu": "10m", "memory": "16Mi"},
            "limits": {"cpu": "200m", "memory": "64Mi"},
        },
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "runAsUser": 100,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    if env:
        container["env"] = env
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "synapse-probe-",
            "namespace": namespace,
            "labels": dict(PROBE_LABELS),
        },
        "spec": {
            "restartPolicy": "Never",
            "activeDeadlineSeconds": deadline,
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [container],
        },
    }


def run_probe(
    kube: Kube,
    namespace: str,
    url: str,
    *,
    method: str = "GET",
    json_body: Any = None,
    headers: dict[str, str] | None = None,
    secret_env: dict[str, tuple[str, str]] | None = None,
    image: str = CURL_IMAGE,
    max_time: float = 30.0,
    start_timeout: float = 120.0,
) -> ProbeResult:
    """Run one curl in `namespace`, wait for it to finish, read its log, delete the pod."""
    from lightkube.resources.core_v1 import Pod

    args = curl_args(url, method=method, json_body=json_body, headers=headers, max_time=max_time)
    spec = probe_pod(
        namespace,
        args,
        image=image,
        deadline=int(max_time + start_timeout),
        secret_env=secret_env,
    )
    created = kube.call(
        lambda: kube.client.create(Pod.from_dict(spec), namespace=namespace),
        f"create probe pod in {namespace}",
    )
    name = created.metadata.name
    try:
        deadline = time.monotonic() + start_timeout + max_time
        poll = 0.1  # image cached: a probe takes a second or two; pulling it takes longer
        while True:
            pod = kube.get(Pod, name, namespace)
            if pod is None:
                raise OpsError(f"probe pod {namespace}/{name} disappeared")
            phase = pod.status.phase if pod.status else None
            if phase in ("Succeeded", "Failed"):
                break
            if time.monotonic() > deadline:
                raise OpsError(f"probe pod {namespace}/{name} still {phase} after the timeout")
            time.sleep(poll)
            poll = min(2.0, poll * 1.5)
        exit_code = _exit_code(pod)
        output = "".join(
            kube.call(
                lambda: list(kube.client.log(name, namespace=namespace)),
                f"logs of probe pod {namespace}/{name}",
            )
        )
    finally:
        # Best effort: the pod's activeDeadlineSeconds ends it anyway.
        with contextlib.suppress(Exception):
            kube.client.delete(Pod, name, namespace=namespace, grace_period=0)
    body, code, seconds = parse_output(output)
    return ProbeResult(exit_code, code, body, seconds, name, output)


def _exit_code(pod: Any) -> int:
    for cs in (pod.status.containerStatuses if pod.status else None) or []:
        term = cs.state.terminated if cs.state else None
        if term is not None:
            return int(term.exitCode)
    return 0 if pod.status.phase == "Succeeded" else 1
