"""`make bench-soak`: 100k requests through one Synapse process, RSS recorded every N requests.

Requests rotate over every case (chat, streaming, embeddings, Ollama API) in chunks of N, each
chunk a bounded wrk run (stops after N responses, or at its time limit). RSS growth is measured
from the first chunk (warm: pools, caches and metric label sets exist) to the end.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import baseline
from load import CASES, run_wrk
from procs import cpu_seconds, exit_on_sigterm, free_port, rss_bytes
from run_bench import BENCH, MASTER_KEY, ROOT, backend_env, cpu_plan, synapse_service
from stub import Nginx

MB = 1024 * 1024


def plot(samples: list[dict], png: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    ax.plot([s["requests"] for s in samples], [s["rss_mb"] for s in samples], marker=".")
    ax.set_xlabel("requests served")
    ax.set_ylabel("RSS (MB)")
    ax.set_ylim(bottom=0)
    ax.axhline(80, color="tab:red", linestyle="--", label="80 MB target")
    ax.legend()
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)


def summarize(samples: list[dict], total: int, errors: int) -> dict:
    warm = samples[1] if len(samples) > 1 else samples[0]
    return {
        "requests": total,
        "errors": errors,
        "idle_mb": samples[0]["rss_mb"],
        "start_mb": warm["rss_mb"],
        "end_mb": samples[-1]["rss_mb"],
        "peak_mb": max(s["rss_mb"] for s in samples),
        "growth_mb": samples[-1]["rss_mb"] - warm["rss_mb"],
        "growth_from_idle_mb": samples[-1]["rss_mb"] - samples[0]["rss_mb"],
    }


def write_md(result: dict, out: Path) -> Path:
    rows = "\n".join(
        f"| {s['requests']:,} | {s['case']} | {s['rss_mb']:.1f} | {s['rps']:,.0f} | {s['errors']} |"
        for s in result["samples"]
    )
    md = out / f"{result['stem']}.md"
    md.write_text(
        f"# Synapse soak — {result['date']} ({result['commit']})\n\n"
        f"`make bench-soak` (bench/soak.py): {result['requests']:,} requests through one "
        f"Synapse process (c={result['connections']}, cases rotated every "
        f"{result['every']:,} requests), RSS from /proc after each chunk. Plot "
        f"`{result['stem']}.png`.\n\n"
        f"- RSS idle {result['idle_mb']:.1f} MB; after the first chunk {result['start_mb']:.1f} MB;"
        f" at the end {result['end_mb']:.1f} MB; peak {result['peak_mb']:.1f} MB.\n"
        f"- Growth over the soak (first chunk → end): {result['growth_mb']:+.1f} MB "
        f"(target < 5 MB: {'PASS' if result['growth_mb'] < 5 else 'FAIL'}); from idle: "
        f"{result['growth_from_idle_mb']:+.1f} MB. Peak ≤ 80 MB: "
        f"{'PASS' if result['peak_mb'] <= 80 else 'FAIL'}.\n"
        f"- Errors (wrk: non-2xx, socket, timeouts): {result['errors']}; gateway CPU "
        f"{result['cpu_ms_per_req']:.3f} ms/request; wall {result['wall_s']:.0f} s.\n\n"
        "| requests | last case | RSS MB | req/s | errors |\n|---|---|---|---|---|\n"
        f"{rows}\n"
    )
    return md


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--requests", type=int, default=100_000)
    ap.add_argument("--every", type=int, default=5_000, help="RSS sample interval (requests)")
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--chunk-timeout", type=float, default=120.0, help="seconds per chunk, max")
    ap.add_argument("--out", type=Path, default=BENCH / "results")
    ap.add_argument("--date", default=dt.date.today().isoformat())
    ap.add_argument("--bin", type=Path, default=Path(sys.executable).parent)
    ap.add_argument("--no-pin", action="store_true")
    ap.add_argument(
        "--rev", default="", help="soak this git revision (as make bench's synapse@<rev>)"
    )
    args = ap.parse_args(argv)
    exit_on_sigterm()
    gw_cpus, lg_cpus = cpu_plan(not args.no_pin)
    run_dir = Path(tempfile.mkdtemp(prefix="synapse-soak-"))
    nginx = Nginx(run_dir, free_port(), cpus=lg_cpus)
    src = baseline.export(ROOT, args.rev, run_dir / "baseline") if args.rev else None
    name = baseline.path_name(args.rev) if args.rev else "synapse"
    nginx.start()
    svc = synapse_service(run_dir, backend_env(nginx), gw_cpus, args.bin, name=name, src=src)
    samples: list[dict] = []
    total = errors = 0
    t0 = time.monotonic()
    try:
        svc.start()
        time.sleep(1.0)
        cpu0 = cpu_seconds(svc.pid)
        samples.append(
            {
                "requests": 0,
                "case": "idle",
                "rss_mb": rss_bytes(svc.pid) / MB,
                "rps": 0.0,
                "errors": 0,
                "t": 0.0,
            }
        )
        chunk = 0
        while total < args.requests and chunk < 10 * (args.requests // args.every + 1):
            case = CASES[chunk % len(CASES)]
            chunk += 1
            ports = svc.ports  # type: ignore[attr-defined]
            base = f"http://127.0.0.1:{ports[case.listener]}"
            key = MASTER_KEY if case.listener == "api" else None
            want = min(args.every, args.requests - total)
            res = run_wrk(
                base,
                case.path,
                case.body_file(run_dir),
                args.connections,
                args.chunk_timeout,
                key=key,
                cpus=lg_cpus,
                max_requests=want,
            )
            total += res["requests"]
            errors += res["errors"]
            samples.append(
                {
                    "requests": total,
                    "case": case.name,
                    "rss_mb": rss_bytes(svc.pid) / MB,
                    "rps": res["rps"],
                    "errors": res["errors"],
                    "t": time.monotonic() - t0,
                }
            )
            print(
                f"  {total:>7,} requests  {case.name:18s} RSS {samples[-1]['rss_mb']:6.1f} MB  "
                f"{res['rps']:7,.0f} req/s  err {res['errors']}",
                flush=True,
            )
        cpu = cpu_seconds(svc.pid) - cpu0
    finally:
        code = svc.stop()
        nginx.stop()
    # The bench report reads the newest `<date>-soak.json` (today's tree); a revision's soak
    # goes beside it.
    stem = f"{args.date}-soak" + (f"-{args.rev}" if args.rev else "")
    result = {
        "date": args.date,
        "stem": stem,
        "commit": baseline.describe(ROOT, args.rev or "HEAD").split(" ")[0],
        "every": args.every,
        "connections": args.connections,
        "samples": samples,
        "exit_code": code,
        "wall_s": time.monotonic() - t0,
        "cpu_ms_per_req": 1000 * cpu / total if total else 0.0,
        **summarize(samples, total, errors),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{stem}.json").write_text(json.dumps(result, indent=1))
    plot(
        samples,
        args.out / f"{stem}.png",
        f"{name} RSS over {total:,} requests ({args.date}, {result['commit']})",
    )
    md = write_md(result, args.out)
    print(f"wrote {md}")
    shutil.rmtree(run_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
