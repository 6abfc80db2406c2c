"""`synapse bench`: measure a live deployment against the plan's targets.

Embedding latency (one text, sequential) and batch throughput, chat time to first token and
tokens/s (streaming), and the routing overhead: the same request through the gateway minus
straight to the backend. Thresholds from the build plan are shown pass/fail; the exit code is
non-zero when one fails or requests error. Statistics helpers here are reused by `bench/`.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

DEFAULT_TEXT = "The food was delicious and the waiter was kind."
DEFAULT_PROMPT = "Write three sentences about the sea."

# The build plan's targets: (key, label, unit, comparison, default limit).
EMBED_LIMIT_MS = 100.0
MIN_TOKENS_PER_S = 100.0
MAX_OVERHEAD_MS = 20.0


# ---------------------------------------------------------------- statistics


def percentile(samples: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default method); q in [0, 100]."""
    if not samples:
        raise ValueError("percentile of no samples")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} outside [0, 100]")
    data = sorted(samples)
    pos = (len(data) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def summarize(samples: Sequence[float]) -> dict[str, float | int]:
    """n, min, mean, p50, p95, p99, max of a sample list (empty → just n=0)."""
    if not samples:
        return {"n": 0}
    return {
        "n": len(samples),
        "min": min(samples),
        "mean": sum(samples) / len(samples),
        "p50": percentile(samples, 50),
        "p95": percentile(samples, 95),
        "p99": percentile(samples, 99),
        "max": max(samples),
    }


@dataclass(frozen=True)
class Threshold:
    """One pass/fail line: `value` compared with `limit` ("<" or ">"); None value → n/a."""

    name: str
    value: float | None
    limit: float
    op: str
    unit: str

    @property
    def passed(self) -> bool | None:
        if self.value is None:
            return None
        return self.value < self.limit if self.op == "<" else self.value > self.limit

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "value": self.value,
            "limit": self.limit,
            "op": self.op,
            "unit": self.unit,
            "pass": self.passed,
        }


def evaluate(
    results: dict[str, Any],
    embed_limit_ms: float = EMBED_LIMIT_MS,
    min_tokens_per_s: float = MIN_TOKENS_PER_S,
    max_overhead_ms: float = MAX_OVERHEAD_MS,
) -> list[Threshold]:
    """The plan's thresholds from a results dict (missing measurements come out n/a)."""

    def get(*keys: str) -> float | None:
        node: Any = results
        for key in keys:
            if not isinstance(node, dict) or key not in node:
                return None
            node = node[key]
        return float(node) if isinstance(node, int | float) else None

    return [
        Threshold(
            "embedding latency p50 (gateway)",
            get("embedding", "gateway", "latency_ms", "p50"),
            embed_limit_ms,
            "<",
            "ms",
        ),
        Threshold(
            "chat tokens/s p50 (gateway)",
            get("chat", "gateway", "tokens_per_s", "p50"),
            min_tokens_per_s,
            ">",
            "tok/s",
        ),
        Threshold("routing overhead p50", get("overhead_ms"), max_overhead_ms, "<", "ms"),
    ]


def overhead(results: dict[str, Any]) -> float | None:
    """Gateway - direct p50: embeddings if both measured, else chat time to first token."""
    for kind, metric in (("embedding", "latency_ms"), ("chat", "ttft_ms")):
        section = results.get(kind, {})
        try:
            gw = section["gateway"][metric]["p50"]
            direct = section["direct"][metric]["p50"]
        except (KeyError, TypeError):
            continue
        return float(gw) - float(direct)
    return None


# ---------------------------------------------------------------- HTTP measurements


@dataclass
class StreamResult:
    first_s: float | None  # seconds from send to the first content chunk
    end_s: float  # seconds from send to the end of the stream
    chunks: int  # content-bearing chunks seen
    completion_tokens: int | None  # from the final usage chunk, when the server sends one

    @property
    def tokens(self) -> int:
        return self.completion_tokens if self.completion_tokens else self.chunks

    @property
    def decode_tokens_per_s(self) -> float | None:
        """Tokens after the first over the time after the first (the generation rate)."""
        if self.first_s is None or self.tokens < 2 or self.end_s <= self.first_s:
            return None
        return (self.tokens - 1) / (self.end_s - self.first_s)


async def read_sse(resp: Any, t0: float) -> StreamResult:
    """Read an OpenAI SSE stream from an aiohttp response, timing the first content chunk."""
    import orjson

    first: float | None = None
    chunks = 0
    usage_tokens: int | None = None
    async for raw in resp.content:
        line = raw.strip()
        if not line.startswith(b"data:"):
            continue
        data = line[5:].strip()
        if data == b"[DONE]":
            break
        try:
            event = orjson.loads(data)
        except orjson.JSONDecodeError:
            continue
        usage = event.get("usage")
        if isinstance(usage, dict) and usage.get("completion_tokens"):
            usage_tokens = int(usage["completion_tokens"])
        for choice in event.get("choices") or ():
            delta = choice.get("delta") or {}
            if delta.get("content") or delta.get("reasoning_content"):
                chunks += 1
                if first is None:
                    first = time.perf_counter() - t0
    return StreamResult(first, time.perf_counter() - t0, chunks, usage_tokens)


def _headers(key: str | None) -> dict[str, str]:
    out = {"Content-Type": "application/json"}
    if key:
        out["Authorization"] = f"Bearer {key}"
    return out


async def embed_latency(
    session: Any, base: str, model: str, key: str | None, n: int, warmup: int, text: str
) -> dict[str, Any]:
    """Sequential single-text embeddings; latency in ms."""
    url = f"{base.rstrip('/')}/embeddings"
    body = {"model": model, "input": text, "encoding_format": "float"}
    lat: list[float] = []
    errors: list[str] = []
    for i in range(warmup + n):
        t0 = time.perf_counter()
        try:
            async with session.post(url, json=body, headers=_headers(key)) as resp:
                payload = await resp.read()
                ok = resp.status == 200
                status = resp.status
        except Exception as exc:
            ok, status, payload = False, 0, str(exc).encode()
        elapsed = (time.perf_counter() - t0) * 1000
        if i < warmup:
            continue
        if ok:
            lat.append(elapsed)
        else:
            errors.append(f"{status}: {payload[:200].decode(errors='replace')}")
    return {
        "latency_ms": summarize(lat),
        "samples_ms": lat,
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
    }


async def embed_throughput(
    session: Any,
    base: str,
    model: str,
    key: str | None,
    batches: int,
    batch_size: int,
    concurrency: int,
    text: str,
) -> dict[str, Any]:
    """`batches` requests of `batch_size` texts, `concurrency` at a time; texts/s overall."""
    import asyncio

    url = f"{base.rstrip('/')}/embeddings"
    body = {
        "model": model,
        "input": [f"{text} #{i}" for i in range(batch_size)],
        "encoding_format": "float",
    }
    sem = asyncio.Semaphore(max(1, concurrency))
    errors = 0
    lat: list[float] = []

    async def one() -> None:
        nonlocal errors
        async with sem:
            t0 = time.perf_counter()
            try:
                async with session.post(url, json=body, headers=_headers(key)) as resp:
                    await resp.read()
                    if resp.status != 200:
                        errors += 1
                        return
            except Exception:
                errors += 1
                return
            lat.append((time.perf_counter() - t0) * 1000)

    t0 = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(batches)))
    wall = time.perf_counter() - t0
    done = len(lat) * batch_size
    return {
        "batch_size": batch_size,
        "batches": batches,
        "concurrency": concurrency,
        "texts_per_s": done / wall if wall > 0 else 0.0,
        "batch_latency_ms": summarize(lat),
        "errors": errors,
    }


async def chat_stream(
    session: Any,
    base: str,
    model: str,
    key: str | None,
    n: int,
    warmup: int,
    max_tokens: int,
    prompt: str,
) -> dict[str, Any]:
    """Sequential streaming chats: time to first token (ms) and decode tokens/s per request."""
    url = f"{base.rstrip('/')}/chat/completions"
    body = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    ttft: list[float] = []
    rate: list[float] = []
    e2e: list[float] = []
    tokens: list[int] = []
    errors: list[str] = []
    for i in range(warmup + n):
        t0 = time.perf_counter()
        try:
            async with session.post(url, json=body, headers=_headers(key)) as resp:
                if resp.status != 200:
                    detail = (await resp.read())[:200].decode(errors="replace")
                    raise RuntimeError(f"{resp.status}: {detail}")
                res = await read_sse(resp, t0)
        except Exception as exc:
            if i >= warmup:
                errors.append(str(exc) or type(exc).__name__)
            continue
        if i < warmup:
            continue
        if res.first_s is None:
            errors.append("stream carried no content")
            continue
        ttft.append(res.first_s * 1000)
        tokens.append(res.tokens)
        e2e.append(res.tokens / res.end_s if res.end_s > 0 else 0.0)
        if res.decode_tokens_per_s is not None:
            rate.append(res.decode_tokens_per_s)
    return {
        "ttft_ms": summarize(ttft),
        "tokens_per_s": summarize(rate),
        "e2e_tokens_per_s": summarize(e2e),
        "tokens": summarize(tokens),
        "ttft_samples_ms": ttft,
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    import aiohttp

    key = args.key or os.environ.get("SYNAPSE_MASTER_KEY")
    gw = args.url.rstrip("/")
    gw_v1 = gw if gw.endswith("/v1") else f"{gw}/v1"
    timeout = aiohttp.ClientTimeout(total=args.timeout)
    results: dict[str, Any] = {"gateway": gw, "started": time.time()}
    async with aiohttp.ClientSession(
        timeout=timeout, connector=aiohttp.TCPConnector(limit=max(8, args.concurrency))
    ) as s:
        if not args.skip_embed:
            emb: dict[str, Any] = {"model": args.embed_model}
            emb["gateway"] = await embed_latency(
                s, gw_v1, args.embed_model, key, args.requests, args.warmup, args.text
            )
            if args.direct_embed_url:
                emb["direct"] = await embed_latency(
                    s,
                    args.direct_embed_url,
                    args.direct_embed_model or args.embed_model,
                    args.direct_key,
                    args.requests,
                    args.warmup,
                    args.text,
                )
                emb["agreement"] = await _agreement(s, args, gw_v1, key)
            emb["batch"] = await embed_throughput(
                s,
                gw_v1,
                args.embed_model,
                key,
                args.batches,
                args.batch_size,
                args.concurrency,
                args.text,
            )
            results["embedding"] = emb
        if not args.skip_chat:
            chat: dict[str, Any] = {"model": args.chat_model}
            chat["gateway"] = await chat_stream(
                s,
                gw_v1,
                args.chat_model,
                key,
                args.chat_requests,
                1,
                args.max_tokens,
                args.prompt,
            )
            if args.direct_chat_url:
                chat["direct"] = await chat_stream(
                    s,
                    args.direct_chat_url,
                    args.direct_chat_model or args.chat_model,
                    args.direct_key,
                    args.chat_requests,
                    1,
                    args.max_tokens,
                    args.prompt,
                )
            results["chat"] = chat
    results["overhead_ms"] = overhead(results)
    checks = evaluate(results, args.embed_limit_ms, args.min_tokens_per_s, args.max_overhead_ms)
    results["thresholds"] = [c.as_dict() for c in checks]
    results["errors"] = sum(
        section[p].get("errors", 0)
        for section in (results.get("embedding", {}), results.get("chat", {}))
        for p in ("gateway", "direct", "batch")
        if isinstance(section.get(p), dict)
    )
    results["ok"] = results["errors"] == 0 and all(c.passed is not False for c in checks)
    return results


async def _agreement(session: Any, args: argparse.Namespace, gw_v1: str, key: str | None) -> dict:
    """The gateway's vectors against the direct backend's for the same texts (one space?)."""
    from synapse.embeddings import agreement

    try:
        ours = await agreement.vectors(session, gw_v1, args.embed_model, _headers(key))
        theirs = await agreement.vectors(
            session,
            args.direct_embed_url,
            args.direct_embed_model or args.embed_model,
            _headers(args.direct_key),
        )
    except Exception as exc:  # reported, not fatal: latency figures still stand
        return {"min": None, "mean": None, "error": str(exc)[:300]}
    return agreement.compare(ours, theirs)


# ---------------------------------------------------------------- output


def _fmt(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def render(results: dict[str, Any]) -> None:
    """Human tables on stdout."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    lat = Table(title=f"synapse bench → {results['gateway']}")
    for col in ("measurement", "path", "n", "p50", "p95", "p99", "errors"):
        lat.add_column(col, justify="left" if col in ("measurement", "path") else "right")
    for kind, metric, label in (
        ("embedding", "latency_ms", "embedding latency (ms)"),
        ("chat", "ttft_ms", "time to first token (ms)"),
        ("chat", "tokens_per_s", "decode tokens/s"),
    ):
        for path in ("gateway", "direct"):
            node = results.get(kind, {}).get(path)
            if not node:
                continue
            st = node[metric]
            lat.add_row(
                label,
                path,
                str(st.get("n", 0)),
                _fmt(st.get("p50")),
                _fmt(st.get("p95")),
                _fmt(st.get("p99")),
                str(node["errors"]),
            )
    batch = results.get("embedding", {}).get("batch")
    if batch:
        lat.add_row(
            f"embedding throughput (batch {batch['batch_size']}, c={batch['concurrency']})",
            "gateway",
            str(batch["batches"]),
            f"{batch['texts_per_s']:,.1f} texts/s",
            "",
            "",
            str(batch["errors"]),
        )
    console.print(lat)
    agree = results.get("embedding", {}).get("agreement")
    if agree:
        console.print(
            f"vector agreement gateway vs direct (cosine over the same texts): "
            f"min {_fmt(agree.get('min'), 5)}, mean {_fmt(agree.get('mean'), 5)}"
            + (f" ({agree['error']})" if agree.get("error") else "")
        )
    th = Table(title="build plan thresholds")
    for col in ("check", "value", "target", "result"):
        th.add_column(col)
    for t in results["thresholds"]:
        verdict = {True: "[green]PASS", False: "[red]FAIL", None: "[yellow]n/a"}[t["pass"]]
        th.add_row(
            t["name"],
            f"{_fmt(t['value'])} {t['unit']}",
            f"{t['op']} {t['limit']:g} {t['unit']}",
            verdict,
        )
    console.print(th)


def plot(results: dict[str, Any], path: str) -> None:
    """PNG: embedding latency distributions (gateway vs direct) and chat TTFT, with targets."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, kind, key, title, limit in (
        (axes[0], "embedding", "samples_ms", "embedding latency, one text", EMBED_LIMIT_MS),
        (axes[1], "chat", "ttft_samples_ms", "chat time to first token", None),
    ):
        section = results.get(kind, {})
        drawn = False
        for p, colour in (("gateway", "tab:blue"), ("direct", "tab:gray")):
            samples = sorted(section.get(p, {}).get(key) or [])
            if samples:
                ys = [(i + 1) / len(samples) for i in range(len(samples))]
                ax.step(samples, ys, where="post", label=p, color=colour)
                drawn = True
        if limit is not None:
            ax.axvline(limit, color="tab:red", linestyle="--", label=f"target {limit:g} ms")
        ax.set_title(title)
        ax.set_xlabel("ms")
        ax.set_ylabel("fraction of requests")
        if drawn or limit is not None:
            ax.legend(loc="lower right")
        if not drawn:
            ax.text(0.5, 0.5, "not measured", ha="center", transform=ax.transAxes)
    fig.suptitle(f"synapse bench: {results['gateway']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _strip_samples(results: dict[str, Any]) -> dict[str, Any]:
    """JSON output without raw sample lists unless asked (they dominate the size)."""
    out: dict[str, Any] = {}
    for k, v in results.items():
        if isinstance(v, dict):
            out[k] = _strip_samples(v)
        elif not k.endswith("samples_ms"):
            out[k] = v
    return out


def command(args: argparse.Namespace) -> int:
    import asyncio
    import json

    results = asyncio.run(run(args))
    if args.plot:
        plot(results, args.plot)
        results["plot"] = args.plot
    if args.json:
        print(json.dumps(results if args.samples else _strip_samples(results), indent=2))
    else:
        render(results)
        if args.plot:
            print(f"plot written to {args.plot}")
    return 0 if results["ok"] else 1


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "bench",
        help="measure a live deployment: embedding latency, chat TTFT and tokens/s, overhead",
        description=__doc__,
    )
    p.add_argument("--url", default="http://127.0.0.1:8000", help="gateway base URL")
    p.add_argument("--key", help="gateway API key (default: $SYNAPSE_MASTER_KEY)")
    p.add_argument(
        "--embed-model", default="mxbai-embed-large", help="embedding model group at the gateway"
    )
    p.add_argument("--chat-model", default="llama3.1-8b", help="chat model group at the gateway")
    p.add_argument(
        "--direct-embed-url", help="backend's OpenAI base URL, e.g. http://ollama:11434/v1"
    )
    p.add_argument("--direct-embed-model", help="model id at that backend (default: --embed-model)")
    p.add_argument("--direct-chat-url", help="backend's OpenAI base URL, e.g. http://vllm:8001/v1")
    p.add_argument("--direct-chat-model", help="model id at that backend (default: --chat-model)")
    p.add_argument("--direct-key", help="API key for the direct backends, if they need one")
    p.add_argument("-n", "--requests", type=int, default=50, help="single-text embedding requests")
    p.add_argument("--warmup", type=int, default=3, help="unmeasured requests first")
    p.add_argument("--batch-size", type=int, default=32, help="texts per batch request")
    p.add_argument("--batches", type=int, default=10, help="batch embedding requests")
    p.add_argument("--concurrency", type=int, default=4, help="batches in flight at once")
    p.add_argument(
        "--chat-requests", type=int, default=5, help="streamed chat requests (TTFT, tokens/s)"
    )
    p.add_argument("--max-tokens", type=int, default=128, help="tokens per chat answer")
    p.add_argument("--text", default=DEFAULT_TEXT, help="text embedded by every request")
    p.add_argument("--prompt", default=DEFAULT_PROMPT, help="user message of the chat requests")
    p.add_argument("--skip-embed", action="store_true", help="no embedding measurements")
    p.add_argument("--skip-chat", action="store_true", help="no chat measurements")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds per request")
    p.add_argument(
        "--embed-limit-ms",
        type=float,
        default=EMBED_LIMIT_MS,
        help="pass mark: single-embedding p50 below this (the plan's %(default)g ms)",
    )
    p.add_argument(
        "--min-tokens-per-s",
        type=float,
        default=MIN_TOKENS_PER_S,
        help="pass mark: chat tokens/s above this (the plan's %(default)g)",
    )
    p.add_argument(
        "--max-overhead-ms",
        type=float,
        default=MAX_OVERHEAD_MS,
        help="pass mark: gateway p50 minus direct p50 below this (the plan's %(default)g ms)",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--samples", action="store_true", help="include raw samples in --json")
    p.add_argument("--plot", metavar="PNG", help="write a latency plot (needs .[bench])")
    p.set_defaults(func=command)
