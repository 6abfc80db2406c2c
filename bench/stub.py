"""A backend far cheaper than any gateway: nginx answering fixed OpenAI- and Ollama-shaped bodies.

nginx cannot look inside a request body, so streaming and non-streaming chat live under
different prefixes (`/v1/...` answers JSON, `/stream/v1/...` answers a 20-event SSE stream,
`/sse-long/v1/...` a 256-event one); the bench config gives each streaming model group its base. Embeddings are floats (the OpenAI SDK
only decodes base64 when the answer holds strings, so floats satisfy its default request).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from procs import wait_http

EMBED_DIM = int(os.environ.get("BENCH_EMBED_DIM", "1024"))
STREAM_TOKENS = 16
# The long stream for the per-event cost: 252 tokens + role, finish, usage and [DONE] = 256.
SSE_LONG_TOKENS = 252
CHAT_TEXT = "The quick brown fox jumps over the lazy dog near the quiet river bank today."


def _vector(dim: int) -> list[float]:
    # Deterministic, realistic-width floats (an 8-digit mantissa like a real model's output).
    return [round(((i * 7919) % 1000) / 1000.0 - 0.5 + 1e-6 * i, 8) for i in range(dim)]


def chat_body() -> dict:
    return {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "bench-chat",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": CHAT_TEXT},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": STREAM_TOKENS, "total_tokens": 28},
    }


def sse_body(tokens: int = STREAM_TOKENS) -> str:
    base = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "bench-chat",
    }
    words = CHAT_TEXT.split(" ")
    events = [
        {
            **base,
            "choices": [
                {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
            ],
        }
    ]
    for i in range(tokens):
        piece = (" " if i else "") + words[i % len(words)]
        events.append(
            {**base, "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}
        )
    events.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    usage = {"prompt_tokens": 12, "completion_tokens": tokens, "total_tokens": 12 + tokens}
    events.append({**base, "choices": [], "usage": usage})
    lines = [f"data: {json.dumps(e, separators=(',', ':'))}\n\n" for e in events]
    return "".join(lines) + "data: [DONE]\n\n"


def sse_events(body: str) -> int:
    """Events in an SSE body (each ends with a blank line), `data: [DONE]` included."""
    return body.count("\n\n")


def embeddings_body(dim: int = EMBED_DIM) -> dict:
    return {
        "object": "list",
        "data": [{"object": "embedding", "index": 0, "embedding": _vector(dim)}],
        "model": "bench-embed",
        "usage": {"prompt_tokens": 4, "total_tokens": 4},
    }


def ollama_embed_body(dim: int = EMBED_DIM) -> dict:
    return {
        "model": "bench-embed",
        "embeddings": [_vector(dim)],
        "total_duration": 1000000,
        "load_duration": 1000,
        "prompt_eval_count": 4,
    }


def ollama_embeddings_body(dim: int = EMBED_DIM) -> dict:
    return {"embedding": _vector(dim)}


MODELS = {
    "object": "list",
    "data": [
        {"id": m, "object": "model", "created": 1700000000, "owned_by": "bench"}
        for m in ("bench-chat", "bench-embed")
    ],
}
TAGS = {
    "models": [
        {
            "name": "bench-embed:latest",
            "model": "bench-embed:latest",
            "size": 1,
            "digest": "0" * 64,
            "modified_at": "2026-01-01T00:00:00Z",
            "details": {"family": "bert"},
        }
    ]
}


def _ret(ctype: str, body: str, www: Path, name: str) -> str:
    """A short answer inline; a long one (nginx caps a config token at 4 KB) from a file.

    The static handler refuses POST with 405, so `error_page 405 =200 $uri` re-serves the
    file as a GET: one internal redirect, still far cheaper than any Python gateway.
    """
    if len(body) < 2000 and "'" not in body and "$" not in body and "\\" not in body:
        return f"default_type {ctype}; return 200 '{body}';"
    (www / name).write_text(body)
    return f"default_type {ctype}; alias {www / name}; error_page 405 =200 $uri;"


def _j(obj: object) -> str:
    return json.dumps(obj, separators=(",", ":"))


def render_conf(run_dir: Path, port: int, www: Path) -> str:
    """nginx.conf for one worker, loopback only; temp paths in `run_dir`, bodies in `www`."""
    tmp = run_dir / "nginx"
    answers = {
        "/v1/chat/completions": ("application/json", _j(chat_body())),
        "/stream/v1/chat/completions": ("text/event-stream", sse_body()),
        "/sse-long/v1/chat/completions": ("text/event-stream", sse_body(SSE_LONG_TOKENS)),
        "/v1/embeddings": ("application/json", _j(embeddings_body())),
        "/v1/models": ("application/json", _j(MODELS)),
        "/stream/v1/models": ("application/json", _j(MODELS)),
        "/sse-long/v1/models": ("application/json", _j(MODELS)),
        "/api/embed": ("application/json", _j(ollama_embed_body())),
        "/api/embeddings": ("application/json", _j(ollama_embeddings_body())),
        "/api/tags": ("application/json", _j(TAGS)),
        "/api/version": ("application/json", '{"version":"0.34.2"}'),
        "/health": ("application/json", '{"status":"ok"}'),
        "/": ("text/plain", "Ollama is running"),
    }
    blocks = "\n".join(
        f"    location = {path} {{ {_ret(ctype, body, www, f'a{i}.body')} }}"
        for i, (path, (ctype, body)) in enumerate(answers.items())
    )
    return f"""worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 8192; multi_accept on; }}
http {{
  access_log off;
  client_body_temp_path {tmp}/body;
  proxy_temp_path {tmp}/proxy;
  fastcgi_temp_path {tmp}/fastcgi;
  uwsgi_temp_path {tmp}/uwsgi;
  scgi_temp_path {tmp}/scgi;
  client_max_body_size 16m;
  client_body_buffer_size 1m;
  keepalive_requests 10000000;
  keepalive_timeout 300s;
  etag off;
  open_file_cache max=64;
  sendfile on;
  tcp_nodelay on;
  server {{
    listen 127.0.0.1:{port} backlog=4096;
{blocks}
    location = /nginx_status {{ stub_status; }}
    location / {{ return 404 '{{"error":"not found"}}'; }}
  }}
}}
"""


@dataclass
class Nginx:
    """One nginx master + worker; `stop()` sends SIGTERM to the master we started."""

    run_dir: Path
    port: int
    cpus: str | None = None
    proc: subprocess.Popen | None = field(default=None, repr=False)
    www: Path | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        exe = shutil.which("nginx") or "/usr/sbin/nginx"
        tmp = self.run_dir / "nginx"
        tmp.mkdir(parents=True, exist_ok=True)
        # A root master's workers run as nobody, who may not traverse run_dir's parents
        # (pytest's tmp dirs are 0700): the answer files live in a world-readable /tmp dir.
        self.www = Path(tempfile.mkdtemp(prefix="synapse-bench-www-"))
        self.www.chmod(0o755)
        conf = tmp / "nginx.conf"
        conf.write_text(render_conf(self.run_dir, self.port, self.www))
        cmd = [exe, "-c", str(conf), "-p", str(tmp), "-e", str(tmp / "error.log")]
        if self.cpus:
            cmd = ["taskset", "-c", self.cpus, *cmd]
        log = (tmp / "stdout.log").open("wb")
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        wait_http(f"{self.base}/health", deadline=time.monotonic() + 10, proc=self.proc)

    def accepted(self) -> int:
        """Connections nginx has accepted so far (stub_status): shows backend keep-alive reuse."""
        import urllib.request

        with urllib.request.urlopen(f"{self.base}/nginx_status", timeout=5) as resp:
            return int(resp.read().decode().splitlines()[2].split()[0])

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        if self.www is not None:
            shutil.rmtree(self.www, ignore_errors=True)
