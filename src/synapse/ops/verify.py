"""`synapse verify --phase N`: the build plan's success criteria for phase N, as checks with
pass/fail and the value measured.

Checks that disturb the cluster (deleting the vLLM pod, scaling vLLM to 0 to prove the
fallback) run only with `--disruptive`, and put back what they changed even when interrupted.
Latencies are measured where the plan means them: embedding latency is Ollama's own
`total_duration`; the routing overhead compares direct Ollama with the gateway over the same
path (both through the API server's proxy), so the path's cost cancels out.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from synapse.ops.output import add_common_args, run_command

if TYPE_CHECKING:
    from synapse.ops.endpoints import Endpoint, Endpoints
    from synapse.ops.kube import Kube
    from synapse.ops.models import RoutingConfig
    from synapse.ops.output import Check

GI = 1024**3


def register(subparsers: argparse._SubParsersAction) -> None:
    from synapse.ops.health import add_gateway_args

    p = subparsers.add_parser(
        "verify",
        help="run a phase's success criteria as checks",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--phase",
        type=int,
        choices=range(1, 6),
        required=True,
        help="the build plan's phase whose success criteria to check: 1 CPU Ollama, 2 vLLM on "
        "the GPU, 3 the gateway, 4 speech, 5 security and monitoring",
    )
    p.add_argument(
        "--preflight",
        action="store_true",
        help="only the checks to pass BEFORE deploying the phase (phase 2: a free nvidia.com/gpu "
        "and RuntimeClass nvidia, risk R2)",
    )
    p.add_argument(
        "--disruptive",
        action="store_true",
        help="also run checks that change the cluster (and restore it)",
    )
    add_gateway_args(p)
    p.add_argument("--samples", type=int, default=10, help="requests per latency figure")
    p.add_argument("--tokens", type=int, default=256, help="tokens generated for tokens/s")
    p.add_argument(
        "--restore-timeout",
        type=float,
        default=1800.0,
        help="wait for a restored Deployment to be ready again, seconds (vLLM loads slowly)",
    )
    p.add_argument(
        "--consumer-namespace",
        default="jarvis-cortex",
        help="phase 5: the namespace whose pods must still reach the gateway",
    )
    p.add_argument("--outside-namespace", default="default", help="a namespace with no access")
    p.add_argument("--ingress-url", help="default: https://<host of the namespace's Ingress>")
    p.add_argument(
        "--prometheus-url",
        default=None,
        help="phase 5: Prometheus's HTTP API, read for loaded rules and scraped targets "
        "(default: kube-prometheus-stack's Service in namespace monitoring)",
    )
    p.add_argument("--curl-image", default=None, help="image of the in-cluster probe pods")
    add_common_args(p)
    p.set_defaults(func=lambda args: run_command(args, run))


@dataclass
class Ctx:
    args: argparse.Namespace
    kube: Kube
    eps: Endpoints
    routing: RoutingConfig | None
    _key: list[str | None] = field(default_factory=list)

    @property
    def ns(self) -> str:
        return str(self.args.namespace)

    def ep(self, url: str) -> Endpoint:
        return self.eps.for_url(url)

    @property
    def gateway(self) -> Endpoint:
        from synapse.ops.probes import GATEWAY_URL

        return self.ep(self.args.gateway_url or GATEWAY_URL)

    def headers(self) -> dict[str, str]:
        from synapse.ops.endpoints import auth_headers
        from synapse.ops.probes import master_key

        if not self._key:
            self._key.append(master_key(lambda: self.kube, self.args.master_key, self.ns))
        return auth_headers(self._key[0])

    def model(
        self, *, provider: tuple[str, ...], mode: str | None, default: str, group: bool
    ) -> str:
        entry = self.routing.first(provider=provider, mode=mode) if self.routing else None
        if entry is None:
            return default
        return entry.group if group else entry.backend_model


Step = Callable[[Ctx], "Check | list[Check]"]


def run(args: argparse.Namespace) -> int:
    from synapse.ops.endpoints import Endpoints
    from synapse.ops.kube import Kube
    from synapse.ops.models import routing_or_none
    from synapse.ops.output import Check, OpsError, guarded, render_checks

    steps = PHASES[args.phase]
    if args.preflight:
        if args.phase not in PREFLIGHT:
            raise OpsError(f"phase {args.phase} has no pre-flight checks (phase 2 has)")
        steps = PREFLIGHT[args.phase]
    routing = routing_or_none(args.config)
    kube = Kube.connect(args.kubeconfig, args.context)
    checks: list[Check] = []
    with Endpoints(lambda: kube, default_namespace=args.namespace) as eps:
        ctx = Ctx(args, kube, eps, routing)
        for name, step, disruptive in steps:
            if disruptive and not args.disruptive:
                checks.append(
                    Check(name, "skip", "", "disturbs the cluster: run with --disruptive")
                )
                continue
            checks += guarded(name, lambda step=step: step(ctx))
    title = f"{'pre-flight' if args.preflight else 'verify'} phase {args.phase}"
    return render_checks(
        title,
        checks,
        as_json=args.json,
        extra={"phase": args.phase, "disruptive": args.disruptive, "preflight": args.preflight},
    )


# -- phase 1: the CPU Ollama ------------------------------------------------------------------


def p1_pods(ctx: Ctx) -> Check:
    from synapse.ops.probes import pods_ready

    return pods_ready(ctx.kube, ctx.ns, "ollama")


def p1_pvc(ctx: Ctx) -> list[Check]:
    from synapse.ops.probes import pvc_checks

    return pvc_checks(ctx.kube, ctx.ns, ["ollama-models"])


def p1_disk(ctx: Ctx) -> Check:
    from synapse.ops.preflight import disk_fits

    return disk_fits(ctx.kube, ctx.ns)


def p1_models(ctx: Ctx) -> list[Check]:
    from synapse.ops.models import DEFAULT_PULL_MODELS, missing, tag_names
    from synapse.ops.output import verdict
    from synapse.ops.probes import OLLAMA_URL

    wanted = list(DEFAULT_PULL_MODELS)
    if ctx.routing:
        wanted = [m for ms in ctx.routing.ollama_models().values() for m in ms] or wanted
    have = tag_names(ctx.ep(OLLAMA_URL).get_json("/api/tags"))
    absent = set(missing(wanted, have))
    return [
        verdict(f"model {m}", m not in absent, "present" if m not in absent else "missing")
        for m in dict.fromkeys(wanted)
    ]


def _embed_model(ctx: Ctx, *, group: bool = False) -> str:
    return ctx.model(
        provider=("ollama",), mode="embedding", default="mxbai-embed-large", group=group
    )


def p1_embedding(ctx: Ctx) -> Check:
    from synapse.ops.migration import embedding_of
    from synapse.ops.output import passed
    from synapse.ops.probes import OLLAMA_URL

    model = _embed_model(ctx)
    doc = ctx.ep(OLLAMA_URL).post_json("/api/embeddings", {"model": model, "prompt": "test"})
    return passed("embedding works", f"dim {len(embedding_of(doc))}", f"{model} /api/embeddings")


def p1_embedding_latency(ctx: Ctx) -> Check:
    from synapse.ops.output import verdict
    from synapse.ops.probes import OLLAMA_URL, median_ms

    ep = ctx.ep(OLLAMA_URL)
    body = {"model": _embed_model(ctx), "input": "test", "keep_alive": "30m"}
    ep.post_json("/api/embed", body)  # warm-up: loads the model
    server, client = [], []
    for _ in range(max(1, ctx.args.samples)):
        started = time.perf_counter()
        doc = ep.post_json("/api/embed", body)
        client.append(time.perf_counter() - started)
        if isinstance(doc.get("total_duration"), int | float):
            server.append(doc["total_duration"] / 1e9)
    measured = median_ms(server) if server else median_ms(client)
    where = "Ollama's total_duration" if server else "round trip via the API proxy"
    return verdict(
        "embedding latency < 100ms",
        measured < 100,
        f"p50 {measured:.1f} ms",
        f"{where}; round trip p50 {median_ms(client):.1f} ms over {len(client)}",
        p50_ms=measured,
    )


def p1_chat(ctx: Ctx) -> Check:
    from synapse.ops.output import passed
    from synapse.ops.probes import OLLAMA_URL

    model = ctx.model(provider=("ollama_chat",), mode=None, default="llama3.1:8b", group=False)
    body = {"model": model, "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 8}
    started = time.perf_counter()
    doc = ctx.ep(OLLAMA_URL).post_json("/v1/chat/completions", body, timeout=600.0)
    text = _chat_text(doc)
    return passed(
        "LLM chat works (CPU)", f"{time.perf_counter() - started:.1f} s", f"{model}: {text[:60]!r}"
    )


def _chat_text(doc: Any) -> str:
    from synapse.ops.output import OpsError

    try:
        return str(doc["choices"][0]["message"]["content"])
    except (KeyError, IndexError, TypeError) as exc:
        raise OpsError(f"not a chat completion: {str(doc)[:200]}") from exc


def p1_memory(ctx: Ctx) -> Check:
    from synapse.ops.probes import memory_check

    return memory_check("memory ollama < 64Gi", ctx.kube, ctx.ns, 64 * GI, prefix="ollama-")


# -- phase 2: vLLM on the GPU ----------------------------------------------------------------


def _vllm_model(ctx: Ctx) -> str:
    return ctx.model(
        provider=("hosted_vllm",),
        mode=None,
        default="meta-llama/Meta-Llama-3.1-8B-Instruct",
        group=False,
    )


def p2_pods(ctx: Ctx) -> Check:
    from synapse.ops.probes import pods_ready

    return pods_ready(ctx.kube, ctx.ns, "vllm-inference")


def p2_pvc(ctx: Ctx) -> list[Check]:
    from synapse.ops.probes import pvc_checks

    return pvc_checks(ctx.kube, ctx.ns, ["vllm-model-cache"])


def p2_gpu(ctx: Ctx) -> Check:
    from synapse.ops.kube import pod_ready
    from synapse.ops.output import failed, verdict

    pods = ctx.kube.list_pods(ctx.ns, {"app": "vllm-inference"})
    if not pods:
        return failed("GPU allocated", "no pod")
    pod = pods[0]
    gpus = 0
    for c in pod.spec.containers if pod.spec else []:
        limits = (c.resources.limits if c.resources else None) or {}
        gpus += int(str(limits.get("nvidia.com/gpu", "0")))
    node = pod.spec.nodeName if pod.spec else None
    return verdict(
        "GPU allocated",
        gpus >= 1 and pod_ready(pod),
        f"nvidia.com/gpu: {gpus}",
        f"pod {pod.metadata.name}" + (f" on {node}" if node else ""),
    )


def p2_chat(ctx: Ctx) -> Check:
    from synapse.ops.output import passed
    from synapse.ops.probes import VLLM_URL

    model = _vllm_model(ctx)
    body = {"model": model, "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 16}
    doc = ctx.ep(VLLM_URL).post_json("/v1/chat/completions", body, timeout=120.0)
    return passed("chat completion works", "200", f"{model}: {_chat_text(doc)[:60]!r}")


def p2_tokens(ctx: Ctx) -> Check:
    from synapse.ops.output import verdict
    from synapse.ops.probes import VLLM_URL

    body = {
        "model": _vllm_model(ctx),
        "messages": [{"role": "user", "content": "Write a long story about a lighthouse."}],
        "max_tokens": ctx.args.tokens,
        "ignore_eos": True,  # vLLM extension: generate exactly max_tokens
        "temperature": 0.7,
    }
    started = time.perf_counter()
    doc = ctx.ep(VLLM_URL).post_json("/v1/chat/completions", body, timeout=300.0)
    elapsed = time.perf_counter() - started
    tokens = int((doc.get("usage") or {}).get("completion_tokens") or 0)
    rate = tokens / elapsed if elapsed > 0 else 0.0
    return verdict(
        "tokens/s > 100",
        rate > 100,
        f"{rate:.0f} tok/s",
        f"{tokens} tokens in {elapsed:.2f} s, one request, incl. the API proxy round trip",
        tokens_per_s=rate,
    )


def p2_preflight_runtime(ctx: Ctx) -> Check:
    from synapse.ops.preflight import runtime_class

    return runtime_class(ctx.kube)


def p2_preflight_gpu(ctx: Ctx) -> Check:
    from synapse.ops.preflight import gpu_free

    return gpu_free(ctx.kube)


def p2_tools(ctx: Ctx) -> Check:
    """Consumers send `tools` with tool_choice "auto": vLLM answers 400 unless it runs with
    --enable-auto-tool-choice and --tool-call-parser."""
    from synapse.ops.output import verdict
    from synapse.ops.probes import VLLM_URL, timed

    tool = {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The current weather in a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
    body = {
        "model": _vllm_model(ctx),
        "messages": [{"role": "user", "content": "What is the weather in Paris? Use the tool."}],
        "tools": [tool],
        "tool_choice": "auto",
        "max_tokens": 64,
    }
    r = timed(ctx.ep(VLLM_URL), "POST", "/v1/chat/completions", json_body=body, timeout=120.0)
    if r.status != 200:
        error = r.body.get("error") if isinstance(r.body, dict) else None
        message = error.get("message") if isinstance(error, dict) else r.text[:200]
        return verdict(
            "tool call (tool_choice auto)",
            False,
            f"HTTP {r.status}",
            f"{message}; vLLM needs --enable-auto-tool-choice --tool-call-parser=llama3_json",
        )
    try:
        calls = r.body["choices"][0]["message"].get("tool_calls") or []
    except (KeyError, IndexError, TypeError, AttributeError):
        calls = []
    names = ", ".join(str(c.get("function", {}).get("name")) for c in calls)
    return verdict(
        "tool call (tool_choice auto)",
        True,
        "HTTP 200",
        f"tool_calls: {names}" if calls else "accepted; the model answered in text this time",
    )


def _gpu_memory_utilization(ctx: Ctx) -> float:
    """vLLM's --gpu-memory-utilization from its Deployment (vLLM's default 0.9 when unset)."""
    dep = ctx.kube.deployment(ctx.ns, "vllm-inference")
    containers = dep.spec.template.spec.containers if dep and dep.spec.template.spec else []
    args = [a for c in containers for a in [*(c.command or []), *(c.args or [])]]
    for i, arg in enumerate(args):
        if arg.startswith("--gpu-memory-utilization="):
            return float(arg.split("=", 1)[1])
        if arg == "--gpu-memory-utilization" and i + 1 < len(args):
            return float(args[i + 1])
    return 0.9


# The CUDA context and driver reservations sit outside vLLM's budget.
VRAM_SLACK_GIB = 1.0
NOMINAL_VRAM_GIB = 32607 / 1024  # an RTX 5090, when the exporter does not report free memory


def p2_vram(ctx: Ctx) -> Check:
    """GPU memory from a DCGM exporter (nvidia-smi is not reachable via the API), in GiB against
    the plan's budget: the card's total times vLLM's --gpu-memory-utilization."""
    from lightkube.resources.core_v1 import Service

    from synapse.ops.endpoints import ServiceRef
    from synapse.ops.output import Check, verdict
    from synapse.ops.probes import scrape, series

    name = "GPU VRAM within budget"
    exporters = [s for s in ctx.kube.list(Service, "*") if "dcgm" in (s.metadata.name or "")]
    if not exporters:
        return Check(name, "skip", "no exporter", "no dcgm-exporter Service found")
    svc = exporters[0]
    port = svc.spec.ports[0].port if svc.spec and svc.spec.ports else 9400
    ep = ctx.eps.for_service(
        ServiceRef(svc.metadata.namespace or "", svc.metadata.name or "", port)
    )
    metrics = scrape(ep)
    used = [v for _, v in series(metrics, "DCGM_FI_DEV_FB_USED")]
    if not used:
        return Check(name, "skip", "no series", "DCGM_FI_DEV_FB_USED not exported")
    free = [v for _, v in series(metrics, "DCGM_FI_DEV_FB_FREE")]
    reserved = [v for _, v in series(metrics, "DCGM_FI_DEV_FB_RESERVED")]
    used_gib = max(used) / 1024
    total_gib = (
        (max(used) + max(free) + (max(reserved) if reserved else 0)) / 1024
        if free
        else NOMINAL_VRAM_GIB
    )
    util = _gpu_memory_utilization(ctx)
    budget = total_gib * util
    return verdict(
        name,
        used_gib <= budget + VRAM_SLACK_GIB,
        f"{used_gib:.1f} GiB",
        f"budget {util:g} x {total_gib:.1f} GiB = {budget:.1f} GiB (+{VRAM_SLACK_GIB:g} GiB for "
        f"the CUDA context); {ep.label}",
        used_gib=used_gib,
        budget_gib=budget,
    )


def p2_restart(ctx: Ctx) -> Check:
    """Delete the vLLM pod; the new one must load the model from the PVC within 5 minutes."""
    from lightkube.resources.core_v1 import Pod

    from synapse.ops.kube import pod_ready
    from synapse.ops.output import verdict

    labels = {"app": "vllm-inference"}
    old = {p.metadata.name for p in ctx.kube.list_pods(ctx.ns, labels)}
    started = time.monotonic()
    for name in old:
        ctx.kube.call(
            lambda name=name: ctx.kube.client.delete(Pod, name, namespace=ctx.ns),
            f"delete pod {name}",
        )
    deadline = started + ctx.args.restore_timeout
    interval = 0.1
    while time.monotonic() < deadline:
        ready = [
            p
            for p in ctx.kube.list_pods(ctx.ns, labels)
            if pod_ready(p) and p.metadata.name not in old
        ]
        if ready:
            took = time.monotonic() - started
            return verdict(
                "model survives restart", took < 300, f"{took:.0f} s", ready[0].metadata.name
            )
        time.sleep(interval)
        interval = min(5.0, interval * 1.5)
    return verdict(
        "model survives restart", False, "not ready", f"after {ctx.args.restore_timeout:g} s"
    )


# -- phase 3: the gateway -------------------------------------------------------------------


def p3_pods(ctx: Ctx) -> Check:
    from synapse.ops.probes import pods_ready

    return pods_ready(ctx.kube, ctx.ns, "synapse", want=2)


def p3_health(ctx: Ctx) -> Check:
    from synapse.ops.health import summarize_health
    from synapse.ops.output import verdict
    from synapse.ops.probes import keyed_hint, timed

    r = timed(ctx.gateway, "GET", "/health", headers=ctx.headers())
    return verdict(
        "/health returns OK",
        r.status == 200,
        f"HTTP {r.status}",
        summarize_health(r.body) + keyed_hint(r.status, ctx.gateway),
    )


def p3_models(ctx: Ctx) -> Check:
    from synapse.ops.models import missing
    from synapse.ops.output import verdict
    from synapse.ops.probes import keyed_hint, timed

    r = timed(ctx.gateway, "GET", "/v1/models", headers=ctx.headers())
    if r.status != 200 or not isinstance(r.body, dict):
        return verdict(
            "/v1/models lists routes", False, f"HTTP {r.status}", keyed_hint(r.status, ctx.gateway)
        )
    ids = [m.get("id", "") for m in r.body.get("data") or [] if isinstance(m, dict)]
    want = ctx.routing.groups if ctx.routing else []
    absent = missing(want, ids)
    detail = f"missing: {', '.join(absent)}" if absent else ", ".join(ids)
    return verdict(
        "/v1/models lists routes", bool(ids) and not absent, f"{len(ids)} models", detail
    )


def p3_embedding(ctx: Ctx) -> Check:
    from synapse.ops.output import verdict
    from synapse.ops.probes import keyed_hint, timed

    model = _embed_model(ctx, group=True)
    r = timed(
        ctx.gateway,
        "POST",
        "/v1/embeddings",
        json_body={"model": model, "input": "test"},
        headers=ctx.headers(),
    )
    try:
        dim = len(r.body["data"][0]["embedding"])
    except (KeyError, IndexError, TypeError):
        return verdict(
            "embedding via gateway", False, f"HTTP {r.status}", keyed_hint(r.status, ctx.gateway)
        )
    return verdict(
        "embedding via gateway", r.status == 200, f"dim {dim}", f"{model} /v1/embeddings"
    )


def gateway_metrics(ctx: Ctx) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every gateway replica's /metrics (on its metrics port) summed: a request lands on any
    one of them."""
    from synapse.ops.kube import pod_ready
    from synapse.ops.probes import scrape

    merged: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for pod in ctx.kube.list_pods(ctx.ns, {"app": "synapse"}):
        if not pod_ready(pod):
            continue
        metrics = scrape(ctx.eps.for_pod(ctx.ns, pod.metadata.name, ctx.args.metrics_port))
        for k, v in metrics.items():
            merged[k] = merged.get(k, 0.0) + v
    return merged


def _chat_via_gateway(ctx: Ctx, group: str) -> tuple[int, float, dict[str, float]]:
    """One chat request through the gateway; the change in requests and fallbacks it caused."""
    from synapse.ops.probes import series, timed, total

    before = gateway_metrics(ctx)
    body = {"model": group, "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 8}
    r = timed(
        ctx.gateway,
        "POST",
        "/v1/chat/completions",
        json_body=body,
        headers=ctx.headers(),
        timeout=600.0,
    )
    after = gateway_metrics(ctx)
    served_by = {}
    for labels, value in series(after, "synapse_requests_total"):
        key = ("synapse_requests_total", tuple(sorted(labels.items())))
        delta = value - before.get(key, 0.0)
        if delta > 0:
            served_by[labels.get("deployment", "?")] = (
                served_by.get(labels.get("deployment", "?"), 0) + delta
            )
    fell_back = total(after, "synapse_fallbacks_total", from_model=group) - total(
        before, "synapse_fallbacks_total", from_model=group
    )
    return r.status, r.seconds, served_by | {"__fallbacks__": fell_back}


def _chat_group(ctx: Ctx) -> str:
    return ctx.model(provider=("hosted_vllm",), mode=None, default="llama3.1-8b", group=True)


def p3_llm_primary(ctx: Ctx) -> Check:
    from synapse.ops.output import verdict

    group = _chat_group(ctx)
    status, seconds, moved = _chat_via_gateway(ctx, group)
    fallbacks = moved.pop("__fallbacks__")
    return verdict(
        "LLM via gateway → vLLM",
        status == 200 and fallbacks == 0,
        f"HTTP {status}, {seconds:.2f} s",
        f"served by {', '.join(moved) or '?'}; fallbacks {fallbacks:g}",
    )


def p3_fallback(ctx: Ctx) -> list[Check]:
    """Scale vLLM to 0, ask for the chat group, expect the fallback; then scale vLLM back."""
    from synapse.ops.output import failed, verdict

    name = "vllm-inference"
    dep = ctx.kube.deployment(ctx.ns, name)
    if dep is None:
        return [failed("fallback: kill vLLM", "no deployment", f"{ctx.ns}/{name} not found")]
    replicas = dep.spec.replicas if dep.spec and dep.spec.replicas is not None else 1
    group = _chat_group(ctx)
    checks = []
    try:
        ctx.kube.scale(ctx.ns, name, 0)
        ctx.kube.wait_rollouts(ctx.ns, [name], timeout=120)
        status, seconds, moved = _chat_via_gateway(ctx, group)
        fallbacks = moved.pop("__fallbacks__")
        checks.append(
            verdict(
                "fallback: kill vLLM → Ollama",
                status == 200 and fallbacks >= 1,
                f"HTTP {status}, {seconds:.2f} s",
                f"fallbacks {fallbacks:g}; served by {', '.join(moved) or '?'}",
            )
        )
    finally:
        checks.append(restore_replicas(ctx, name, replicas))
    return checks


def restore_replicas(ctx: Ctx, name: str, replicas: int) -> Check:
    from synapse.ops.output import verdict

    ctx.kube.scale(ctx.ns, name, replicas)
    states = ctx.kube.wait_rollouts(ctx.ns, [name], timeout=ctx.args.restore_timeout)
    st = states[name]
    return verdict(f"restore {name}", st.done, f"{replicas} replicas", st.message)


def p3_cronjob(ctx: Ctx) -> Check:
    """The LiteLLM restart CronJob, when LiteLLM is what runs; Synapse needs no such thing."""
    from lightkube.resources.batch_v1 import CronJob

    from synapse.ops.output import passed, verdict

    if ctx.kube.deployment(ctx.ns, "litellm-proxy") is None:
        return passed(
            "CronJob or equivalent",
            "not needed",
            "gateway is Synapse (no LiteLLM leak to work around)",
        )
    cj = ctx.kube.get(CronJob, "litellm-restart", ctx.ns)
    schedule = cj.spec.schedule if cj is not None and cj.spec else None
    return verdict(
        "CronJob or equivalent", schedule == "0 4 * * *", schedule or "missing", "litellm-restart"
    )


def p3_gateway_memory(ctx: Ctx) -> Check:
    """Each gateway pod's memory against its container limit."""
    from lightkube.utils.quantity import parse_quantity

    from synapse.ops.output import Check
    from synapse.ops.probes import memory_check

    dep = ctx.kube.deployment(ctx.ns, "synapse")
    limit = 0.0
    for c in (
        dep.spec.template.spec.containers if dep and dep.spec and dep.spec.template.spec else []
    ):
        lim = (c.resources.limits if c.resources else None) or {}
        limit += float(parse_quantity(lim.get("memory", "0")) or 0)
    if not limit:
        return Check(
            "gateway memory", "skip", "no limit", "the synapse container has no memory limit"
        )
    replicas = (dep.spec.replicas if dep and dep.spec else None) or 1
    return memory_check("gateway memory", ctx.kube, ctx.ns, limit * replicas, prefix="synapse-")


def p3_overhead(ctx: Ctx) -> Check:
    """Same /api/embed request to Ollama and through the gateway's Ollama port, interleaved."""
    from synapse.ops.output import verdict
    from synapse.ops.probes import GATEWAY_OLLAMA_URL, OLLAMA_URL, median_ms

    direct, via = ctx.ep(OLLAMA_URL), ctx.ep(GATEWAY_OLLAMA_URL)
    body = {"model": _embed_model(ctx), "input": "test"}
    direct.post_json("/api/embed", body)
    via.post_json("/api/embed", {**body, "model": _embed_model(ctx, group=True)})
    d, g = [], []
    for _ in range(max(1, ctx.args.samples)):
        for ep, out, model in ((direct, d, body["model"]), (via, g, _embed_model(ctx, group=True))):
            started = time.perf_counter()
            ep.post_json("/api/embed", {**body, "model": model})
            out.append(time.perf_counter() - started)
    delta = median_ms(g) - median_ms(d)
    return verdict(
        "routing overhead < 20ms",
        delta < 20,
        f"{delta:+.1f} ms",
        f"p50 direct {median_ms(d):.1f} ms, via gateway {median_ms(g):.1f} ms, {len(d)} each",
        overhead_ms=delta,
    )


# -- phase 4: speech -----------------------------------------------------------------------------


def p4_pods(ctx: Ctx) -> list[Check]:
    from synapse.ops.probes import pods_ready

    return [pods_ready(ctx.kube, ctx.ns, "speaches-stt"), pods_ready(ctx.kube, ctx.ns, "piper-tts")]


def p4_speech(ctx: Ctx) -> list[Check]:
    """Text → speech → text through the gateway: the TTS output is the STT input."""
    from synapse.ops.output import failed, verdict
    from synapse.ops.probes import keyed_hint

    tts = ctx.model(provider=("openai",), mode="audio_speech", default="piper-tts", group=True)
    stt = ctx.model(
        provider=("openai",), mode="audio_transcription", default="whisper-large-v3", group=True
    )
    sentence = "Hello world"
    r = ctx.gateway.request(
        "POST",
        "/v1/audio/speech",
        json_body={"model": tts, "input": sentence, "voice": "default", "response_format": "wav"},
        headers=ctx.headers(),
        timeout=300.0,
    )
    ctype = r.headers.get("content-type", "")
    ok = (
        r.status_code == 200
        and len(r.content) > 44
        and ("audio" in ctype or r.content[:4] == b"RIFF")
    )
    checks = [
        verdict(
            "TTS via gateway",
            ok,
            f"HTTP {r.status_code}, {len(r.content)} bytes",
            ctype + keyed_hint(r.status_code, ctx.gateway),
        )
    ]
    if not ok:
        return [*checks, failed("STT via gateway", "no audio", "needs the TTS output as input")]
    s = ctx.gateway.request(
        "POST",
        "/v1/audio/transcriptions",
        files={"file": ("hello.wav", r.content, "audio/wav")},
        data={"model": stt},
        headers=ctx.headers(),
        timeout=900.0,
    )
    text = ""
    if s.status_code == 200:
        try:
            text = str(s.json().get("text", ""))
        except ValueError:
            text = s.text
    checks.append(
        verdict(
            "STT via gateway",
            s.status_code == 200 and bool(text.strip()),
            f"HTTP {s.status_code}",
            f"{text.strip()[:80]!r}"
            + ("" if "hello" in text.lower() else " (round trip lost the words)"),
        )
    )
    return checks


def p4_memory(ctx: Ctx) -> Check:
    from synapse.ops.probes import memory_check

    return memory_check("memory within budget", ctx.kube, ctx.ns, 140 * GI)


# -- phase 5: security + monitoring --------------------------------------------------------------


def p5_policies(ctx: Ctx) -> Check:
    from lightkube.resources.networking_v1 import NetworkPolicy

    from synapse.ops.output import verdict

    policies = ctx.kube.list(NetworkPolicy, ctx.ns)
    deny = [
        p.metadata.name
        for p in policies
        if p.spec
        and not (p.spec.podSelector.matchLabels or p.spec.podSelector.matchExpressions)
        and "Ingress" in (p.spec.policyTypes or [])
        and not p.spec.ingress
    ]
    return verdict(
        "NetworkPolicies active",
        len(policies) >= 3 and bool(deny),
        f"{len(policies)} policies",
        f"default deny: {', '.join(deny) or 'none'}; "
        + ", ".join(p.metadata.name for p in policies),
    )


def _probe(ctx: Ctx, ns: str, url: str, max_time: float) -> Any:
    from synapse.ops.incluster import CURL_IMAGE, run_probe

    return run_probe(ctx.kube, ns, url, image=ctx.args.curl_image or CURL_IMAGE, max_time=max_time)


def p5_ollama_blocked(ctx: Ctx) -> Check:
    from synapse.ops.output import verdict
    from synapse.ops.probes import OLLAMA_URL

    ns = ctx.args.outside_namespace
    probe = _probe(ctx, ns, f"{OLLAMA_URL}/", 5)
    return verdict(
        "direct Ollama blocked from outside ns",
        probe.exit_code != 0 or (probe.http_code or 0) >= 400,
        probe.describe(),
        f"from {ns} (pod {probe.pod})",
    )


def p5_gateway_reachable(ctx: Ctx) -> list[Check]:
    from synapse.ops.output import verdict
    from synapse.ops.probes import GATEWAY_OLLAMA_URL, GATEWAY_URL

    ns = ctx.args.consumer_namespace
    out = []
    for label, url in (
        ("gateway API", f"{GATEWAY_URL}/health/liveliness"),
        ("gateway Ollama port", f"{GATEWAY_OLLAMA_URL}/"),
    ):
        probe = _probe(ctx, ns, url, 10)
        ms = f", {probe.seconds * 1000:.0f} ms" if probe.seconds is not None else ""
        out.append(
            verdict(
                f"{label} from {ns}", probe.ok, probe.describe() + ms, f"{url} (pod {probe.pod})"
            )
        )
    return out


def p5_ingress(ctx: Ctx) -> Check:
    from lightkube.resources.networking_v1 import Ingress

    from synapse.ops.output import failed
    from synapse.ops.probes import http_check

    url = ctx.args.ingress_url
    if not url:
        hosts = [
            r.host
            for ing in ctx.kube.list(Ingress, ctx.ns)
            for r in (ing.spec.rules if ing.spec else None) or []
            if r.host
        ]
        if not hosts:
            return failed("ingress works", "no ingress", f"no Ingress with a host in {ctx.ns}")
        url = f"https://{hosts[0]}"
    return http_check("ingress works", ctx.ep(url), "/health/readiness")


def _prometheus(ctx: Ctx) -> Endpoint:
    from synapse.ops.probes import PROMETHEUS_URL

    return ctx.ep(ctx.args.prometheus_url or PROMETHEUS_URL)


def _rule_alerts(ctx: Ctx) -> list[str]:
    from lightkube.generic_resource import create_namespaced_resource

    rule = create_namespaced_resource(
        "monitoring.coreos.com", "v1", "PrometheusRule", "prometheusrules", verbs=["get", "list"]
    )
    obj = ctx.kube.get(rule, "synapse-alerts", ctx.ns)
    if obj is None:
        return []
    return [
        str(r["alert"])
        for g in obj.get("spec", {}).get("groups", [])
        for r in g.get("rules", [])
        if r.get("alert")
    ]


def p5_prometheus_rules(ctx: Ctx) -> Check:
    from synapse.ops.prometheus import rules_check

    return rules_check(_prometheus(ctx), _rule_alerts(ctx))


def p5_prometheus_targets(ctx: Ctx) -> Check:
    from synapse.ops.prometheus import targets_check

    return targets_check(_prometheus(ctx), "synapse", ctx.ns)


def p5_alerts(ctx: Ctx) -> Check:
    from lightkube.generic_resource import create_namespaced_resource

    from synapse.ops.output import failed, passed

    rule = create_namespaced_resource(
        "monitoring.coreos.com", "v1", "PrometheusRule", "prometheusrules", verbs=["get", "list"]
    )
    obj = ctx.kube.get(rule, "synapse-alerts", ctx.ns)
    if obj is None:
        return failed("alert rules loaded", "missing", f"PrometheusRule {ctx.ns}/synapse-alerts")
    names = [
        r.get("alert") for g in obj.get("spec", {}).get("groups", []) for r in g.get("rules", [])
    ]
    return passed(
        "alert rules loaded",
        f"{len([n for n in names if n])} alerts",
        ", ".join(n for n in names if n),
    )


PHASES: dict[int, list[tuple[str, Step, bool]]] = {
    1: [
        ("pods ollama", p1_pods, False),
        ("pvc ollama-models", p1_pvc, False),
        ("PVCs fit the disk", p1_disk, False),
        ("models present", p1_models, False),
        ("embedding works", p1_embedding, False),
        ("embedding latency < 100ms", p1_embedding_latency, False),
        ("LLM chat works (CPU)", p1_chat, False),
        ("memory ollama < 64Gi", p1_memory, False),
    ],
    2: [
        ("RuntimeClass nvidia", p2_preflight_runtime, False),
        ("nvidia.com/gpu free for vLLM", p2_preflight_gpu, False),
        ("pods vllm-inference", p2_pods, False),
        ("pvc vllm-model-cache", p2_pvc, False),
        ("GPU allocated", p2_gpu, False),
        ("chat completion works", p2_chat, False),
        ("tool call (tool_choice auto)", p2_tools, False),
        ("tokens/s > 100", p2_tokens, False),
        ("GPU VRAM within budget", p2_vram, False),
        ("model survives restart", p2_restart, True),
    ],
    3: [
        ("pods synapse", p3_pods, False),
        ("/health returns OK", p3_health, False),
        ("/v1/models lists routes", p3_models, False),
        ("embedding via gateway", p3_embedding, False),
        ("LLM via gateway → vLLM", p3_llm_primary, False),
        ("fallback: kill vLLM → Ollama", p3_fallback, True),
        ("CronJob or equivalent", p3_cronjob, False),
        ("gateway memory", p3_gateway_memory, False),
        ("routing overhead < 20ms", p3_overhead, False),
    ],
    4: [
        ("pods speech", p4_pods, False),
        ("TTS and STT via gateway", p4_speech, False),
        ("memory within budget", p4_memory, False),
    ],
    5: [
        ("NetworkPolicies active", p5_policies, False),
        ("direct Ollama blocked from outside ns", p5_ollama_blocked, False),
        ("gateway reachable from consumers", p5_gateway_reachable, False),
        ("ingress works", p5_ingress, False),
        ("alert rules loaded", p5_alerts, False),
        ("alert rules loaded in Prometheus", p5_prometheus_rules, False),
        ("Prometheus scrapes synapse", p5_prometheus_targets, False),
    ],
}
# What must hold before a phase is deployed (`make gpu-preflight` runs phase 2's).
PREFLIGHT: dict[int, list[tuple[str, Step, bool]]] = {
    2: [
        ("RuntimeClass nvidia", p2_preflight_runtime, False),
        ("nvidia.com/gpu free for vLLM", p2_preflight_gpu, False),
    ],
}
