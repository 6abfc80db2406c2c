"""Markdown report and PNG plots from one `make bench` results dict (and the latest soak)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from baseline import rev_of

MB = 1024 * 1024
RATIO_C = "64"
SUBJECT = "synapse"  # today's tree: the path the targets are about
SSE_CASE = "chat_sse_long"
# Issue 17's targets.
ADDED_P50_MS = 0.2
ADDED_P99_MS = 1.0
CPU_MS = 0.15
CPU_CASES = ("chat", "embeddings")  # "chat and embeddings pass-through"
SSE_EVENT_MS = 0.05
BASELINE_X = 5.0
DIRECT_SHARE = 0.30
RSS_MB = 80.0
GROWTH_MB = 5.0  # "flat over the 100k soak"
LITELLM_X = 20.0


def paths(results: dict) -> list[str]:
    """Every path of the run, in the order it ran (the report's column order)."""
    return list(results["meta"].get("paths") or results["paths"])


def gateways(results: dict) -> list[str]:
    return [p for p in paths(results) if p != "direct"]


def baseline_path(results: dict) -> str | None:
    return next((p for p in paths(results) if rev_of(p)), None)


def run(results: dict, path: str, case: str, conc: str) -> dict | None:
    return results["paths"].get(path, {}).get("cases", {}).get(case, {}).get("runs", {}).get(conc)


def ms(us: float | None) -> float | None:
    return None if us is None else us / 1000.0


def f(value: float | None, digits: int = 2, suffix: str = "") -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}{suffix}"


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def verdict(ok: bool | None) -> str:
    return {True: "met", False: "**not met**", None: "n/a"}[ok]


def added(results: dict, path: str, case: str, key: str) -> float | None:
    g, d = run(results, path, case, "1"), run(results, "direct", case, "1")
    return None if g is None or d is None else (g[key] - d[key]) / 1000.0


def rps(results: dict, path: str, case: str, conc: str) -> float | None:
    r = run(results, path, case, conc)
    return None if r is None else r["rps"]


def cpu(results: dict, path: str, case: str, conc: str) -> float | None:
    r = run(results, path, case, conc)
    return None if r is None else r.get("cpu_ms_per_req")


def sse_run(results: dict, path: str) -> dict | None:
    return results["paths"].get(path, {}).get("sse_long", {}).get("run")


def per_event_ms(results: dict, path: str) -> float | None:
    """(path - direct) whole-stream p50 at c=1 ÷ events: the delay a gateway adds per event."""
    g, d = sse_run(results, path), sse_run(results, "direct")
    if g is None or d is None:
        return None
    events = results["paths"][path]["sse_long"]["events"]
    return (g["p50_us"] - d["p50_us"]) / 1000.0 / events


def paced_p50_ms(results: dict, path: str) -> float | None:
    """Median latency of one paced event (backend write → client read), in ms."""
    lat = sorted(results["paths"].get(path, {}).get("paced", {}).get("latency_us") or [])
    return lat[len(lat) // 2] / 1000.0 if lat else None


def paced_added_ms(results: dict, path: str) -> float | None:
    g, d = paced_p50_ms(results, path), paced_p50_ms(results, "direct")
    return None if g is None or d is None else g - d


def rss_mb(results: dict, path: str, key: str) -> float | None:
    v = results["paths"].get(path, {}).get(key)
    return None if v is None else v / MB


def latest_soak(out_dir: Path) -> dict | None:
    files = sorted(out_dir.glob("*-soak.json"))
    return json.loads(files[-1].read_text()) if files else None


@dataclass(frozen=True)
class Target:
    """One issue-17 target: the worst figure over its cases decides."""

    name: str
    measured: str  # the worst figure, with the case it comes from
    detail: str  # every case's figure
    met: bool | None


def evaluate(
    name: str, values: dict[str, float | None], limit: float, unit: str, at_least: bool = False
) -> Target:
    """`values` (case → figure) against `limit`: ≤ unless `at_least`; None figures are skipped."""
    have = {k: v for k, v in values.items() if v is not None}
    if not have:
        return Target(name, "n/a", "", None)

    def fmt(v: float) -> str:
        if unit == "%":
            return f"{100 * v:.1f} %"
        if unit == "x":
            return f"{v:.1f}x"
        return f"{v:.3f} {unit}" if unit == "ms" else f"{v:.1f} {unit}"

    worst_key = (min if at_least else max)(have, key=lambda k: have[k])
    worst = have[worst_key]
    measured = fmt(worst) + (f" ({worst_key})" if len(have) > 1 else "")
    detail = " · ".join(f"{k} {fmt(v)}" for k, v in have.items()) if len(have) > 1 else ""
    return Target(name, measured, detail, worst >= limit if at_least else worst <= limit)


def targets(results: dict, soak: dict | None, subject: str = SUBJECT) -> list[Target]:
    """Issue 17's targets for `subject`, ratios from this run (the soak from its own file)."""
    cases = list(results["meta"]["cases"])
    concs = [str(c) for c in results["meta"]["concurrency"]]
    base = baseline_path(results)
    out = [
        evaluate(
            f"added latency p50 at c=1 ≤ {ADDED_P50_MS:g} ms",
            {c: added(results, subject, c, "p50_us") for c in cases},
            ADDED_P50_MS,
            "ms",
        ),
        evaluate(
            f"added latency p99 at c=1 ≤ {ADDED_P99_MS:g} ms",
            {c: added(results, subject, c, "p99_us") for c in cases},
            ADDED_P99_MS,
            "ms",
        ),
        evaluate(
            f"CPU per request ≤ {CPU_MS:g} ms ({', '.join(CPU_CASES)}; c=1 and c={RATIO_C})",
            {f"{c} c={k}": cpu(results, subject, c, k) for c in CPU_CASES for k in ("1", RATIO_C)},
            CPU_MS,
            "ms",
        ),
        evaluate(
            f"added delay per SSE event ≤ {SSE_EVENT_MS:g} ms (256 events, c=1)",
            {"": per_event_ms(results, subject)},
            SSE_EVENT_MS,
            "ms",
        ),
        evaluate(
            f"added delay per SSE event ≤ {SSE_EVENT_MS:g} ms (paced: one event per write, c=1)",
            {"": paced_added_ms(results, subject)},
            SSE_EVENT_MS,
            "ms",
        ),
        evaluate(
            f"req/s at c={RATIO_C} ≥ {BASELINE_X:g}x {base or 'the baseline (not run)'}",
            {
                c: ratio(rps(results, subject, c, RATIO_C), rps(results, base, c, RATIO_C))
                for c in cases
            }
            if base
            else {},
            BASELINE_X,
            "x",
            at_least=True,
        ),
        evaluate(
            f"(the same from CPU per request at c={RATIO_C}: {base or 'baseline'} ÷ {subject}; "
            "little moved by other load on the core)",
            {
                c: ratio(cpu(results, base, c, RATIO_C), cpu(results, subject, c, RATIO_C))
                for c in cases
            }
            if base
            else {},
            BASELINE_X,
            "x",
            at_least=True,
        ),
        evaluate(
            f"req/s at c={RATIO_C} ≥ {100 * DIRECT_SHARE:g} % of direct (nginx)",
            {
                c: ratio(rps(results, subject, c, RATIO_C), rps(results, "direct", c, RATIO_C))
                for c in cases
            },
            DIRECT_SHARE,
            "%",
            at_least=True,
        ),
        evaluate(
            f"RSS ≤ {RSS_MB:g} MB idle after start",
            {"": rss_mb(results, subject, "rss_idle")},
            RSS_MB,
            "MB",
        ),
        evaluate(
            f"RSS ≤ {RSS_MB:g} MB after the run",
            {"": rss_mb(results, subject, "rss_after")},
            RSS_MB,
            "MB",
        ),
    ]
    if soak and soak.get("samples") and subject == SUBJECT:
        grow = evaluate(
            f"RSS flat over the soak (growth < {GROWTH_MB:g} MB)",
            {"": soak["growth_mb"]},
            GROWTH_MB,
            "MB",
        )
        note = f"soak of {soak['date']} ({soak.get('commit', 'commit not recorded')})"
        out.append(Target(grow.name, f"{soak['growth_mb']:+.1f} MB", note, grow.met))
    else:
        out.append(Target(f"RSS flat over the soak (growth < {GROWTH_MB:g} MB)", "n/a", "", None))
    out.append(
        evaluate(
            f"req/s ≥ {LITELLM_X:g}x LiteLLM (every case and c)",
            {
                f"{c} c={k}": ratio(rps(results, subject, c, k), rps(results, "litellm", c, k))
                for c in cases
                for k in concs
            },
            LITELLM_X,
            "x",
            at_least=True,
        )
    )
    return out


def targets_table(results: dict, soak: dict | None) -> str:
    """Targets for today's tree, with the baseline's figure beside each for scale."""
    base = baseline_path(results)
    mine = targets(results, soak)
    theirs = targets(results, None, base) if base else [None] * len(mine)
    head = ["target", f"{SUBJECT} (worst case)", "met?"]
    if base:
        head.append(f"{base} (worst case)")
    head.append(f"{SUBJECT} per case")
    rows = []
    for t, b in zip(mine, theirs, strict=True):
        row = [t.name, t.measured, verdict(t.met)]
        if b is not None:
            row.append(b.measured)
        row.append(t.detail)
        rows.append(row)
    return md_table(head, rows)


def md_table(head: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def sequential_table(results: dict) -> str:
    rows = []
    for case, title in results["meta"]["cases"].items():
        row = [title]
        for p in paths(results):
            r = run(results, p, case, "1")
            row.append("n/a" if r is None else f"{ms(r['p50_us']):.3f} / {ms(r['p99_us']):.3f}")
        for p in gateways(results):
            a50, a99 = added(results, p, case, "p50_us"), added(results, p, case, "p99_us")
            row.append("n/a" if a50 is None or a99 is None else f"{a50:+.3f} / {a99:+.3f}")
        rows.append(row)
    head = ["case"] + [f"{p} p50/p99 ms" for p in paths(results)]
    head += [f"{p} added p50/p99 ms" for p in gateways(results)]
    return md_table(head, rows)


def throughput_table(results: dict) -> str:
    """req/s per path, and today's tree as a ratio of each other path."""
    ps = paths(results)
    others = [p for p in ps if p != SUBJECT] if SUBJECT in ps else []
    rows = []
    for case, title in results["meta"]["cases"].items():
        for conc in map(str, results["meta"]["concurrency"]):
            mine = rps(results, SUBJECT, case, conc)
            row = [title, conc] + [f(rps(results, p, case, conc), 0) for p in ps]
            for p in others:
                r = ratio(mine, rps(results, p, case, conc))
                pct = p == "direct"
                row.append("n/a" if r is None else f"{100 * r:.1f} %" if pct else f"{r:.2f}x")
            errs = [run(results, p, case, conc) for p in ps]
            row.append("/".join("-" if e is None else str(e["errors"]) for e in errs))
            rows.append(row)
    head = ["case", "c"] + [f"{p} req/s" for p in ps]
    head += [f"{SUBJECT}/{p}" for p in others] + ["errors " + "/".join(ps)]
    return md_table(head, rows)


def cpu_table(results: dict) -> str:
    """ms per request at c=1 / c=64, with the process's core use and other load at c=64."""
    rows = []
    for case, title in results["meta"]["cases"].items():
        row = [title]
        for p in paths(results):
            r64 = run(results, p, case, RATIO_C)
            cell = f"{f(cpu(results, p, case, '1'), 3)} / {f(cpu(results, p, case, RATIO_C), 3)}"
            if r64 and r64.get("cpu_util") is not None:
                cell += f" ({100 * r64['cpu_util']:.0f} %"
                other = r64.get("foreign_util")
                cell += ")" if other is None or p == "direct" else f", other {100 * other:.0f} %)"
            row.append(cell)
        rows.append(row)
    head = ["case"] + [
        f"{p} ms/req c=1 / c={RATIO_C} (core use, other load)" for p in paths(results)
    ]
    return md_table(head, rows)


def sse_table(results: dict) -> str:
    rows = []
    for p in paths(results):
        info = results["paths"].get(p, {}).get("sse_long", {})
        r = info.get("run")
        if r is None:
            rows.append([p, str(info.get("events", "n/a")), info.get("na", "not run"), "", "", ""])
            continue
        per_stream = r.get("cpu_ms_per_req")
        per_ev = None if per_stream is None else per_stream / info["events"]
        add = per_event_ms(results, p) if p != "direct" else None
        rows.append(
            [
                p,
                str(info["events"]),
                f"{ms(r['p50_us']):.3f} / {ms(r['p99_us']):.3f}",
                "—" if p == "direct" else f(add, 4),
                f"{f(per_stream, 3)} / {f(per_ev, 4)}",
                str(r["errors"]),
            ]
        )
    head = [
        "path",
        "events",
        "whole stream p50/p99 ms",
        "added per event ms (p50)",
        "CPU ms per stream / per event",
        "errors",
    ]
    return md_table(head, rows)


def paced_table(results: dict) -> str:
    from synapse.ops.bench import summarize

    rows = []
    for p in paths(results):
        info = results["paths"].get(p, {}).get("paced")
        if not info or not info["latency_us"]:
            rows.append([p, "n/a", "n/a", "n/a", "n/a", str(info["errors"]) if info else "-"])
            continue
        s = summarize([us / 1000 for us in info["latency_us"]])
        add = paced_added_ms(results, p) if p != "direct" else None
        rows.append(
            [
                p,
                str(s["n"]),
                f"{s['p50']:.3f} / {s['p99']:.3f}",
                f"{s['mean']:.3f}",
                "—" if p == "direct" else f(add, 4),
                str(info["errors"]),
            ]
        )
    head = ["path", "events", "latency p50/p99 ms", "mean ms", "added p50 ms", "errors"]
    return md_table(head, rows)


def process_table(results: dict) -> str:
    rows = []
    for p in gateways(results):
        info = results["paths"].get(p, {})
        if not info:
            rows.append([p, "not run", "", "", "", ""])
            continue
        if "error" in info:
            rows.append([p, "did not run: " + info["error"].splitlines()[0], "", "", "", ""])
            continue
        rows.append(
            [
                p,
                f(info.get("startup_s"), 1, " s"),
                f(rss_mb(results, p, "rss_idle"), 1, " MB"),
                f(rss_mb(results, p, "rss_after"), 1, " MB"),
                str(info.get("exit_code")),
                f"`{info['imports']}`" if info.get("imports") else "",
            ]
        )
    head = ["gateway", "ready after", "RSS idle", "RSS after the run", "exit on SIGTERM"]
    return md_table([*head, "`import synapse` from"], rows)


def conns_table(results: dict) -> str:
    concs = results["meta"]["concurrency"]
    rows = []
    for case, title in results["meta"]["cases"].items():
        row = [title]
        for p in gateways(results):
            for conc in map(str, concs):
                r = run(results, p, case, conc)
                row.append("n/a" if not r or "backend_conns" not in r else str(r["backend_conns"]))
        rows.append(row)
    head = ["case"] + [f"{p} c={c}" for p in gateways(results) for c in concs]
    return md_table(head, rows)


def ttft_table(results: dict) -> str:
    from synapse.ops.bench import summarize

    rows, base = [], None
    for p in paths(results):
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
    fixed = {"direct": "tab:gray", "synapse": "tab:blue", "litellm": "tab:orange"}
    spare = iter(["tab:green", "tab:purple", "tab:brown", "tab:pink"])
    colours = {p: fixed.get(p) or next(spare, "tab:olive") for p in paths(results)}
    for i, (case, title) in enumerate(cases.items()):
        ax = axes[0][i]
        for p in paths(results):
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
        vals = [(p, run(results, p, case, "1")) for p in paths(results)]
        vals = [(p, r) for p, r in vals if r]
        xs = range(len(vals))
        ax.bar([x - 0.2 for x in xs], [ms(r["p50_us"]) for _, r in vals], 0.4, label="p50")
        ax.bar([x + 0.2 for x in xs], [ms(r["p99_us"]) for _, r in vals], 0.4, label="p99")
        ax.set_xticks(list(xs), [p for p, _ in vals], fontsize=7)
        ax.set_yscale("log")
        ax.set_ylabel("ms, sequential (log)")
        ax.legend(fontsize=7)
    fig.suptitle(f"{' vs '.join(paths(results))} — {results['date']}")
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
    paced = meta.get("paced", {})
    d64 = [rps(results, "direct", c, RATIO_C) for c in meta["cases"]]
    s64 = [rps(results, SUBJECT, c, RATIO_C) for c in meta["cases"]]
    head_room = [ratio(d, s) for d, s in zip(d64, s64, strict=True)]
    head_room = [h for h in head_room if h]
    lg = [run(results, "direct", c, RATIO_C) for c in meta["cases"]]
    lg_cpu = [r["loadgen_cpu_ms_per_req"] for r in lg if r and r.get("loadgen_cpu_ms_per_req")]
    base = baseline_path(results)
    base_line = (
        f"- `{base}` = {meta.get('baselines', {}).get(base, base)}: its `src/` from `git archive`"
        " in a temp dir, run with `PYTHONPATH=<that>/src` from the same venv, same config, same "
        "pinning, in the same run."
        if base
        else "- No baseline revision in this run (`BENCH_BASELINE` empty or `--paths` without one)."
    )
    lines = [
        f"# Synapse benchmark — {date}",
        "",
        "Produced by `make bench` (bench/run_bench.py); raw numbers in "
        f"`{date}.json`, plot `{png.name}`. Targets are reported, never asserted.",
        "",
        f"## Issue 17's targets ({SUBJECT} = this tree; ratios from this run)",
        "",
        "The worst case decides; 'added' = path - direct (nginx) at c=1; CPU = the gateway "
        "process's utime+stime ÷ requests.",
        "",
        targets_table(results, soak),
        "",
        "## Setup",
        "",
        f"- Machine: {v['cores']} cores ({v['cpu']}), Python {v['python']}, commit {v['commit']}.",
        f"- Synapse {v['synapse']} (`synapse serve`, one process); LiteLLM {v['litellm']} "
        "(`litellm --num_workers 1`, own venv `.venv-litellm`); both on the same file "
        "`bench/config.yaml`.",
        base_line,
        f"- Backend: {v['nginx']}, one worker, fixed answers (embedding width {meta['embed_dim']}"
        " floats); load: "
        f"{v['wrk']}".split(" Copyright")[0]
        + ", one thread, Lua POST script.",
        f"- CPU pinning: gateway on cpu {meta['gateway_cpus']}, nginx + wrk on cpu "
        f"{meta['loadgen_cpus']} (None = unpinned). {meta['duration_s']:g} s per wrk run after "
        "a 1 s warm-up; "
        + (
            "direct and LiteLLM measured alone; the Synapse revisions started together and "
            "measured in turns at each case x concurrency step (one under load at a time)."
            if meta.get("interleave", True)
            else "each path measured alone (the others stopped)."
        ),
        f"- Load average {meta.get('loadavg_start', 0):.2f} at start, "
        f"{meta.get('loadavg_end', 0):.2f} at end (other people's work shares this machine: "
        "the CPU table's 'other load' column is busy time on the gateway's core not spent by it).",
        "- 'direct' = wrk → nginx on the same route the gateway calls; 'added' = gateway - "
        "direct at c=1 (sequential).",
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
        "## Streaming: added delay per SSE event (256-event stream, one connection, wrk)",
        "",
        "nginx sends the whole stream at once; a gateway relays it event by event or in "
        "chunks. Added per event = (path - direct) whole-stream p50 ÷ events.",
        "",
        sse_table(results),
        "",
        "## Streaming: added delay per SSE event, paced (bench/paced_sse.py)",
        "",
        f"A backend writes one event every {paced.get('gap_ms', '?')} ms, stamped with "
        "CLOCK_MONOTONIC; the client (on the load generator's core) subtracts the stamp when it "
        f"reads the event: {paced.get('events', '?')} events x {paced.get('streams', '?')} "
        "sequential streams per path. Added = path - direct, median event.",
        "",
        paced_table(results),
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
        "make bench BENCH_ARGS=" + repr(" ".join(meta["argv"]))
        if meta.get("argv")
        else "make bench            # this report",
        "make bench-soak       # 100k-request RSS soak",
        "```",
        "",
    ]
    md = out_dir / f"{date}.md"
    md.write_text("\n".join(lines))
    return md
