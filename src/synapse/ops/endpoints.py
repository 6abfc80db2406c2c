"""HTTP endpoints the ops commands talk to: in-cluster Services through the API server's
service proxy (no port-forward needed from a laptop), or plain URLs.

An in-cluster URL such as `http://ollama.llm-infra.svc.cluster.local:11434` or the short
`http://ollama:11434` (relative to a namespace) is reached at
`/api/v1/namespaces/llm-infra/services/ollama:11434/proxy/...`; any other URL directly.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx2

from synapse.ops.output import OpsError, Unreachable

if TYPE_CHECKING:
    from synapse.ops.kube import Kube

DEFAULT_TIMEOUT = httpx2.Timeout(30.0, connect=10.0)


@dataclass(frozen=True)
class ServiceRef:
    namespace: str
    name: str
    port: int
    scheme: str = "http"

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}:{self.port}"


def service_ref(url: str, default_namespace: str) -> ServiceRef | None:
    """The Service a cluster URL names, or None for a URL outside the cluster's DNS.

    `name`, `name.ns`, `name.ns.svc` and `name.ns.svc.cluster.local` are Service names;
    `localhost`, IPs and other dotted hosts are not.
    """
    parts = urlsplit(url if "//" in url else f"http://{url}")
    host = (parts.hostname or "").lower()
    scheme = parts.scheme or "http"
    port = parts.port or (443 if scheme == "https" else 80)
    if not host or host == "localhost" or host.replace(".", "").isdigit() or ":" in host:
        return None
    labels = host.split(".")
    if len(labels) == 1:
        return ServiceRef(default_namespace, labels[0], port, scheme)
    if len(labels) in (2, 3) and labels[2:] in ([], ["svc"]):
        return ServiceRef(labels[1], labels[0], port, scheme)
    if labels[2:] == ["svc", "cluster", "local"]:
        return ServiceRef(labels[1], labels[0], port, scheme)
    return None


def url_path(url: str) -> str:
    """The path part of a base URL (e.g. `/v1`), without a trailing slash."""
    path = urlsplit(url if "//" in url else f"http://{url}").path
    return path.rstrip("/")


class Endpoint:
    """One HTTP service: `request('GET', '/api/tags')` works the same whichever way it is reached."""

    def __init__(
        self, client: httpx2.Client, prefix: str, label: str, *, via_proxy: bool, owned: bool
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.label = label
        self.via_proxy = via_proxy
        self._owned = owned

    def close(self) -> None:
        if self._owned:
            self.client.close()

    def url(self, path: str) -> str:
        return self.prefix + path

    def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        content: bytes | None = None,
        files: Any = None,
        data: Any = None,
        headers: dict[str, str] | None = None,
        timeout: float | httpx2.Timeout | None = None,
    ) -> httpx2.Response:
        kwargs: dict[str, Any] = {"headers": headers}
        if json_body is not None:
            kwargs["json"] = json_body
        if content is not None:
            kwargs["content"] = content
        if files is not None:
            kwargs["files"] = files
        if data is not None:
            kwargs["data"] = data
        if timeout is not None:
            kwargs["timeout"] = timeout
        try:
            resp = self.client.request(method, self.url(path), **kwargs)
        except httpx2.TimeoutException as exc:
            raise Unreachable(f"{self.label}: timed out ({type(exc).__name__})") from exc
        except httpx2.TransportError as exc:
            raise Unreachable(f"{self.label} unreachable: {exc or type(exc).__name__}") from exc
        self._raise_proxy_error(resp)
        return resp

    @contextlib.contextmanager
    def stream(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        timeout: httpx2.Timeout | None = None,
    ) -> Iterator[httpx2.Response]:
        try:
            with self.client.stream(
                method, self.url(path), json=json_body, timeout=timeout or DEFAULT_TIMEOUT
            ) as resp:
                if resp.status_code >= 400:
                    resp.read()
                    self._raise_proxy_error(resp)
                yield resp
        except httpx2.TimeoutException as exc:
            raise Unreachable(f"{self.label}: timed out ({type(exc).__name__})") from exc
        except httpx2.TransportError as exc:
            raise Unreachable(f"{self.label} unreachable: {exc or type(exc).__name__}") from exc

    def _raise_proxy_error(self, resp: httpx2.Response) -> None:
        """The API server answers for the Service (Status JSON) when it cannot reach it."""
        if not self.via_proxy or resp.status_code < 400:
            return
        status = k8s_status(resp)
        if status is None:
            return
        message = status.get("message") or status.get("reason") or resp.reason_phrase
        if resp.status_code in (401, 403):
            raise OpsError(f"{self.label}: the Kubernetes API refused the proxy request: {message}")
        raise Unreachable(f"{self.label} unreachable through the API server: {message}")

    def get_json(self, path: str, **kw: Any) -> Any:
        resp = self.request("GET", path, **kw)
        return expect_json(resp, f"GET {path} on {self.label}")

    def post_json(self, path: str, body: Any, **kw: Any) -> Any:
        resp = self.request("POST", path, json_body=body, **kw)
        return expect_json(resp, f"POST {path} on {self.label}")


def k8s_status(resp: httpx2.Response) -> dict[str, Any] | None:
    """A Kubernetes `Status` object in the body (as opposed to the service's own answer)."""
    if "json" not in resp.headers.get("content-type", ""):
        return None
    try:
        doc = resp.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    if isinstance(doc, dict) and doc.get("kind") == "Status" and "apiVersion" in doc:
        return doc
    return None


def expect_json(resp: httpx2.Response, what: str) -> Any:
    if resp.status_code >= 400:
        raise OpsError(f"{what}: HTTP {resp.status_code} {error_text(resp)}")
    try:
        return resp.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise OpsError(f"{what}: answer is not JSON: {resp.text[:200]!r}") from exc


def error_text(resp: httpx2.Response) -> str:
    """The error message of an Ollama/OpenAI-style error body, else the start of the body."""
    try:
        doc = resp.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return resp.text[:200]
    if isinstance(doc, dict):
        err = doc.get("error", doc.get("message", doc))
        if isinstance(err, dict):
            err = err.get("message", err)
        return str(err)[:300]
    return str(doc)[:300]


class Endpoints:
    """Builds Endpoints for URLs, reusing one cluster connection made on first need."""

    def __init__(
        self,
        kube_factory: Any = None,
        *,
        default_namespace: str = "llm-infra",
        timeout: httpx2.Timeout = DEFAULT_TIMEOUT,
    ) -> None:
        self._kube_factory = kube_factory
        self._kube: Kube | None = None
        self.default_namespace = default_namespace
        self.timeout = timeout
        self._owned: list[Endpoint] = []

    @property
    def kube(self) -> Kube:
        if self._kube is None:
            if self._kube_factory is None:
                raise OpsError("this needs a Kubernetes cluster (none configured)")
            self._kube = self._kube_factory()
        return self._kube

    def for_url(self, url: str, namespace: str | None = None) -> Endpoint:
        """An Endpoint for `url`: through the service proxy when it names a Service."""
        ref = service_ref(url, namespace or self.default_namespace)
        if ref is None:
            client = httpx2.Client(base_url=url.rstrip("/"), timeout=self.timeout)
            ep = Endpoint(client, "", url.rstrip("/"), via_proxy=False, owned=True)
            self._owned.append(ep)
            return ep
        return self.for_service(ref, base_path=url_path(url))

    def for_service(self, ref: ServiceRef, base_path: str = "") -> Endpoint:
        kube = self.kube
        prefix = kube.service_proxy_path(ref.namespace, ref.name, ref.port, scheme=ref.scheme)
        return Endpoint(
            kube.http, prefix + base_path, f"{ref} (via API proxy)", via_proxy=True, owned=False
        )

    def for_pod(self, namespace: str, pod: str, port: int) -> Endpoint:
        prefix = self.kube.pod_proxy_path(namespace, pod, port)
        return Endpoint(
            self.kube.http, prefix, f"pod {namespace}/{pod}:{port}", via_proxy=True, owned=False
        )

    def close(self) -> None:
        for ep in self._owned:
            ep.close()
        if self._kube is not None:
            self._kube.close()

    def __enter__(self) -> Endpoints:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def auth_headers(key: str | None) -> dict[str, str]:
    """The master key as a Bearer token, and as `x-api-key`: the API server's service proxy
    strips `Authorization` from proxied requests, so a keyed call through it needs the second."""
    if not key:
        return {}
    return {"Authorization": f"Bearer {key}", "x-api-key": key}
