"""Stand-ins for Ollama, vLLM and the Synapse gateway, on their public wire formats.

Ollama: `/api/tags`, `/api/pull` (NDJSON: status lines, digest/total/completed, final
`{"status":"success"}`, errors as `{"error": ...}`), `/api/embed`, `/api/embeddings`,
`/api/show`, `/v1/chat/completions`. The gateway: the Ollama routes on its keyless port, keyed
`/v1/*` and `/health`, `/metrics` with the contract's series, fallback when vLLM is down.
Vectors are a deterministic function of (model, text), so two servers with one model agree.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import math
import struct
import wave
from collections import Counter
from typing import Any

from aiohttp import web


def vector(model: str, text: str, dim: int) -> list[float]:
    seed = hashlib.sha256(f"{model.removesuffix(':latest')}|{text}".encode()).digest()
    raw = [((seed[i % 32] * (i + 7)) % 251) / 125.0 - 1.0 for i in range(dim)]
    norm = math.sqrt(sum(x * x for x in raw)) or 1.0
    return [x / norm for x in raw]


def text(body: str) -> Any:
    async def handler(_: web.Request) -> web.Response:
        return web.Response(text=body)

    return handler


def payload(doc: Any) -> Any:
    async def handler(_: web.Request) -> web.Response:
        return web.json_response(doc)

    return handler


def norm_name(name: str) -> str:
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


class FakeOllama:
    def __init__(
        self,
        models: list[str],
        *,
        available: dict[str, list[int]] | None = None,
        dim: int = 1024,
        embed_ns: int = 42_000_000,
    ) -> None:
        self.models = [norm_name(m) for m in models]
        # Pullable models: name -> layer sizes.
        self.available = {norm_name(k): v for k, v in (available or {}).items()}
        self.dim = dim
        self.embed_ns = embed_ns
        self.pulls: list[str] = []
        self.calls: Counter[str] = Counter()

    def app(self) -> web.Application:
        app = web.Application()
        r = app.router
        r.add_get("/", text("Ollama is running"))
        r.add_get("/api/version", payload({"version": "0.34.2"}))
        r.add_get("/api/tags", self.tags)
        r.add_post("/api/pull", self.pull)
        r.add_post("/api/embed", self.embed)
        r.add_post("/api/embeddings", self.embeddings)
        r.add_post("/api/show", self.show)
        r.add_post("/v1/chat/completions", self.chat)
        return app

    async def tags(self, request: web.Request) -> web.Response:
        self.calls["tags"] += 1
        return web.json_response(
            {
                "models": [
                    {
                        "name": m,
                        "model": m,
                        "modified_at": "2026-01-01T00:00:00Z",
                        "size": 669_615_493,
                        "digest": hashlib.sha256(m.encode()).hexdigest(),
                        "details": {"format": "gguf", "family": "bert"},
                    }
                    for m in self.models
                ]
            }
        )

    def _have(self, name: str) -> bool:
        return norm_name(name) in self.models

    async def pull(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        name = norm_name(body.get("model") or body.get("name"))
        self.pulls.append(name)
        resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await resp.prepare(request)

        async def send(obj: dict[str, Any]) -> None:
            await resp.write(json.dumps(obj).encode() + b"\n")
            await asyncio.sleep(0)

        await send({"status": "pulling manifest"})
        if name not in self.available:
            await send({"error": "pull model manifest: file does not exist"})
            await resp.write_eof()
            return resp
        for i, size in enumerate(self.available[name]):
            digest = "sha256:" + hashlib.sha256(f"{name}{i}".encode()).hexdigest()
            for done in (0, size // 2, size):
                await send(
                    {
                        "status": f"pulling {digest[7:19]}",
                        "digest": digest,
                        "total": size,
                        "completed": done,
                    }
                )
        for status in ("verifying sha256 digest", "writing manifest", "success"):
            await send({"status": status})
        if name not in self.models:
            self.models.append(name)
        await resp.write_eof()
        return resp

    async def embed(self, request: web.Request) -> web.Response:
        body = await request.json()
        if not self._have(body["model"]):
            return web.json_response(
                {"error": f'model "{body["model"]}" not found, try pulling it first'}, status=404
            )
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        self.calls["embed"] += 1
        return web.json_response(
            {
                "model": body["model"],
                "embeddings": [vector(body["model"], t, self.dim) for t in inputs],
                "total_duration": self.embed_ns,
                "load_duration": 1_000_000,
                "prompt_eval_count": len(inputs),
            }
        )

    async def embeddings(self, request: web.Request) -> web.Response:
        body = await request.json()
        if not self._have(body["model"]):
            return web.json_response({"error": f'model "{body["model"]}" not found'}, status=404)
        self.calls["embeddings"] += 1
        return web.json_response({"embedding": vector(body["model"], body["prompt"], self.dim)})

    async def show(self, request: web.Request) -> web.Response:
        body = await request.json()
        if not self._have(body.get("model") or body.get("name")):
            return web.json_response({"error": "model not found"}, status=404)
        return web.json_response({"details": {"family": "llama"}, "model_info": {}})

    async def chat(self, request: web.Request) -> web.Response:
        body = await request.json()
        if not self._have(body["model"]):
            return web.json_response({"error": {"message": "model not found"}}, status=404)
        return web.json_response(openai_chat(body["model"], "Hello!", body.get("max_tokens", 8)))


def openai_chat(model: str, text: str, tokens: int) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1767225600,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "length",
            }
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": tokens, "total_tokens": tokens + 5},
    }


class FakeVLLM:
    """vLLM's OpenAI server as documented: tool_choice "auto" is a 400 unless the server runs
    with --enable-auto-tool-choice and --tool-call-parser (`auto_tools`)."""

    def __init__(self, model: str = "meta-llama/Meta-Llama-3.1-8B-Instruct") -> None:
        self.model = model
        self.up = True
        self.auto_tools = True

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/health", self.health)
        app.router.add_post("/v1/chat/completions", self.chat)
        return app

    async def health(self, request: web.Request) -> web.Response:
        return web.Response(status=200 if self.up else 503)

    async def chat(self, request: web.Request) -> web.Response:
        body = await request.json()
        if body["model"] != self.model:
            return web.json_response({"error": {"message": "model not found"}}, status=404)
        if body.get("tools"):
            return self.tool_call(body)
        return web.json_response(openai_chat(self.model, "Hi " * 3, body.get("max_tokens", 16)))

    def tool_call(self, body: dict[str, Any]) -> web.Response:
        """vLLM 0.32's checks (renderers/online_renderer.py) when no tool parser is set."""
        choice = body.get("tool_choice", "auto")
        if not self.auto_tools and choice not in (None, "none"):
            if choice == "auto":
                message = (
                    '"auto" tool choice requires --enable-auto-tool-choice and '
                    "--tool-call-parser to be set"
                )
            else:
                described = (
                    f'function "{choice["function"]["name"]}"'
                    if isinstance(choice, dict)
                    else f'"{choice}"'
                )
                message = f"tool_choice={described} requires --tool-call-parser to be set"
            error = {"message": message, "type": "BadRequestError", "param": None, "code": 400}
            return web.json_response({"error": error}, status=400)
        doc = openai_chat(self.model, "", 20)
        name = body["tools"][0]["function"]["name"]
        doc["choices"][0]["message"] = {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "chatcmpl-tool-1",
                    "type": "function",
                    "function": {"name": name, "arguments": '{"city": "Paris"}'},
                }
            ],
        }
        doc["choices"][0]["finish_reason"] = "tool_calls"
        return web.json_response(doc)


def wav_bytes(seconds: float = 0.5) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(struct.pack("<h", 0) * int(16000 * seconds))
    return buf.getvalue()


class GatewayState:
    """What all gateway replicas share: the config's names and whether vLLM is up."""

    def __init__(self, key: str, served: list[str], vllm: FakeVLLM) -> None:
        self.key = key
        self.served = served
        self.unlisted: set[str] = set()  # served (resolvable by /api/show) but not in /api/tags
        self.vllm = vllm
        self.consumer_keys: set[str] = set()  # valid, but not the master key: /health is 403


class FakePrometheus:
    """Prometheus's HTTP API, the two reads verify uses: /api/v1/rules and /api/v1/targets."""

    def __init__(self) -> None:
        self.alerts: list[str] = []  # loaded alerting rules
        self.targets: list[dict[str, Any]] = []  # activeTargets

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/api/v1/rules", self.rules)
        app.router.add_get("/api/v1/targets", self.active)
        return app

    async def rules(self, request: web.Request) -> web.Response:
        rules = [{"name": a, "type": "alerting", "health": "ok"} for a in self.alerts]
        groups = [{"name": "synapse", "file": "/etc/prometheus/rules/x.yaml", "rules": rules}]
        return web.json_response({"status": "success", "data": {"groups": groups if rules else []}})

    async def active(self, request: web.Request) -> web.Response:
        data = {"activeTargets": self.targets, "droppedTargets": []}
        return web.json_response({"status": "success", "data": data})


class FakeDCGM:
    """dcgm-exporter's /metrics: frame-buffer use in MiB."""

    def __init__(self, used_mib: float, free_mib: float) -> None:
        self.used_mib, self.free_mib = used_mib, free_mib

    def app(self) -> web.Application:
        async def metrics(_: web.Request) -> web.Response:
            labels = 'gpu="0",modelName="NVIDIA GeForce RTX 5090"'
            return web.Response(
                text=f"DCGM_FI_DEV_FB_USED{{{labels}}} {self.used_mib}\n"
                f"DCGM_FI_DEV_FB_FREE{{{labels}}} {self.free_mib}\n",
                content_type="text/plain",
            )

        app = web.Application()
        app.router.add_get("/metrics", metrics)
        return app


class FakeGateway:
    """One gateway replica (its own /metrics counters), serving /metrics only on its metrics
    listener (`metrics_app`), as the gateway does with synapse_settings.metrics_port."""

    def __init__(self, state: GatewayState) -> None:
        self.state = state
        self.requests: Counter[tuple[str, str]] = Counter()
        self.fallbacks: Counter[tuple[str, str]] = Counter()
        self.seen_auth: list[dict[str, str]] = []

    def app(self) -> web.Application:
        app = web.Application()
        r = app.router
        r.add_get("/", text("Ollama is running"))
        r.add_get("/health/liveliness", payload({"status": "alive"}))
        r.add_get("/health/readiness", payload({"status": "ready"}))
        r.add_get("/health", self.health)
        r.add_get("/api/tags", self.tags)
        r.add_post("/api/show", self.show)
        r.add_post("/api/embed", self.embed)
        r.add_post("/api/embeddings", self.embeddings)
        r.add_get("/v1/models", self.models)
        r.add_post("/v1/embeddings", self.v1_embeddings)
        r.add_post("/v1/chat/completions", self.chat)
        r.add_post("/v1/audio/speech", self.speech)
        r.add_post("/v1/audio/transcriptions", self.transcribe)
        return app

    def metrics_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/metrics", self.metrics)
        return app

    def _authorized(self, request: web.Request) -> bool:
        self.seen_auth.append(
            {
                k: v
                for k, v in request.headers.items()
                if k.lower() in ("authorization", "x-api-key")
            }
        )
        key = self.state.key
        return (
            request.headers.get("Authorization") == f"Bearer {key}"
            or request.headers.get("x-api-key") == key
        )

    def _denied(self) -> web.Response:
        return web.json_response(
            {"error": {"message": "invalid key", "type": "auth_error", "param": None, "code": 401}},
            status=401,
        )

    def _serves(self, name: str) -> bool:
        return norm_name(name) in {norm_name(s) for s in self.state.served}

    async def tags(self, request: web.Request) -> web.Response:
        listed = [s for s in self.state.served if s not in self.state.unlisted]
        return web.json_response({"models": [{"name": s, "model": s} for s in listed]})

    async def show(self, request: web.Request) -> web.Response:
        body = await request.json()
        if not self._serves(body.get("model", "")):
            return web.json_response({"error": "model not found"}, status=404)
        return web.json_response({"details": {}})

    async def embed(self, request: web.Request) -> web.Response:
        body = await request.json()
        if not self._serves(body["model"]):
            return web.json_response({"error": f"model '{body['model']}' not found"}, status=404)
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        return web.json_response(
            {
                "model": body["model"],
                "embeddings": [vector(body["model"], t, 1024) for t in inputs],
                "total_duration": 45_000_000,
            }
        )

    async def embeddings(self, request: web.Request) -> web.Response:
        body = await request.json()
        if not self._serves(body["model"]):
            return web.json_response({"error": "model not found"}, status=404)
        return web.json_response({"embedding": vector(body["model"], body["prompt"], 1024)})

    async def health(self, request: web.Request) -> web.Response:
        presented = request.headers.get("x-api-key") or request.headers.get("Authorization", "")
        if presented.removeprefix("Bearer ") in self.state.consumer_keys:
            message = "/health shows every deployment and is for the master key"
            return web.json_response(
                {"error": {"message": message, "type": "permission_error"}}, status=403
            )
        if not self._authorized(request):
            return self._denied()
        return web.json_response(
            {
                "healthy_endpoints": [{"model": "mxbai-embed-large"}],
                "unhealthy_endpoints": [] if self.state.vllm.up else [{"model": "llama3.1-8b"}],
            }
        )

    async def models(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return self._denied()
        return web.json_response(
            {"object": "list", "data": [{"id": s, "object": "model"} for s in self.state.served]}
        )

    async def v1_embeddings(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return self._denied()
        body = await request.json()
        return web.json_response(
            {
                "object": "list",
                "data": [
                    {
                        "object": "embedding",
                        "index": 0,
                        "embedding": vector(body["model"], str(body["input"]), 1024),
                    }
                ],
                "model": body["model"],
            }
        )

    async def chat(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return self._denied()
        body = await request.json()
        model = body["model"]
        if model == "llama3.1-8b" and not self.state.vllm.up:
            self.fallbacks[(model, "llama3.1-8b-cpu")] += 1
            self.requests[("llama3.1-8b-cpu", "ollama-llama3.1-8b")] += 1
        else:
            self.requests[(model, "vllm-llama3.1-8b")] += 1
        return web.json_response(openai_chat(model, "Hello", body.get("max_tokens", 8)))

    async def speech(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return self._denied()
        return web.Response(body=wav_bytes(), content_type="audio/wav")

    async def transcribe(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return self._denied()
        form = await request.post()
        upload = form["file"]
        data = upload.file.read()  # type: ignore[union-attr]
        if not data.startswith(b"RIFF"):
            return web.json_response({"error": {"message": "not audio"}}, status=400)
        return web.json_response({"text": "Hello world."})

    async def metrics(self, request: web.Request) -> web.Response:
        up = 1 if self.state.vllm.up else 0
        lines = [
            "# TYPE synapse_deployment_up gauge",
            'synapse_deployment_up{model="mxbai-embed-large",deployment="ollama-mxbai-embed-large",provider="ollama"} 1',
            f'synapse_deployment_up{{model="llama3.1-8b",deployment="vllm-llama3.1-8b",provider="hosted_vllm"}} {up}',
            "# TYPE synapse_requests_total counter",
        ]
        for (model, dep), n in self.requests.items():
            lines.append(
                f'synapse_requests_total{{model="{model}",deployment="{dep}",route="/v1/chat/completions",status="200"}} {n}'
            )
        lines.append("# TYPE synapse_fallbacks_total counter")
        for (src, dst), n in self.fallbacks.items():
            lines.append(f'synapse_fallbacks_total{{from_model="{src}",to_model="{dst}"}} {n}')
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")
