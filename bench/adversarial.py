"""`make bench-adversarial`: does each hostile request shape cost the gateway work linear in its
size, and how long does it stall the event loop? (issue 24; a benchmark, nothing asserted)

Each shape of tests/gateway/hostile.py, on its first route, at 1/8, 1/4, 1/2 and all of its
full size, against a gateway of its own (stub backends, as in the tests). Per request:

- gateway CPU: utime + stime of the gateway process (/proc) across the request, until the
  loop answers again;
- longest stall: from `synapse_event_loop_lag_seconds` scraped before and after, the bucket
  that holds the latest wake (a bound: "≤ 10 s"), and the sum of lateness (close to the stall
  when there was one);
- peak RSS (VmHWM) after the request.

`CPU/unit vs 1x` divides CPU per unit of size by the same at 1x: about 1 (or below, fixed costs
shrinking) when the work is linear, about k at kx when it is quadratic. A shape is flagged
superlinear when that ratio passes 2 at 8x.

Usage: python bench/adversarial.py [--label before] [--shapes a,b] [--out bench/results]
       python bench/adversarial.py --report-only bench/results/<run>.json  (rewrite its .md)
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import MASTER_KEY, Backend, Gateway  # noqa: E402
from tests.gateway import hostile  # noqa: E402

MULTIPLES = (1, 2, 4, 8)  # eighths of the full size
LAG = "synapse_event_loop_lag_seconds"
SUPERLINEAR = 2.0  # CPU/unit at 8x over CPU/unit at 1x
MEASURABLE_CPU = 0.05  # s: /proc counts CPU in 10 ms ticks
STALL = 1.0  # s: one wake later than this is a stall (the hostile test's liveness bound)
RSS_BOUND_MIB = 512  # the hostile test's peak RSS bound


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100  # CLK_TCK is 100 on Linux


def peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def lag_histogram(gateway: Gateway) -> dict[str, float]:
    out: dict[str, float] = {}
    text = httpx.get(gateway.metrics_url, timeout=120).text
    for family in text_string_to_metric_families(text):
        if family.name == LAG:
            for s in family.samples:
                out[s.labels.get("le") or s.name.removeprefix(LAG + "_")] = s.value
    return out


def longest(before: dict[str, float], after: dict[str, float]) -> str:
    """The bucket bound of the latest wake between two scrapes, e.g. '≤ 10 s' or '> 60 s'."""
    wakes = after["count"] - before["count"]
    bounds = sorted((float(le), le) for le in after if le not in ("count", "sum", "+Inf"))
    for value, le in bounds:
        if after[le] - before.get(le, 0) >= wakes:
            return f"≤ {value:g} s"
    return f"> {bounds[-1][0]:g} s"


def wait_live(gateway: Gateway, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(gateway.url + "/health/liveliness", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
    raise TimeoutError("gateway did not come back")


def measure(shape: hostile.Shape, gateway: Gateway, size: int) -> dict:
    target = shape.targets[0]
    data = shape.build(size, target, MASTER_KEY)
    port = gateway.port if target.listener == "openai" else gateway.ollama_port
    pid = gateway.proc.pid
    wait_live(gateway)
    time.sleep(0.3)  # a timer wake after the last request, so its lag is already counted
    lag_before, cpu_before = lag_histogram(gateway), cpu_seconds(pid)
    with ThreadPoolExecutor(shape.connections) as pool:
        outcomes = list(
            pool.map(
                lambda _: hostile.deliver(port, data, reads=shape.reads, timeout=600),
                range(shape.connections),
            )
        )
    wait_live(gateway)
    time.sleep(0.3)
    cpu = cpu_seconds(pid) - cpu_before
    lag_after = lag_histogram(gateway)
    return {
        "size": size,
        "bytes": len(data) * shape.connections,
        "sent": sum(o.sent for o in outcomes),
        "status": sorted({s for o in outcomes for s in o.statuses}),
        "seconds": max(o.seconds for o in outcomes),
        "cpu_s": cpu,
        "longest_stall": longest(lag_before, lag_after),
        "late_total_s": lag_after["sum"] - lag_before["sum"],
        "peak_rss_mib": peak_rss(pid) / 2**20,
    }


def run_shape(shape: hostile.Shape, backends: tuple[Backend, Backend], tmp: Path) -> list[dict]:
    gateway = Gateway(hostile.config(*backends), tmp)
    try:
        rows = []
        for multiple in MULTIPLES:
            row = measure(shape, gateway, max(1, shape.full * multiple // 8))
            row["multiple"] = multiple
            rows.append(row)
            print(shape.name, json.dumps(row), flush=True)
        return rows
    finally:
        gateway.stop()


def per_unit_ratio(rows: list[dict]) -> list[float]:
    base = rows[0]["cpu_s"] / rows[0]["size"]
    return [(r["cpu_s"] / r["size"]) / base if base > 0 else math.nan for r in rows]


def report(run: dict, label: str, command: str) -> str:
    """Markdown of a run: {"date", "tree", "shapes": {name: rows}}."""
    results: dict[str, list[dict]] = run["shapes"]
    lines = [
        f"# Hostile request shapes: gateway CPU and loop stalls by size ({label})",
        "",
        f"Command: `{command}` on {run['date']}, tree `{run['tree']}`.",
        "Each shape on its first route (tests/gateway/hostile.py), one request at a time (the",
        "pipelined flood: two connections that never read), against a fresh gateway with stub",
        "backends. CPU: the gateway process from /proc across the request until it answers",
        "liveness again. Longest stall: bucket of `synapse_event_loop_lag_seconds` holding the",
        "latest timer wake; late total: the histogram's sum over the request. `CPU/unit vs 1x`:",
        "about 1 or below when the work is linear, about k at kx when it is quadratic.",
        "Machine: 2 cores shared with other sessions' work: CPU figures are noisy, ratios of",
        "2-3 at small sizes are noise, ratios near the size multiple are not.",
        "",
        "| shape | route | size | bytes | status | gateway CPU s | CPU/unit vs 1x "
        "| longest stall | late total s | peak RSS MiB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    verdicts = []
    for name, rows in results.items():
        shape = hostile.SHAPES[name]
        ratios = per_unit_ratio(rows)
        for row, ratio in zip(rows, ratios, strict=True):
            shown = f"{ratio:.2f}" if rows[0]["cpu_s"] >= MEASURABLE_CPU / 4 else "-"
            status = ",".join(map(str, row["status"])) or f"unread ({row['sent'] >> 20} MiB taken)"
            lines.append(
                f"| {name} | {shape.targets[0]} | {row['size']:,} {shape.unit} | "
                f"{row['bytes']:,} | {status} | {row['cpu_s']:.2f} | {shown} | "
                f"{row['longest_stall']} | {row['late_total_s']:.2f} | {row['peak_rss_mib']:.0f} |"
            )
        verdicts.append(f"- {name}: {verdict(rows, ratios)}")
    return "\n".join([*lines, "", "## Growth", "", *verdicts, ""])


def verdict(rows: list[dict], ratios: list[float]) -> str:
    """CPU growth, and what the full size did to the loop and to memory."""
    full = rows[-1]
    if full["cpu_s"] < MEASURABLE_CPU:
        growth = f"CPU below /proc's resolution ({full['cpu_s']:.2f} s at 8x)"
    else:
        kind = "superlinear" if ratios[-1] > SUPERLINEAR else "linear"
        growth = f"CPU {kind} (per unit at 8x: {ratios[-1]:.2f}x that at 1x)"
    bound = float(full["longest_stall"].split()[1])  # "≤ 10 s": the wake was in (5, 10]
    stall = bound > STALL or full["longest_stall"].startswith(">")
    loop = f"loop {'STALLED' if stall else 'ok'} at 8x (longest {full['longest_stall']})"
    memory = f"peak RSS {full['peak_rss_mib']:.0f} MiB" + (
        " (OVER 512)" if full["peak_rss_mib"] > RSS_BOUND_MIB else ""
    )
    return f"{growth}; {loop}; {memory}"


def git_rev() -> str:
    import subprocess

    proc = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
    )
    return proc.stdout.strip() or "unknown"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label", default="", help="report name suffix, e.g. before / after")
    parser.add_argument("--shapes", default=",".join(hostile.SHAPES), help="comma-separated")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    parser.add_argument("--report-only", metavar="JSON", help="rewrite the report of a run")
    args = parser.parse_args()
    names = [n for n in args.shapes.split(",") if n]
    command = "make bench-adversarial" + (
        f" ADVERSARIAL_ARGS='--label {args.label}'" if args.label else ""
    )
    if args.report_only:
        path = Path(args.report_only)
        run = json.loads(path.read_text())
        path.with_suffix(".md").write_text(report(run, args.label or "this tree", command))
        return 0
    results: dict[str, list[dict]] = {}
    backends = (Backend("openai"), Backend("ollama"))
    try:
        for name in names:
            with tempfile.TemporaryDirectory() as tmp:
                results[name] = run_shape(hostile.SHAPES[name], backends, Path(tmp))
    finally:
        for backend in backends:
            backend.stop()
    stem = f"{datetime.date.today()}-adversarial" + (f"-{args.label}" if args.label else "")
    out = Path(args.out)
    run = {"date": str(datetime.date.today()), "tree": git_rev(), "shapes": results}
    (out / f"{stem}.json").write_text(json.dumps(run, indent=1) + "\n")
    (out / f"{stem}.md").write_text(report(run, args.label or "this tree", command))
    print(f"wrote {out / stem}.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
