"""Figures for README "Security": what the hostile bodies of test_bounded_work cost the gateway.

Run: .venv/bin/python -m tests.gateway.measure_bounded
Starts a stub backend and a gateway as the tests do; prints, per request, the status, the
gateway's CPU time and its peak resident memory above what it held before.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import httpx

from tests.conftest import MASTER_KEY, Backend, Gateway, routing_config
from tests.gateway import raw
from tests.gateway.liveness import cpu_seconds, proc_status_bytes
from tests.gateway.test_bounded_work import MIB, tool_history, wide_body


def main() -> None:
    backend = Backend("openai")
    gateway = Gateway(routing_config(backend, None), Path(tempfile.mkdtemp()))
    pid = gateway.proc.pid
    try:
        headers = [("Authorization", f"Bearer {MASTER_KEY}"), ("Content-Type", "application/json")]
        rss, cpu = raw.rss_bytes(pid), cpu_seconds(pid)
        answer = raw.request(
            gateway.port, "POST", "/v1/chat/completions", headers, wide_body(16 * MIB - 64)
        )
        print(
            f"16 MiB of [{{}},{{}},…]: {answer.status}, {cpu_seconds(pid) - cpu:.2f} CPU-s, "
            f"peak RSS +{(proc_status_bytes(pid, 'VmHWM') - rss) / MIB:.0f} MiB"
        )
        for n in (5_000, 10_000, 20_000):
            body = {"model": "llama-gpu", "messages": tool_history(n), "stream": False}
            cpu = cpu_seconds(pid)
            reply = httpx.post(gateway.ollama_url + "/api/chat", json=body, timeout=300)
            print(
                f"{n} tool calls and results: {reply.status_code}, {cpu_seconds(pid) - cpu:.2f} CPU-s"
            )
    finally:
        gateway.stop()
        backend.stop()


if __name__ == "__main__":
    main()
