"""`make bench`: nginx alone (direct), through Synapse (today's tree and a baseline revision),
through LiteLLM — one run, one report.

Each path runs on its own (the other gateway is stopped), the gateway pinned to one core and
nginx + wrk to the other, so "one worker" means one core and the load generator never
competes with the gateway. Every loop is bounded (wrk -d, fixed request counts, timeouts).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import baseline
from load import CASES, PACED, SSE_LONG, Case, paced_series, run_wrk, ttft_series
from procs import Service, exit_on_sigterm, free_port, loadavg, rss_bytes
from stub import EMBED_DIM, SSE_LONG_TOKENS, Nginx, sse_body, sse_events

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
CONFIG = BENCH / "config.yaml"
MASTER_KEY = "sk-bench-master-key"  # the bench config's general_settings.master_key


def cpu_plan(pin: bool) -> tuple[str | None, str | None]:
    """(gateway cpus, load generator + nginx cpus)."""
    if not pin or (os.cpu_count() or 1) < 2 or shutil.which("taskset") is None:
        return None, None
    return os.environ.get("BENCH_GATEWAY_CPUS", "1"), os.environ.get("BENCH_LOADGEN_CPUS", "0")


def backend_env(nginx: Nginx, paced: str | None = None) -> dict[str, str]:
    """The config's `os.environ/BENCH_*` bases; without the paced backend its group points at
    nginx's stream (the soak and the profile never call it)."""
    return {
        **os.environ,
        "BENCH_BACKEND": nginx.base,
        "BENCH_BACKEND_V1": f"{nginx.base}/v1",
        "BENCH_STREAM_V1": f"{nginx.base}/stream/v1",
        "BENCH_SSE_LONG_V1": f"{nginx.base}/sse-long/v1",
        "BENCH_PACED_V1": f"{paced or nginx.base + '/stream'}/v1",
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_TELEMETRY": "False",
        "PYTHONUNBUFFERED": "1",
    }


def synapse_service(
    run_dir: Path,
    env: dict[str, str],
    cpus: str | None,
    bin_dir: Path,
    name: str = "synapse",
    src: Path | None = None,
) -> Service:
    """`python -m synapse serve` on the bench config; `src` (a baseline's) goes on PYTHONPATH,
    ahead of the venv's editable install of today's tree."""
    port, oport = free_port(), free_port()
    if src is not None:
        env = {**env, "PYTHONPATH": str(src)}
    cmd = [
        str(bin_dir / "python"),
        "-m",
        "synapse",
        "serve",
        "--config",
        str(CONFIG),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--ollama-port",
        str(oport),
        "--metrics-port",  # its own: two revisions run side by side
        str(free_port()),
    ]
    if cpus:
        cmd = ["taskset", "-c", cpus, *cmd]
    svc = Service(
        name,
        cmd,
        env,
        run_dir / f"{name}.log",
        f"http://127.0.0.1:{port}/health/readiness",
        60,
    )
    svc.ports = {"api": port, "ollama": oport}  # type: ignore[attr-defined]
    return svc


def litellm_service(run_dir: Path, env: dict[str, str], cpus: str | None, venv: Path) -> Service:
    port = free_port()
    cmd = [
        str(venv / "bin" / "litellm"),
        "--config",
        str(CONFIG),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--num_workers",
        "1",
    ]
    if cpus:
        cmd = ["taskset", "-c", cpus, *cmd]
    svc = Service(
        "litellm",
        cmd,
        env,
        run_dir / "litellm.log",
        f"http://127.0.0.1:{port}/health/readiness",
        180,
    )
    svc.ports = {"api": port, "ollama": port}  # type: ignore[attr-defined]
    return svc


def probe(url: str, body: dict, key: str | None) -> dict:
    """One request: status and whether the answer has the expected shape."""
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    except OSError as exc:
        return {"status": 0, "ok": False, "detail": str(exc)}
    text = raw.decode(errors="replace")
    if body.get("stream"):
        ok = status == 200 and text.rstrip().endswith("data: [DONE]")
    else:
        try:
            doc = json.loads(text)
        except ValueError:
            doc = {}
        ok = status == 200 and any(k in doc for k in ("choices", "data", "embeddings", "embedding"))
    return {"status": status, "ok": ok, "detail": "" if ok else text[:300]}


@dataclass
class Subject:
    """One path under measurement: where its requests go and which process pays for them."""

    name: str
    bases: dict[str, str]
    key: str | None
    watch_pid: int
    watch_cpus: str | None = None
    accepted: Callable[[], int] | None = None
    out: dict = field(default_factory=lambda: {"cases": {}})

    @property
    def direct(self) -> bool:
        return self.name == "direct"

    def target(self, case: Case) -> tuple[str, str, str | None]:
        """(base URL, path, bearer key) of `case` on this path."""
        if self.direct:
            return self.bases["direct"], case.direct_path, None
        return self.bases[case.listener], case.path, None if case.listener == "ollama" else self.key


def prepare_case(s: Subject, case: Case, run_dir: Path, loadgen_cpus: str | None) -> bool:
    """Probe the case's answer and warm the path up; False if it cannot be measured here."""
    base, path, key = s.target(case)
    entry: dict = {"url": f"{base}{path}", "probe": probe(f"{base}{path}", case.body, key)}
    s.out["cases"][case.name] = entry
    if s.name == "litellm" and not case.litellm:
        entry["na"] = f"LiteLLM answers {entry['probe']['status']} (no Ollama routes)"
        print(f"  {s.name:16s} {case.name:18s} n/a ({entry['probe']['status']})", flush=True)
        return False
    if not entry["probe"]["ok"]:
        entry["na"] = f"probe failed: {entry['probe']['status']} {entry['probe']['detail']}"
        print(f"  {s.name:16s} {case.name:18s} {entry['na']}", flush=True)
        return False
    run_wrk(base, path, case.body_file(run_dir), 8, 1, key=key, cpus=loadgen_cpus)  # warm-up
    entry["runs"] = {}
    return True


def measure(
    s: Subject, case: Case, conc: int, args: argparse.Namespace, run_dir: Path, lg: str | None
) -> None:
    """One wrk run of `case` at `conc` connections: latency, req/s, CPU of the watched process."""
    base, path, key = s.target(case)
    conns0 = s.accepted() if s.accepted else 0
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    res = run_wrk(
        base,
        path,
        case.body_file(run_dir),
        conc,
        args.duration,
        key=key,
        cpus=lg,
        watch_pid=s.watch_pid,
        watch_cpus=s.watch_cpus,
    )
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    wrk_cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    n = res["requests"]
    res["loadgen_cpu_ms_per_req"] = 1000 * wrk_cpu / n if n else None
    if s.accepted and not s.direct:
        # New backend connections (minus our own status probe) per 1000 requests.
        res["backend_conns"] = s.accepted() - conns0 - 1
        res["backend_conns_per_1k"] = 1000 * res["backend_conns"] / n if n else None
    s.out["cases"][case.name]["runs"][str(conc)] = res
    foreign = res.get("foreign_util")
    print(
        f"  {s.name:16s} {case.name:18s} c={conc:<4d} {res['rps']:>9,.0f} req/s  "
        f"p50 {res['p50_us'] / 1000:7.2f} ms  p99 {res['p99_us'] / 1000:7.2f} ms  "
        f"cpu/req {res.get('cpu_ms_per_req') or 0:.3f} ms  "
        f"core {100 * (res.get('cpu_util') or 0):3.0f}%  "
        f"other {'-' if foreign is None else f'{100 * foreign:3.0f}%'}  "
        f"err {res['errors']}  backend conns {res.get('backend_conns', '-')}",
        flush=True,
    )


def bench_paths(
    subjects: list[Subject],
    cases: tuple[Case, ...],
    args: argparse.Namespace,
    run_dir: Path,
    loadgen_cpus: str | None,
) -> None:
    """Every case x concurrency, the subjects taking turns at each step (several Synapse
    revisions on one core: the machine's other load drifts over minutes, so interleaved runs
    keep their ratio honest), then each one's streaming series."""
    for case in cases:
        live = [s for s in subjects if prepare_case(s, case, run_dir, loadgen_cpus)]
        for conc in args.concurrency:
            for s in live:
                measure(s, case, conc, args, run_dir, loadgen_cpus)
    for s in subjects:
        streams(s, args, run_dir, loadgen_cpus)


def streams(s: Subject, args: argparse.Namespace, run_dir: Path, loadgen_cpus: str | None) -> None:
    """Time to first token, the 256-event stream, the paced stream: one connection each."""
    stream = next(c for c in CASES if c.name == "chat_stream")
    if "runs" in s.out["cases"].get("chat_stream", {}):
        url = s.out["cases"]["chat_stream"]["url"]
        s.out["ttft"] = asyncio.run(ttft_series(url, stream.body, args.ttft_n, s.key))
    s.out["sse_long"] = sse_long(s, args, run_dir, loadgen_cpus)
    if "paced" in s.bases:
        url = f"{s.bases['paced'] if s.direct else s.bases['api']}{PACED.path}"
        s.out["paced"] = asyncio.run(paced_series(url, PACED.body, args.paced_streams, s.key))
        lat = sorted(s.out["paced"]["latency_us"])
        p50 = lat[len(lat) // 2] / 1000 if lat else float("nan")
        print(
            f"  {s.name:16s} {PACED.name:18s} c=1    {len(lat):>5d} events  "
            f"latency p50 {p50:.3f} ms  err {s.out['paced']['errors']}",
            flush=True,
        )


def sse_long(s: Subject, args: argparse.Namespace, run_dir: Path, loadgen_cpus: str | None) -> dict:
    """The 256-event stream, one connection, for `args.duration`: whole-stream latency and CPU.

    The report divides (path - direct) by the event count: the delay a gateway adds per event.
    """
    base, path, use_key = s.target(SSE_LONG)
    name = s.name
    out: dict = {"events": sse_events(sse_body(SSE_LONG_TOKENS)), "url": f"{base}{path}"}
    out["probe"] = probe(f"{base}{path}", SSE_LONG.body, use_key)
    if not out["probe"]["ok"]:
        out["na"] = f"probe failed: {out['probe']['status']} {out['probe']['detail']}"
        print(f"  {name:16s} {SSE_LONG.name:18s} {out['na']}", flush=True)
        return out
    body_file = SSE_LONG.body_file(run_dir)
    run_wrk(base, path, body_file, 1, 1, key=use_key, cpus=loadgen_cpus)  # warm-up
    res = run_wrk(
        base,
        path,
        body_file,
        1,
        args.duration,
        key=use_key,
        cpus=loadgen_cpus,
        watch_pid=s.watch_pid,
    )
    out["run"] = res
    print(
        f"  {name:16s} {SSE_LONG.name:18s} c=1    {res['rps']:>9,.0f} streams/s  "
        f"p50 {res['p50_us'] / 1000:7.2f} ms  p99 {res['p99_us'] / 1000:7.2f} ms  "
        f"cpu/stream {res.get('cpu_ms_per_req') or 0:.3f} ms  err {res['errors']}",
        flush=True,
    )
    return out


def paced_service(run_dir: Path, args: argparse.Namespace, cpus: str | None) -> Service:
    """paced_sse.py on the load generator's core, like nginx."""
    port = free_port()
    cmd = [
        sys.executable,
        str(BENCH / "paced_sse.py"),
        "--port",
        str(port),
        "--events",
        str(args.paced_events),
        "--gap-ms",
        str(args.paced_gap_ms),
    ]
    if cpus:
        cmd = ["taskset", "-c", cpus, *cmd]
    svc = Service(
        "paced-sse", cmd, None, run_dir / "paced-sse.log", f"http://127.0.0.1:{port}/health", 30
    )
    svc.ports = {"api": port}  # type: ignore[attr-defined]
    return svc


def pin_self(cpus: str | None) -> None:
    """The harness's own clients (TTFT, paced SSE) on the load generator's core, not the
    gateway's."""
    if cpus:
        with contextlib.suppress(ValueError, OSError):
            os.sched_setaffinity(0, {int(c) for c in cpus.split(",")})


def run_gateways(
    svcs: list[Service], args, run_dir, nginx, loadgen_cpus, gw_cpus, paced=None
) -> dict[str, dict]:
    """Start each, measure idle RSS, bench them (interleaved), measure RSS after, stop."""
    infos: dict[str, dict] = {svc.name: {} for svc in svcs}
    subjects: list[Subject] = []
    try:
        for svc in svcs:
            info = infos[svc.name]
            try:
                svc.start()
            except Exception as exc:
                info["error"] = f"{svc.name} did not start: {exc}\n{svc.log_tail()}"
                print(info["error"], file=sys.stderr)
                svc.stop()
                continue
            info["startup_s"] = svc.startup_s
            time.sleep(1.0)
            info["rss_idle"] = rss_bytes(svc.pid)
            info["cases"] = {}
            ports = svc.ports  # type: ignore[attr-defined]
            bases = {
                "api": f"http://127.0.0.1:{ports['api']}",
                "ollama": f"http://127.0.0.1:{ports['ollama']}",
                **({"paced": paced} if paced else {}),
            }
            subjects.append(
                Subject(svc.name, bases, MASTER_KEY, svc.pid, gw_cpus, nginx.accepted, info)
            )
        bench_paths(subjects, CASES, args, run_dir, loadgen_cpus)
        for s in subjects:
            s.out["rss_after"] = rss_bytes(s.watch_pid)
    finally:
        for svc in svcs:
            if svc.proc is not None:
                infos[svc.name]["exit_code"] = svc.stop()
                infos[svc.name]["log_tail"] = svc.log_tail(30)
    return infos


def groups(paths: list[str], interleave: bool = True) -> list[list[str]]:
    """Paths measured together: every Synapse revision in one interleaved group (at the first
    one's place), direct and LiteLLM alone (LiteLLM's threads would disturb an idle neighbour)."""
    family = [p for p in paths if p == "synapse" or baseline.rev_of(p)]
    if not interleave or len(family) < 2:
        return [[p] for p in paths]
    out: list[list[str]] = []
    for p in paths:
        if p == family[0]:
            out.append(family)
        elif p not in family:
            out.append([p])
    return out


def run_group(
    names: list[str],
    args: argparse.Namespace,
    run_dir: Path,
    nginx: Nginx,
    env: dict[str, str],
    lg_cpus: str | None,
    gw_cpus: str | None,
    paced: str | None = None,
) -> dict[str, dict]:
    """Paths of the report measured together: nginx alone, Synapse revisions, or LiteLLM."""
    if names == ["direct"]:
        bases = {"direct": nginx.base, **({"paced": paced} if paced else {})}
        assert nginx.proc is not None
        s = Subject("direct", bases, None, nginx.proc.pid)
        bench_paths([s], CASES, args, run_dir, lg_cpus)
        s.out["rss_after"] = rss_bytes(nginx.proc.pid)
        return {"direct": s.out}
    if names == ["litellm"]:
        if not (args.litellm_venv / "bin" / "litellm").exists():
            return {"litellm": {"error": f"no LiteLLM in {args.litellm_venv}"}}
        svc = litellm_service(run_dir, env, gw_cpus, args.litellm_venv)
        info = run_gateways([svc], args, run_dir, nginx, lg_cpus, gw_cpus, paced)["litellm"]
        log = (run_dir / "litellm.log").read_text(errors="replace")
        info["synapse_settings_mentioned"] = "synapse_settings" in log
        info["started_with_synapse_settings"] = "startup_s" in info
        return {"litellm": info}
    out: dict[str, dict] = {}
    svcs = []
    for name in names:
        src = None
        if rev := baseline.rev_of(name):
            try:
                src = baseline.export(ROOT, rev, run_dir / f"baseline-{rev}")
            except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
                print(f"{name}: {exc}", file=sys.stderr)
                out[name] = {"error": str(exc)}
                continue
        svc = synapse_service(run_dir, env, gw_cpus, args.bin, name=name, src=src)
        out[name] = {"imports": imported_from(args.bin, svc.env)}
        svcs.append(svc)
    for name, info in run_gateways(svcs, args, run_dir, nginx, lg_cpus, gw_cpus, paced).items():
        out[name] |= info
    return out


def imported_from(bin_dir: Path, env: dict[str, str] | None) -> str:
    """Where `import synapse` resolves with the service's environment: proof a baseline runs
    its own tree, not the editable install."""
    code = "import synapse; print(synapse.__file__)"
    proc = subprocess.run(
        [str(bin_dir / "python"), "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    return proc.stdout.strip() or proc.stderr.strip()[-300:]


def versions(venv_litellm: Path) -> dict[str, str]:
    def cmd(*argv: str) -> str:
        try:
            p = subprocess.run(argv, capture_output=True, text=True, timeout=60)
            return (p.stdout + p.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return "?"

    from importlib.metadata import version

    cpu = "?"
    with contextlib.suppress(OSError, StopIteration):
        cpu = next(
            x.split(":", 1)[1].strip()
            for x in Path("/proc/cpuinfo").read_text().splitlines()
            if x.startswith("model name")
        )
    lite = cmd(
        str(venv_litellm / "bin" / "python"),
        "-c",
        "import importlib.metadata as m; print(m.version('litellm'))",
    )
    return {
        "synapse": version("synapse-gateway"),
        "litellm": lite,
        "nginx": cmd("nginx", "-v"),
        "wrk": cmd("wrk", "--version"),
        "python": platform.python_version(),
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "commit": cmd("git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"),
    }


def bench_args(argv: list[str]) -> list[str]:
    """The arguments a user gave (`make bench` adds `--bin`): the report's reproduce line."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--bin":
            skip = True
        elif not a.startswith("--bin="):
            out.append(a)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--duration", type=float, default=float(os.environ.get("BENCH_DURATION", 5)))
    ap.add_argument(
        "--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 32, 64, 128]
    )
    ap.add_argument("--ttft-n", type=int, default=300, help="sequential streaming requests")
    ap.add_argument("--paced-streams", type=int, default=10, help="sequential paced streams")
    ap.add_argument("--paced-events", type=int, default=64, help="events per paced stream")
    ap.add_argument("--paced-gap-ms", type=float, default=2.0, help="between paced events")
    ap.add_argument(
        "--baseline",
        default=baseline.DEFAULT_REV,
        help="git revision run as path synapse@<rev> (empty: none); ignored with --paths",
    )
    ap.add_argument(
        "--paths",
        help="comma-separated, in report order: direct, synapse, synapse@<rev>, litellm "
        "(default: all four, the baseline from --baseline)",
    )
    ap.add_argument("--no-pin", action="store_true", help="do not taskset the processes")
    ap.add_argument(
        "--no-interleave",
        action="store_true",
        help="run Synapse revisions one after the other, not taking turns",
    )
    ap.add_argument("--out", type=Path, default=BENCH / "results")
    ap.add_argument("--date", default=dt.date.today().isoformat())
    ap.add_argument("--litellm-venv", type=Path, default=ROOT / ".venv-litellm")
    ap.add_argument("--bin", type=Path, default=Path(sys.executable).parent)
    args = ap.parse_args(argv)
    exit_on_sigterm()
    paths = args.paths.split(",") if args.paths else baseline.default_paths(args.baseline)
    unknown = [
        p for p in paths if p not in ("direct", "synapse", "litellm") and not baseline.rev_of(p)
    ]
    if unknown:
        ap.error(f"--paths: unknown {', '.join(unknown)} (direct, synapse, synapse@<rev>, litellm)")
    gw_cpus, lg_cpus = cpu_plan(not args.no_pin)
    run_dir = Path(tempfile.mkdtemp(prefix="synapse-bench-"))
    nginx = Nginx(run_dir, free_port(), cpus=lg_cpus)
    results: dict = {
        "date": args.date,
        "meta": {
            "duration_s": args.duration,
            "concurrency": args.concurrency,
            "ttft_n": args.ttft_n,
            "paced": {
                "streams": args.paced_streams,
                "events": args.paced_events,
                "gap_ms": args.paced_gap_ms,
            },
            "gateway_cpus": gw_cpus,
            "loadgen_cpus": lg_cpus,
            "embed_dim": EMBED_DIM,
            "versions": versions(args.litellm_venv),
            "cases": {c.name: c.title for c in CASES},
            "paths": paths,
            "interleave": not args.no_interleave,
            "argv": bench_args(sys.argv[1:] if argv is None else argv),
            "baselines": {
                p: baseline.describe(ROOT, rev) for p in paths if (rev := baseline.rev_of(p))
            },
        },
        "paths": {},
    }
    results["meta"]["loadavg_start"] = loadavg()
    print(f"bench run dir {run_dir}; gateway cpus {gw_cpus}, nginx+wrk cpus {lg_cpus}", flush=True)
    pin_self(lg_cpus)
    paced = paced_service(run_dir, args, lg_cpus)
    try:
        nginx.start()
        paced.start()
        paced_base = f"http://127.0.0.1:{paced.ports['api']}"  # type: ignore[attr-defined]
        env = backend_env(nginx, paced_base)
        for names in groups(paths, not args.no_interleave):
            print(f"== {', '.join(names)}", flush=True)
            results["paths"] |= run_group(
                names, args, run_dir, nginx, env, lg_cpus, gw_cpus, paced_base
            )
    finally:
        paced.stop()
        nginx.stop()
    results["meta"]["loadavg_end"] = loadavg()
    args.out.mkdir(parents=True, exist_ok=True)
    raw = args.out / f"{args.date}.json"
    raw.write_text(json.dumps(results, indent=1))
    from report import write_report

    md = write_report(results, args.out)
    print(f"wrote {md} and {raw}")
    shutil.rmtree(run_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
