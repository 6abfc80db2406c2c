"""The floor under any aiohttp gateway: a hello-world server and a bare aiohttp proxy.

Same pinning, stub and wrk as `make bench`: what one core costs per request for aiohttp's
server alone, and for server + ClientSession forwarding with nothing else (no auth, routing,
metrics, logs). Synapse's figures can be read against these. `--serve MODE PORT BACKEND` runs
one server (used internally); without it, measures both and prints a table.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from load import CASES, run_wrk
from procs import Service, exit_on_sigterm, free_port
from run_bench import cpu_plan
from stub import Nginx


def serve(mode: str, port: int, backend: str) -> None:
    import aiohttp
    import uvloop
    from aiohttp import web

    async def hello(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=b'{"ok":true}', content_type="application/json")

    async def proxy(request: web.Request) -> web.Response:
        body = await request.read()
        session: aiohttp.ClientSession = request.app["session"]
        async with session.post(
            backend + "/v1/embeddings", data=body, headers={"Content-Type": "application/json"}
        ) as resp:
            data = await resp.read()
            return web.Response(body=data, status=resp.status, content_type="application/json")

    async def main() -> None:
        app = web.Application()
        app["session"] = aiohttp.ClientSession()
        app.router.add_post("/v1/embeddings", proxy if mode == "proxy" else hello)
        app.router.add_get("/ready", hello)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        import asyncio

        await asyncio.sleep(3600)  # bounded; the harness stops it long before

    uvloop.run(main())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--serve", nargs=3, metavar=("MODE", "PORT", "BACKEND"))
    ap.add_argument("--duration", type=float, default=5)
    args = ap.parse_args(argv)
    if args.serve:
        serve(args.serve[0], int(args.serve[1]), args.serve[2])
        return 0
    exit_on_sigterm()
    gw_cpus, lg_cpus = cpu_plan(True)
    run_dir = Path(tempfile.mkdtemp(prefix="synapse-floor-"))
    nginx = Nginx(run_dir, free_port(), cpus=lg_cpus)
    nginx.start()
    case = next(c for c in CASES if c.name == "embeddings")
    body = case.body_file(run_dir)
    rows = []
    try:
        for mode in ("hello", "proxy"):
            port = free_port()
            cmd = [sys.executable, __file__, "--serve", mode, str(port), nginx.base]
            if gw_cpus:
                cmd = ["taskset", "-c", gw_cpus, *cmd]
            svc = Service(
                mode, cmd, None, run_dir / f"{mode}.log", f"http://127.0.0.1:{port}/ready"
            )
            svc.start()
            try:
                base = f"http://127.0.0.1:{port}"
                run_wrk(base, case.path, body, 8, 1, cpus=lg_cpus)
                for conc in (1, 64):
                    r = run_wrk(
                        base,
                        case.path,
                        body,
                        conc,
                        args.duration,
                        cpus=lg_cpus,
                        watch_pid=svc.pid,
                        watch_cpus=gw_cpus,
                    )
                    rows.append((mode, conc, r))
            finally:
                svc.stop()
    finally:
        nginx.stop()
        shutil.rmtree(run_dir, ignore_errors=True)
    print("| server | c | req/s | p50 ms | p99 ms | CPU ms/req | other load on its core |")
    print("|---|---|---|---|---|---|---|")
    for mode, conc, r in rows:
        print(
            f"| aiohttp {mode} | {conc} | {r['rps']:,.0f} | {r['p50_us'] / 1000:.3f} | "
            f"{r['p99_us'] / 1000:.3f} | {r['cpu_ms_per_req']:.3f} | "
            f"{100 * (r.get('foreign_util') or 0):.0f} % |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
