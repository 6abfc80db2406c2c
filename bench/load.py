"""Load generation: wrk runs (throughput, latency percentiles) and an async client for TTFT."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from procs import cpu_busy, cpu_seconds

LUA = Path(__file__).resolve().parent / "wrk" / "post.lua"


@dataclass(frozen=True)
class Case:
    """One request shape. `listener` picks the gateway port: "api" (keyed) or "ollama"."""

    name: str
    title: str
    path: str
    direct_path: str
    body: dict
    listener: str = "api"
    litellm: bool = True

    def body_file(self, run_dir: Path) -> Path:
        out = run_dir / "bodies" / f"{self.name}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(self.body))
        return out


MESSAGES = [{"role": "user", "content": "Say something short."}]
CASES: tuple[Case, ...] = (
    Case(
        "chat",
        "chat, non-streaming",
        "/v1/chat/completions",
        "/v1/chat/completions",
        {"model": "bench-chat", "messages": MESSAGES, "max_tokens": 16},
    ),
    Case(
        "chat_stream",
        "chat, streaming (whole stream)",
        "/v1/chat/completions",
        "/stream/v1/chat/completions",
        {
            "model": "bench-chat-stream",
            "messages": MESSAGES,
            "max_tokens": 16,
            "stream": True,
            "stream_options": {"include_usage": True},
        },
    ),
    Case(
        "embeddings",
        "/v1/embeddings (OpenAI backend)",
        "/v1/embeddings",
        "/v1/embeddings",
        {"model": "bench-embed", "input": "The food was delicious and the waiter was kind."},
    ),
    Case(
        "embeddings_ollama",
        "/v1/embeddings (Ollama backend)",
        "/v1/embeddings",
        "/api/embed",
        {"model": "bench-embed-ollama", "input": "The food was delicious and the waiter was kind."},
    ),
    Case(
        "api_embed",
        "Ollama /api/embed",
        "/api/embed",
        "/api/embed",
        {"model": "bench-embed-ollama", "input": "The food was delicious."},
        listener="ollama",
        litellm=False,
    ),
    Case(
        "api_embeddings",
        "Ollama /api/embeddings",
        "/api/embeddings",
        "/api/embeddings",
        {"model": "bench-embed-ollama", "prompt": "The food was delicious."},
        listener="ollama",
        litellm=False,
    ),
)

# Not in the concurrency sweep: measured once per path, sequentially, for the per-event cost.
SSE_LONG = Case(
    "chat_sse_long",
    "chat, streaming, 256 events (c=1)",
    "/v1/chat/completions",
    "/sse-long/v1/chat/completions",
    {
        "model": "bench-chat-sse-long",
        "messages": MESSAGES,
        "stream": True,
        "stream_options": {"include_usage": True},
    },
)

# One event per backend write, `--paced-gap-ms` apart (paced_sse.py): the per-token delay.
PACED = Case(
    "chat_paced",
    "chat, streaming, one event per write (c=1)",
    "/v1/chat/completions",
    "/v1/chat/completions",
    {"model": "bench-chat-paced", "messages": MESSAGES, "stream": True},
)


def wrk_cmd(cpus: str | None) -> list[str]:
    exe = shutil.which("wrk")
    if exe is None:
        raise RuntimeError("wrk not found: `apt-get install -y wrk` (make bench does it)")
    return ["taskset", "-c", cpus, exe] if cpus else [exe]


def run_wrk(
    base: str,
    path: str,
    body_file: Path,
    connections: int,
    duration: float,
    *,
    key: str | None = None,
    cpus: str | None = None,
    max_requests: int = 0,
    timeout_s: int = 10,
    watch_pid: int | None = None,
    watch_cpus: str | None = None,
) -> dict:
    """One wrk run (one thread). Adds req/s, error total and, if `watch_pid`, its CPU use."""
    env = {
        **os.environ,
        "WRK_BODY_FILE": str(body_file),
        "WRK_PATH": path,
        "WRK_API_KEY": key or "",
        "WRK_MAX_REQUESTS": str(max_requests),
    }
    cmd = [
        *wrk_cmd(cpus),
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(duration))}s",
        f"--timeout={timeout_s}s",
        "-s",
        str(LUA),
        base,
    ]
    done_file = body_file.with_suffix(".done")
    done_file.unlink(missing_ok=True)
    env["WRK_DONE_FILE"] = str(done_file)
    cpu0 = cpu_seconds(watch_pid) if watch_pid else 0.0
    busy0 = cpu_busy(watch_cpus)
    wall0 = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if max_requests:
        # Poll for the Lua script's "quota reached" marker, then let wrk report (SIGINT).
        while proc.poll() is None and time.monotonic() - wall0 < duration + 5:
            if done_file.exists():
                proc.send_signal(signal.SIGINT)
                break
            time.sleep(0.02)
    try:
        stdout, stderr = proc.communicate(timeout=duration + timeout_s + 30)
    except subprocess.TimeoutExpired:
        proc.kill()
        stdout, stderr = proc.communicate()
    wall = time.monotonic() - wall0
    cpu = (cpu_seconds(watch_pid) - cpu0) if watch_pid else None
    busy = cpu_busy(watch_cpus) - busy0
    line = next((x for x in stdout.splitlines() if x.startswith("WRKJSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {stderr or stdout}")
    out = json.loads(line.removeprefix("WRKJSON "))
    secs = out["duration_us"] / 1e6
    out["connections"] = connections
    out["rps"] = out["requests"] / secs if secs > 0 else 0.0
    out["errors"] = (
        sum(out[k] for k in ("connect_errors", "read_errors", "write_errors", "status_errors"))
        + out["timeouts"]
    )
    if cpu is not None:
        out["cpu_s"] = cpu
        out["cpu_ms_per_req"] = 1000 * cpu / out["requests"] if out["requests"] else None
        out["cpu_util"] = cpu / wall if wall > 0 else None
        # Busy time on the watched core(s) not spent by the watched process: other load.
        out["foreign_util"] = max(0.0, busy - cpu) / wall if wall > 0 and watch_cpus else None
    return out


async def ttft_series(url: str, body: dict, n: int, key: str | None) -> dict:
    """Sequential streaming requests: time to the first content chunk and to the end."""
    import aiohttp

    from synapse.ops.bench import read_sse

    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    ttft: list[float] = []
    total: list[float] = []
    errors = 0
    connector = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(connector=connector) as session:
        for _ in range(n):
            t0 = time.perf_counter()
            try:
                async with session.post(url, json=body, headers=headers) as resp:
                    if resp.status != 200:
                        errors += 1
                        await resp.read()
                        continue
                    res = await read_sse(resp, t0)
            except aiohttp.ClientError:
                errors += 1
                continue
            if res.first_s is None:
                errors += 1
                continue
            ttft.append(res.first_s * 1000)
            total.append(res.end_s * 1000)
    return {"ttft_ms": ttft, "total_ms": total, "errors": errors, "n": n}


async def paced_series(url: str, body: dict, n: int, key: str | None) -> dict:
    """Sequential streams from paced_sse.py: each event's latency since the backend wrote it."""
    import aiohttp
    import orjson
    from paced_sse import stamp_latency_us

    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    latency: list[float] = []
    errors = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as session:
        for _ in range(n):
            try:
                async with session.post(url, json=body, headers=headers) as resp:
                    if resp.status != 200:
                        errors += 1
                        await resp.read()
                        continue
                    async for line in resp.content:
                        now = time.monotonic_ns()
                        if not line.startswith(b"data: {"):
                            continue
                        for choice in orjson.loads(line[6:]).get("choices") or ():
                            content = (choice.get("delta") or {}).get("content") or ""
                            us = stamp_latency_us(content, now)
                            if us is not None:
                                latency.append(us)
            except (aiohttp.ClientError, ValueError):
                errors += 1
    return {"latency_us": latency, "errors": errors, "streams": n}
