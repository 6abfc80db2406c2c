"""Running the listeners: start, watch the config file, drain on SIGTERM, exit 0.

Drain: readiness turns 503 at once; the listeners keep accepting for `drain_delay` (while
Kubernetes removes the endpoint); then they stop accepting and in-flight requests get
`shutdown_grace` to finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
from pathlib import Path

from synapse import logs
from synapse.api.protocol import framing_error
from synapse.gateway import Gateway
from synapse.health.checker import run_forever as health_checks
from synapse.http.server import Limits, Server
from synapse.loopwatch import LoopWatch
from synapse.server.app import main_app, metrics_app, ollama_app

log = logging.getLogger("synapse")
GC_YOUNG_THRESHOLD = 10_000  # allocations between young collections (CPython default: 700)


def _fingerprint(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()  # follows the ConfigMap's ..data symlink swap
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


async def watch_config(gateway: Gateway) -> None:
    path = gateway.config.path
    seen = _fingerprint(path)
    while True:
        await asyncio.sleep(gateway.config.settings.reload_interval or 2.0)
        if not gateway.config.settings.reload_interval:
            continue
        current = _fingerprint(path)
        if current is not None and current != seen:
            seen = current
            gateway.reload(path)


async def serve(
    gateway: Gateway, host: str, port: int, ollama_port: int | None, metrics_port: int | None
) -> None:
    settings = gateway.config.settings
    await gateway.start()
    servers: list[Server] = []
    main, ollama = main_app(gateway), ollama_app(gateway)
    listeners = [(main, main.refused, port, "openai")]
    if ollama_port:
        listeners.append((ollama, ollama.refused, ollama_port, "ollama"))
    if metrics_port:
        listeners.append((metrics_app, framing_error, metrics_port, "metrics"))
    limits = Limits(settings.header_read_timeout, settings.keepalive_timeout)
    for app, refused, listen_port, name in listeners:
        server = Server(app, refused, limits, lambda: gateway.config.settings.write_timeout)
        await server.listen(host, listen_port)
        servers.append(server)
        log.info(
            "listening", extra={"fields": {"listener": name, "host": host, "port": listen_port}}
        )

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, gateway.reload)
    loop_watch = LoopWatch(lambda: gateway.config.settings.loop_stall_threshold)
    tasks = [
        asyncio.create_task(loop_watch.run()),
        asyncio.create_task(watch_config(gateway)),
        asyncio.create_task(health_checks(gateway)),
    ]
    for warning in gateway.config.warnings:
        log.warning(warning, extra={"fields": {"event": "config_warning"}})
    # What start-up built (config, router, metric families, modules) lives for the process: out
    # of the collector's sight, and young-generation collections less often, as requests leave
    # little garbage that reference counting does not already free.
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
    log.info(
        "ready", extra={"fields": {"pid": os.getpid(), "models": sorted(gateway.config.groups)}}
    )

    await stop.wait()
    gateway.draining = True
    delay = gateway.config.settings.drain_delay
    log.info(
        "draining",
        extra={"fields": {"drain_delay": delay, "shutdown_grace": settings.shutdown_grace}},
    )
    stop.clear()
    with contextlib.suppress(TimeoutError):  # a second signal skips the delay
        await asyncio.wait_for(stop.wait(), delay)
    await asyncio.gather(*(s.shutdown(settings.shutdown_grace) for s in servers))
    for task in tasks:
        task.cancel()
    await gateway.stop()
    logs.REQUESTS.flush()
    log.info("stopped", extra={"fields": {"pid": os.getpid()}})
