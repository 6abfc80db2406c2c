"""Markdown report and PNG plots from one `make bench` results dict (and the latest soak)."""

from __future__ import annotations

import json
from pathlib import Path

MB = 1024 * 1024
TARGET_ADDED_P50_MS = 0.5
TARGET_DIRECT_RATIO = 0.5  # Synapse ≥ 50 % of direct throughput at c=64
TARGET_LITELLM_RATIO = 20.0  # Synapse ≥ 20x LiteLLM throughput at c=64
TARGET_RSS_MB = 80.0
TARGET_GROWTH_MB = 5.0
RATIO_C = "64"
PATHS = ("direct", "synapse", "litellm")


def run(results: dict, path: str, case: str, conc: str) -> dict | None:
    return results["paths"].get(path, {}).get("cases", {}).get(case, {}).get("runs", {}).get(conc)


def ms(us: float | None) -> float | None:
    return None if us is None else us / 1000.0


def f(value: float | None, digits: int = 2, suffix: str = "") -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}{suffix}"


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def verdict(ok: bool | None) -> str:
    return {True: "PASS", False: "**FAIL**", None: "n/a"}[ok]


def added(results: dict, path: str, case: str, key: str) -> float | None:
    g, d = run(results, path, case, "1"), run(results, "direct", case, "1")
    return None if g is None or d is None else (g[key] - d[key]) / 1000.0


def rps(results: dict, path: str, case: str, conc: str) -> float | None:
    r = run(results, path, case, conc)
    return None if r is None else r["rps"]


def latest_soak(out_dir: Path) -> dict | None:
    files = sorted(out_dir.glob("*-soak.json"))
    return json.loads(files[-1].read_text()) if files else None


def targets(results: dict, soak: dict | None) -> list[tuple[str, str, str, bool | None]]:
    """(target, measured, source, pass) rows — the issue's targets as ratios from this run."""
    cases = list(results["meta"]["cases"])
    rows: list[tuple[str, str, str, bool | None]] = []
    worst_added = [(added(results, "synapse", c, "p50_us"), c) for c in cases]
    worst_added = [(v, c) for v, c in worst_added if v is not None]
    for v, c in worst_added:
        rows.append(
            (
                f"added latency p50 ≤ {TARGET_ADDED_P50_MS} ms ({c})",
                f"{v:.3f} ms",
                "c=1, Synapse - direct",
                v <= TARGET_ADDED_P50_MS,
            )
        )
    for c in cases:
        r = ratio(rps(results, "synapse", c, RATIO_C), rps(results, "direct", c, RATIO_C))
        if r is not None:
            rows.append(
                (
                    f"Synapse ≥ 50 % of direct req/s at c=64 ({c})",
                    f"{100 * r:.1f} %",
                    "wrk, one worker",
                    r >= TARGET_DIRECT_RATIO,
                )
            )
    for c in cases:
        r = ratio(rps(results, "synapse", c, RATIO_C), rps(results, "litellm", c, RATIO_C))
        if r is not None:
            rows.append(
                (
                    f"Synapse ≥ 20x LiteLLM req/s at c=64 ({c})",
                    f"{r:.1f}x",
                    "wrk, one worker each",
                    r >= TARGET_LITELLM_RATIO,
                )
            )
    syn = results["paths"].get("synapse", {})
    for label, key in (("idle", "rss_idle"), ("after the bench", "rss_after")):
        if key in syn:
            v = syn[key] / MB
            rows.append(
                (
                    f"RSS ≤ {TARGET_RSS_MB:g} MB ({label})",
                    f"{v:.1f} MB",
                    "/proc statm",
                    v <= TARGET_RSS_MB,
                )
            )
    if soak and soak.get("samples"):
        g = soak["growth_mb"]
        rows.append(
            (
                f"RSS growth < {TARGET_GROWTH_MB:g} MB over {soak['requests']:,} requests",
                f"{g:+.1f} MB (peak {soak['peak_mb']:.1f} MB)",
                f"soak {soak['date']}",
                g < TARGET_GROWTH_MB,
            )
        )
        rows.append(
            (
                f"RSS ≤ {TARGET_RSS_MB:g} MB during the soak",
                f"{soak['peak_mb']:.1f} MB",
                f"soak {soak['date']}",
                soak["peak_mb"] <= TARGET_RSS_MB,
            )
        )
    return rows


def md_table(head: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def sequential_table(results: dict) -> str:
    rows = []
    for case, title in results["meta"]["cases"].items():
        row = [title]
        for p in PATHS:
            r = run(results, p, case, "1")
            row.append("n/a" if r is None else f"{ms(r['p50_us']):.3f} / {ms(r['p99_us']):.3f}")
        for p in ("synapse", "litellm"):
            a50, a99 = added(results, p, case, "p50_us"), added(results, p, case, "p99_us")
            row.append("n/a" if a50 is None else f"{a50:+.3f} / {a99:+.3f}")
        rows.append(row)
    head = [
        "case",
        "direct p50/p99 ms",
        "Synapse p50/p99 ms",
        "LiteLLM p50/p99 ms",
        "Synapse added p50/p99 ms",
        "LiteLLM added p50/p99 ms",
    ]
    return md_table(head, rows)


def throughput_table(results: dict) -> str:
    rows = []
    for case, title in results["meta"]["cases"].items():
        for conc in map(str, results["meta"]["concurrency"]):
            d, s, lt = (rps(results, p, case, conc) for p in PATHS)
            errs = [run(results, p, case, conc) for p in PATHS]
            err = "/".join("-" if e is None else str(e["errors"]) for e in errs)
            sd, sl = ratio(s, d), ratio(s, lt)
            rows.append(
                [
                    title,
                    conc,
                    f(d, 0),
                    f(s, 0),
                    f(lt, 0),
                    "n/a" if sd is None else f"{100 * sd:.1f} %",
                    "n/a" if sl is None else f"{sl:.1f}x",
                    err,
                ]
            )
    head = [
        "case",
        "c",
        "direct req/s",
        "Synapse req/s",
        "LiteLLM req/s",
        "Synapse/direct",
        "Synapse/LiteLLM",
        "errors d/S/L",
    ]
    return md_table(head, rows)


def cpu_table(results: dict) -> str:
    rows = []
    for case, title in results["meta"]["cases"].items():
        row = [title]
        for p in PATHS:
            for conc in ("1", RATIO_C):
                r = run(results, p, case, conc)
                row.append(f(r.get("cpu_ms_per_req") if r else None, 3))
            r = run(results, p, case, RATIO_C)
            row.append(f(100 * r["cpu_util"] if r and r.get("cpu_util") else None, 0, " %"))
            if p != "direct":
                other = r.get("foreign_util") if r else None
                row.append(f(None if other is None else 100 * other, 0, " %"))
        rows.append(row)
    head = ["case"]
    for p in ("nginx", "Synapse", "LiteLLM"):
        head += [f"{p} ms/req c=1", f"{p} ms/req c=64", f"{p} core use c=64"]
        if p != "nginx":
            head.append(f"other load on {p}'s core c=64")
    return md_table(head, rows)


def process_table(results: dict) -> str:
    rows = []
    for p in ("synapse", "litellm"):
        info = results["paths"].get(p, {})
        if not info:
            rows.append([p, "not run", "", "", ""])
            continue
        if "error" in info:
            rows.append([p, "did not run: " + info["error"].splitlines()[0], "", "", ""])
            continue
        rows.append(
            [
                p,
                f(info.get("startup_s"), 1, " s"),
                f(info["rss_idle"] / MB if "rss_idle" in info else None, 1, " MB"),
                f(info["rss_after"] / MB if "rss_after" in info else None, 1, " MB"),
                str(info.get("exit_code")),
            ]
        )
    return md_table(
        ["gateway", "ready after", "RSS idle", "RSS after bench", "exit on SIGTERM"], rows
    )


def conns_table(results: dict) -> str:
    rows = []
    for case, title in results["meta"]["cases"].items():
        row = [title]
        for p in ("synapse", "litellm"):
            for conc in map(str, results["meta"]["concurrency"]):
                r = run(results, p, case, conc)
                row.append("n/a" if not r or "backend_conns" not in r else str(r["backend_conns"]))
        rows.append(row)
    head = ["case"] + [
        f"{p} c={c}" for p in ("Synapse", "LiteLLM") for c in results["meta"]["concurrency"]
    ]
    return md_table(head, rows)


def ttft_table(results: dict) -> str:
    from synapse.ops.bench import summarize

    rows, base = [], None
    for p in PATHS:
        t = results["paths"].get(p, {}).get("ttft")
        if not t or not t["ttft_ms"]:
            rows.append([p, "n/a", "n/a", "n/a", "n/a", str(t["errors"]) if t else "-"])
            continue
        s, tot = summarize(t["ttft_ms"]), summarize(t["total_ms"])
        if p == "direct":
            base = s
        add = f"{s['p50'] - base['p50']:+.3f} / {s['p99'] - base['p99']:+.3f}" if base else "n/a"
        rows.append(
            [
                p,
                str(s["n"]),
                f"{s['p50']:.3f} / {s['p99']:.3f}",
                add,
                f"{tot['p50']:.3f}",
                str(t["errors"]),
            ]
        )
    head = ["path", "n", "TTFT p50/p99 ms", "added p50/p99 ms", "whole stream p50 ms", "errors"]
    return md_table(head, rows)


def plot(results: dict, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases = results["meta"]["cases"]
    concs = results["meta"]["concurrency"]
    fig, axes = plt.subplots(2, len(cases), figsize=(4 * len(cases), 7.5), squeeze=False)
    colours = {"direct": "tab:gray", "synapse": "tab:blue", "litellm": "tab:orange"}
    for i, (case, title) in enumerate(cases.items()):
        ax = axes[0][i]
        for p in PATHS:
            ys = [rps(results, p, case, str(c)) for c in concs]
            pts = [(c, y) for c, y in zip(concs, ys, strict=True) if y]
            if pts:
                ax.plot(*zip(*pts, strict=True), marker="o", label=p, color=colours[p])
        ax.set_yscale("log")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("connections")
        ax.set_ylabel("req/s (log)")
        ax.legend(fontsize=7)
        ax = axes[1][i]
        vals = [(p, run(results, p, case, "1")) for p in PATHS]
        vals = [(p, r) for p, r in vals if r]
        xs = range(len(vals))
        ax.bar([x - 0.2 for x in xs], [ms(r["p50_us"]) for _, r in vals], 0.4, label="p50")
        ax.bar([x + 0.2 for x in xs], [ms(r["p99_us"]) for _, r in vals], 0.4, label="p99")
        ax.set_xticks(list(xs), [p for p, _ in vals])
        ax.set_yscale("log")
        ax.set_ylabel("ms, sequential (log)")
        ax.legend(fontsize=7)
    fig.suptitle(f"Synapse vs direct (nginx) vs LiteLLM — {results['date']}")
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)


def write_report(results: dict, out_dir: Path) -> Path:
    date = results["date"]
    png = out_dir / f"{date}.png"
    plot(results, png)
    meta, v = results["meta"], results["meta"]["versions"]
    soak = latest_soak(out_dir)
    lite = results["paths"].get("litellm", {})
    d64 = [rps(results, "direct", c, RATIO_C) for c in meta["cases"]]
    s64 = [rps(results, "synapse", c, RATIO_C) for c in meta["cases"]]
    head_room = [ratio(d, s) for d, s in zip(d64, s64, strict=True)]
    head_room = [h for h in head_room if h]
    lg = [run(results, "direct", c, RATIO_C) for c in meta["cases"]]
    lg_cpu = [r["loadgen_cpu_ms_per_req"] for r in lg if r and r.get("loadgen_cpu_ms_per_req")]
    lines = [
        f"# Synapse benchmark — {date}",
        "",
        "Produced by `make bench` (bench/run_bench.py); raw numbers in "
        f"`{date}.json`, plot `{png.name}`. Targets are reported, never asserted.",
        "",
        "## Setup",
        "",
        f"- Machine: {v['cores']} cores ({v['cpu']}), Python {v['python']}, commit {v['commit']}.",
        f"- Synapse {v['synapse']} (`synapse serve`, one process); LiteLLM {v['litellm']} "
        "(`litellm --num_workers 1`, own venv `.venv-litellm`); both on the same file "
        "`bench/config.yaml`.",
        f"- Backend: {v['nginx']}, one worker, fixed answers (embedding width {meta['embed_dim']}"
        " floats); load: "
        f"{v['wrk']}".split(" Copyright")[0]
        + ", one thread, Lua POST script.",
        f"- CPU pinning: gateway on cpu {meta['gateway_cpus']}, nginx + wrk on cpu "
        f"{meta['loadgen_cpus']} (None = unpinned). {meta['duration_s']:g} s per wrk run after "
        "a 1 s warm-up; each path measured alone (the other gateway stopped).",
        f"- Load average {meta.get('loadavg_start', 0):.2f} at start, "
        f"{meta.get('loadavg_end', 0):.2f} at end (other people's work shares this machine: "
        "the CPU table's 'other load' column is busy time on the gateway's core not spent by it).",
        "- 'direct' = wrk → nginx on the same route the gateway calls; 'added' = gateway - "
        "direct at c=1 (sequential).",
        "",
        "## Targets (ratios from this run)",
        "",
        md_table(
            ["target", "measured", "how", "result"],
            [[a, b, c, verdict(d)] for a, b, c, d in targets(results, soak)],
        ),
        "",
        "## Sequential latency (c=1, wrk)",
        "",
        sequential_table(results),
        "",
        "## Throughput (requests/s)",
        "",
        throughput_table(results),
        "",
        "## Gateway CPU time per request (/proc/<pid>/stat utime+stime ÷ requests)",
        "",
        cpu_table(results),
        "",
        "## Backend connections opened per run (nginx stub_status; keep-alive reuse)",
        "",
        conns_table(results),
        "",
        "## Processes",
        "",
        process_table(results),
        "",
        f"## Streaming: time to first token (async client, sequential, {meta['ttft_n']} requests)",
        "",
        ttft_table(results),
        "",
        "## Is the load generator the bottleneck?",
        "",
        f"- nginx alone serves {min(head_room):.1f}-{max(head_room):.1f}x Synapse's c=64 rate "
        "with wrk on the same single core, so wrk can offer far more than Synapse absorbs."
        if head_room
        else "- n/a (no direct or Synapse runs).",
        f"- wrk CPU per request at c=64 (direct): {min(lg_cpu):.3f}-{max(lg_cpu):.3f} ms."
        if lg_cpu
        else "",
        "",
        "## LiteLLM notes",
        "",
        f"- Started on the same config with the top-level `synapse_settings:` key: "
        f"{'yes' if lite.get('started_with_synapse_settings') else 'no'}; its log mentions the "
        f"key: {'yes' if lite.get('synapse_settings_mentioned') else 'no'} (ignored silently).",
        "- Ollama routes (`/api/embed`, `/api/embeddings`): "
        + "; ".join(
            f"{c} → {lite.get('cases', {}).get(c, {}).get('probe', {}).get('status', '?')}"
            for c in ("api_embed", "api_embeddings")
        )
        + " (n/a in the tables).",
    ]
    if soak:
        lines += [
            "",
            "## Soak",
            "",
            f"See `{soak['date']}-soak.md`: {soak['requests']:,} "
            f"requests, RSS {soak['start_mb']:.1f} → {soak['end_mb']:.1f} MB "
            f"(growth {soak['growth_mb']:+.1f} MB, peak {soak['peak_mb']:.1f} MB).",
        ]
    lines += [
        "",
        "## Reproduce",
        "",
        "```",
        "make bench            # this report",
        "make bench-soak       # 100k-request RSS soak",
        "```",
        "",
    ]
    md = out_dir / f"{date}.md"
    md.write_text("\n".join(lines))
    return md
