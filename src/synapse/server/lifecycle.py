"""Running the listeners: start, watch the config file, drain on SIGTERM, exit 0.

Drain: readiness turns 503 at once; the listeners keep accepting for `drain_delay` (while
Kubernetes removes the endpoint); then they stop accepting and in-flight requests get
`shutdown_grace` to finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from pathlib import Path

from aiohttp import web

from synapse import logs
from synapse.health.checker import run_forever as health_checks
from synapse.server.app import main_app, metrics_app, ollama_app
from synapse.server.gateway import Gateway
from synapse.server.listener import Runner

log = logging.getLogger("synapse")


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
    runners: list[web.AppRunner] = []
    listeners = [(main_app(gateway), port, "openai")]
    if ollama_port:
        listeners.append((ollama_app(gateway), ollama_port, "ollama"))
    if metrics_port:
        listeners.append((metrics_app(), metrics_port, "metrics"))
    for app, listen_port, name in listeners:
        runner = Runner(
            app,
            header_read_timeout=settings.header_read_timeout,
            auto_decompress=False,  # request bodies are never unpacked (415 if encoded)
            handler_cancellation=True,
            access_log=None,
            shutdown_timeout=settings.shutdown_grace,
        )
        await runner.setup()
        await web.TCPSite(runner, host, listen_port, backlog=1024, reuse_address=True).start()
        runners.append(runner)
        log.info(
            "listening", extra={"fields": {"listener": name, "host": host, "port": listen_port}}
        )

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, gateway.reload)
    tasks = [
        asyncio.create_task(watch_config(gateway)),
        asyncio.create_task(health_checks(gateway)),
    ]
    for warning in gateway.config.warnings:
        log.warning(warning, extra={"fields": {"event": "config_warning"}})
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
    for runner in runners:
        await runner.cleanup()  # stop accepting, wait up to shutdown_grace for handlers
    for task in tasks:
        task.cancel()
    await gateway.stop()
    logs.REQUESTS.flush()
    log.info("stopped", extra={"fields": {"pid": os.getpid()}})
