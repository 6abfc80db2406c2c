"""`make bench-profile`: where a Synapse worker spends its CPU under load (py-spy).

For each case, wrk drives c=64 through one pinned Synapse process while `py-spy record`
samples it; the collapsed stacks are summarised as self time per frame, inclusive time per
Synapse function and a split by library. Idle samples are excluded (py-spy's default), so
percentages are of the time the process was on CPU. Writes <date>-profile.md (+ raw stacks
and one flame graph SVG) under bench/results/.
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from pathlib import Path

from load import CASES, run_wrk
from procs import exit_on_sigterm, free_port
from run_bench import BENCH, MASTER_KEY, backend_env, cpu_plan, synapse_service
from stub import Nginx

FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>.*?)(?::(?P<line>\d+))?\)$")

CATEGORIES = (
    ("synapse", ("/synapse/",)),
    ("aiohttp (server+client)", ("/aiohttp/",)),
    ("yarl/multidict/propcache", ("/yarl/", "/multidict/", "/propcache/")),
    ("asyncio/uvloop", ("/asyncio/", "uvloop", "/selectors.py", "/aiohappyeyeballs/")),
    ("logging", ("/logging/",)),
    ("prometheus_client", ("/prometheus_client/",)),
    ("json (orjson/json)", ("/json/", "orjson")),
    ("pydantic", ("/pydantic",)),
)


def category(file: str) -> str:
    file = "/" + file  # py-spy prints paths relative to their sys.path entry
    for name, needles in CATEGORIES:
        if any(n in file for n in needles):
            return name
    return "other"


def parse_collapsed(text: str) -> list[tuple[list[tuple[str, str]], int]]:
    """py-spy raw output → [(frames root→leaf as (function, file)), samples]."""
    out = []
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = []
        for part in stack.split(";"):
            m = FRAME.match(part.strip())
            frames.append((m["func"], m["file"]) if m else (part.strip(), ""))
        out.append((frames, int(count)))
    return out


def short(file: str) -> str:
    for marker in ("site-packages/", "/src/", "/lib/python3.11/"):
        if marker in file:
            return file.split(marker, 1)[1]
    return file


def summarize(stacks: list[tuple[list[tuple[str, str]], int]], top: int = 15) -> dict:
    total = sum(c for _, c in stacks) or 1
    self_time: Counter[str] = Counter()
    cat_time: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    for frames, count in stacks:
        if not frames:
            continue
        func, file = frames[-1]
        self_time[f"{func} ({short(file)})"] += count
        cat_time[category(file)] += count
        seen = {f"{fn} ({short(fl)})" for fn, fl in frames if category(fl) == "synapse"}
        for key in seen:
            incl[key] += count
    pct = lambda c: 100.0 * c / total  # noqa: E731
    return {
        "samples": total,
        "self": [(k, pct(v)) for k, v in self_time.most_common(top)],
        "categories": [(k, pct(v)) for k, v in cat_time.most_common()],
        "synapse_inclusive": [(k, pct(v)) for k, v in incl.most_common(top)],
    }


def record(pid: int, seconds: int, out: Path, fmt: str = "raw", rate: int = 250) -> None:
    exe = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or "py-spy"
    cmd = [
        exe,
        "record",
        "-p",
        str(pid),
        "-d",
        str(seconds),
        "-r",
        str(rate),
        "-f",
        fmt,
        "-o",
        str(out),
        "--nonblocking",
    ]
    subprocess.run(cmd, check=True, capture_output=True, timeout=seconds + 60)


def render(results: dict[str, dict], date: str, meta: dict) -> str:
    lines = [
        f"# Synapse hot-path profile — {date}",
        "",
        f"`make bench-profile` (bench/profile_gateway.py): py-spy {meta['py_spy']} sampling one "
        f"pinned Synapse process at {meta['rate']} Hz for {meta['seconds']} s per case while "
        f"wrk drives c={meta['connections']} against the nginx stub. Percentages are of on-CPU "
        "samples (idle excluded). C code (orjson, aiohttp's C parser, uvloop) is attributed to "
        "the Python frame that called it.",
        "",
    ]
    for case, res in results.items():
        s = res["summary"]
        lines += [f"## {case} — {res['rps']:,.0f} req/s, {s['samples']} samples", ""]
        lines += ["| library | % of CPU samples (self) |", "|---|---|"]
        lines += [f"| {k} | {v:.1f} |" for k, v in s["categories"]]
        lines += ["", "| top self frames | % |", "|---|---|"]
        lines += [f"| `{k}` | {v:.1f} |" for k, v in s["self"]]
        lines += ["", "| Synapse functions, inclusive | % |", "|---|---|"]
        lines += [f"| `{k}` | {v:.1f} |" for k, v in s["synapse_inclusive"]]
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    ap.add_argument("--cases", default=",".join(c.name for c in CASES))
    ap.add_argument("--out", type=Path, default=BENCH / "results")
    ap.add_argument("--date", default=dt.date.today().isoformat())
    ap.add_argument("--bin", type=Path, default=Path(sys.executable).parent)
    ap.add_argument("--keep-raw", action="store_true", help="copy py-spy's raw stacks to --out")
    args = ap.parse_args(argv)
    exit_on_sigterm()
    gw_cpus, lg_cpus = cpu_plan(True)
    run_dir = Path(tempfile.mkdtemp(prefix="synapse-profile-"))
    args.out.mkdir(parents=True, exist_ok=True)
    nginx = Nginx(run_dir, free_port(), cpus=lg_cpus)
    nginx.start()
    svc = synapse_service(run_dir, backend_env(nginx), gw_cpus, args.bin)
    results: dict[str, dict] = {}
    wanted = [c for c in CASES if c.name in args.cases.split(",")]
    try:
        svc.start()
        ports = svc.ports  # type: ignore[attr-defined]
        for i, case in enumerate(wanted):
            base = f"http://127.0.0.1:{ports[case.listener]}"
            key = MASTER_KEY if case.listener == "api" else None
            body = case.body_file(run_dir)
            run_wrk(base, case.path, body, 8, 1, key=key, cpus=lg_cpus)  # warm-up
            raw = run_dir / f"{case.name}.txt"
            fmt, target = ("raw", raw)
            box: dict = {}

            def load(base=base, case=case, body=body, key=key, box=box) -> None:
                box["res"] = run_wrk(
                    base, case.path, body, args.connections, args.seconds + 2, key=key, cpus=lg_cpus
                )

            t = threading.Thread(target=load)
            t.start()
            record(svc.pid, args.seconds, target, fmt, args.rate)
            t.join()
            stacks = parse_collapsed(raw.read_text())
            results[case.name] = {"rps": box["res"]["rps"], "summary": summarize(stacks)}
            if args.keep_raw:  # collapsed stacks, ~0.4 MB per case
                shutil.copy(raw, args.out / f"{args.date}-profile-{case.name}.txt")
            print(f"  profiled {case.name}: {box['res']['rps']:,.0f} req/s", flush=True)
            if i == 0:  # one flame graph is enough to look at; the rest are in the tables
                svg = args.out / f"{args.date}-profile-{case.name}.svg"
                t = threading.Thread(target=load)
                t.start()
                record(svc.pid, args.seconds, svg, "flamegraph", args.rate)
                t.join()
    finally:
        svc.stop()
        nginx.stop()
    ver = subprocess.run(
        [shutil.which("py-spy", path=str(args.bin)) or "py-spy", "--version"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    meta = {
        "py_spy": ver.removeprefix("py-spy "),
        "rate": args.rate,
        "seconds": args.seconds,
        "connections": args.connections,
    }
    md = args.out / f"{args.date}-profile.md"
    md.write_text(render(results, args.date, meta))
    print(f"wrote {md}")
    shutil.rmtree(run_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
