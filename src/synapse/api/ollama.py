"""Ollama-compatible surface (/api/*, `GET /`): consumers migrate by changing only the host.

Requests for Ollama deployments pass through natively (only `model` rewritten); requests
for OpenAI-compatible deployments (vLLM) are translated both ways (synapse.translate).
"""

from __future__ import annotations

import asyncio
import hashlib
import re

import orjson

from synapse import __version__
from synapse.api import relay, vectors
from synapse.api.context import Context
from synapse.api.protocol import json_response
from synapse.api.surface import has_master_key
from synapse.api.vectors import Params
from synapse.backends import upstream
from synapse.backends.upstream import ResponseTooLarge
from synapse.config.model import Deployment
from synapse.errors import (
    BadGateway,
    BadRequest,
    Forbidden,
    GatewayError,
    ModelNotFound,
    Unavailable,
)
from synapse.http.client import ClientError
from synapse.http.message import Request, Response, StreamResponse
from synapse.http.routes import Routes
from synapse.routing import Router
from synapse.routing.deployment import DeploymentState
from synapse.translate import chat as chat_tr
from synapse.translate import embeddings as embed_tr

# The Ollama API version Synapse's answers follow (clients gate features on it).
OLLAMA_API_VERSION = "0.12.0"
# An Ollama model list is ~1 KiB per model: a backend's list larger than this is refused.
TAGS_LIMIT = 1 << 20


def add_routes(routes: Routes) -> None:
    routes.add("GET", "/", root)  # GET routes also answer HEAD
    routes.add("GET", "/api/version", version)
    routes.add("GET", "/api/tags", tags)
    routes.add("GET", "/api/ps", running)
    routes.add("POST", "/api/show", show)
    routes.add("POST", "/api/embed", embed)
    routes.add("POST", "/api/embeddings", embeddings_legacy)
    routes.add("POST", "/api/chat", chat)
    routes.add("POST", "/api/generate", generate)
    routes.add("POST", "/api/pull", pull)
    for path in ("/api/push", "/api/create", "/api/copy"):
        routes.add("POST", path, manage)
    routes.add("DELETE", "/api/delete", manage)


async def root(request: Request) -> Response:
    return Response(b"Ollama is running", content_type="text/plain; charset=utf-8")


async def version(request: Request) -> Response:
    return json_response({"version": OLLAMA_API_VERSION, "synapse": __version__})


# -- model listing ---------------------------------------------------------------------------


def tag_name(name: str) -> str:
    return name if ":" in name else f"{name}:latest"


def _model_entry(name: str, router: Router, group: str, modified: str) -> dict[str, object]:
    dep = router.config.groups[group][0]
    return {
        "name": tag_name(name),
        "model": tag_name(name),
        "modified_at": modified,
        "size": 0,
        "digest": hashlib.sha256(f"{dep.provider}/{dep.backend_model}".encode()).hexdigest(),
        "details": {
            "parent_model": "",
            "format": "gguf" if dep.speaks_ollama else "safetensors",
            "family": "",
            "families": None,
            "parameter_size": "",
            "quantization_level": "",
        },
    }


async def _backend_tags(ctx: Context, path: str = "/api/tags") -> dict[tuple[str, str], dict]:
    """Real size/digest/details from each Ollama backend, where one answers quickly.

    `path`: /api/tags (what each stores) or /api/ps (what each has loaded).
    """
    bases = {d.ollama_base for d in ctx.router.config.deployments if d.speaks_ollama}

    async def fetch(base: str) -> list[tuple[tuple[str, str], dict]]:
        try:
            status, raw = await upstream.fetch(
                ctx.gateway.lookups, base + path, timeout=2, limit=TAGS_LIMIT
            )
            models = orjson.loads(raw).get("models") or [] if status == 200 else []
        except (ClientError, TimeoutError, ValueError, AttributeError, ResponseTooLarge):
            return []
        return [((base, tag_name(m.get("name", ""))), m) for m in models if isinstance(m, dict)]

    found = await asyncio.gather(*(fetch(b) for b in bases))
    return dict(item for items in found for item in items)


def _listing(ctx: Context, known: dict[tuple[str, str], dict]) -> list[dict[str, object]]:
    router = ctx.router
    modified = chat_tr.now_iso()
    names = [(g, g) for g in router.config.groups]
    names += [(a, router.config.aliases[a]) for a in router.public_names()[len(names) :]]
    caller = ctx.request["caller"]  # a consumer sees only the models it may use
    models = []
    for name, group in names:
        if not caller.may_use(group):
            continue
        entry = _model_entry(name, router, group, modified)
        dep = router.config.groups[group][0]
        real = (
            known.get((dep.ollama_base, tag_name(dep.backend_model))) if dep.speaks_ollama else None
        )
        if real:
            for key in ("size", "digest", "details", "modified_at"):
                if key in real:
                    entry[key] = real[key]
        models.append(entry)
    return models


async def tags(request: Request) -> Response:
    ctx = Context.of(request)
    return json_response({"models": _listing(ctx, await _backend_tags(ctx))})


# What /api/ps reports for a group on an OpenAI-compatible backend: vLLM keeps its one model
# loaded for as long as it serves, so such a group is listed while a deployment is healthy.
_RESIDENT = {"expires_at": "2318-01-01T00:00:00Z", "size_vram": 0}
_PS_FIELDS = ("size", "digest", "details", "expires_at", "size_vram", "context_length")


async def running(request: Request) -> Response:
    """Models loaded now: what each Ollama backend's own /api/ps says, under Synapse's names."""
    ctx = Context.of(request)
    loaded = await _backend_tags(ctx, "/api/ps")
    models = []
    for entry in _listing(ctx, {}):
        group = ctx.router.resolve(str(entry["name"]))
        if group is None:
            continue
        states = ctx.router.group_states(group)
        if not states[0].deployment.speaks_ollama:
            if any(s.breaker.allows() for s in states):
                models.append({**entry, **_RESIDENT})
            continue
        keys = (
            (s.deployment.ollama_base, tag_name(s.deployment.backend_model))
            for s in states
            if s.deployment.speaks_ollama
        )
        real = next((loaded[k] for k in keys if k in loaded), None)
        if real is not None:
            models.append({**entry, **{k: real[k] for k in _PS_FIELDS if k in real}})
    return json_response({"models": models})


def _model_field(body: dict) -> object:
    return body.get("model") or body.get("name")


def _resolve(ctx: Context, body: dict) -> str:
    name = _model_field(body)
    if not isinstance(name, str) or not name:
        raise BadRequest("model is required")
    caller, path = ctx.request["caller"], ctx.request.path
    group = ctx.router.resolve(name)
    if group is None:
        offer = ", ".join(tag_name(n) for n in ctx.router.offer(path, caller.may_use))
        raise ModelNotFound(f'model "{name}" not found (Synapse serves: {offer or "none"})')
    ctx.trace.model, ctx.trace.group = name, group
    caller.check_model(name, group)
    ctx.router.check_mode(name, group, path, caller.may_use)
    return group


async def show(request: Request) -> StreamResponse:
    ctx = Context.of(request)
    body = await ctx.json()
    group = _resolve(ctx, body)
    dep = ctx.router.config.groups[group][0]
    if dep.speaks_ollama:

        async def attempt(state: DeploymentState) -> upstream.Upstream:
            d = state.deployment
            payload = orjson.dumps({**body, "model": d.backend_model})
            return await ctx.send(state, d.ollama_base + "/api/show", payload)

        up = await ctx.router.run(group, attempt, ctx.trace)
        return await relay.passthrough(up, ctx.trace)
    entry = _model_entry(group, ctx.router, group, chat_tr.now_iso())
    model_info: dict[str, object] = {"general.basename": dep.backend_model}
    context_length = await _context_length(ctx, dep)
    if context_length:
        model_info["general.context_length"] = context_length
    # Chat completions take `tools` on every OpenAI-compatible backend Synapse routes to.
    capabilities = ["embedding"] if dep.mode == "embedding" else ["completion", "tools"]
    return json_response(
        {
            "modelfile": "",
            "parameters": "",
            "template": "",
            "details": entry["details"],
            "model_info": model_info,
            "capabilities": capabilities,
            "modified_at": entry["modified_at"],
        }
    )


async def _context_length(ctx: Context, dep: Deployment) -> int | None:
    """The backend's `max_model_len` for the model (vLLM's /v1/models), if it answers quickly."""
    headers = {"Authorization": f"Bearer {dep.api_key}"} if dep.api_key else None
    try:
        status, raw = await upstream.fetch(
            ctx.gateway.lookups,
            dep.openai_base + "/models",
            headers=headers,
            timeout=2,
            limit=TAGS_LIMIT,
        )
        listing = orjson.loads(raw).get("data") or [] if status == 200 else []
    except (ClientError, TimeoutError, ValueError, AttributeError, ResponseTooLarge):
        return None
    for model in listing:
        if isinstance(model, dict) and model.get("id") == dep.backend_model:
            value = model.get("max_model_len")
            return value if isinstance(value, int) and value > 0 else None
    return None


# -- inference -------------------------------------------------------------------------------


async def _native_or_translated(
    ctx: Context,
    body: dict,
    native_path: str,
    translate,  # (state) -> (openai path, request dict)
    streaming: bool,
) -> upstream.Upstream:
    """Native for Ollama deployments, translated for OpenAI ones; the answer says which."""
    group = _resolve(ctx, body)

    async def attempt(state: DeploymentState) -> upstream.Upstream:
        dep = state.deployment
        if dep.speaks_ollama:
            payload = orjson.dumps({**body, "model": dep.backend_model})
            return await ctx.send(
                state, dep.ollama_base + native_path, payload, streaming=streaming
            )
        path, translated = translate(state)
        return await ctx.send(
            state, dep.openai_base + path, orjson.dumps(translated), streaming=streaming
        )

    return await ctx.router.run(group, attempt, ctx.trace)


_ZERO_DURATION = re.compile(r"0+(\.0*)?(ns|us|µs|ms|s|m|h)?")


def _unloads(keep_alive: object) -> bool:
    """Ollama's `keep_alive: 0` (also "0", "0s", "0m", a Go duration of zero): unload now."""
    if isinstance(keep_alive, bool):
        return False
    if isinstance(keep_alive, int | float):
        return keep_alive == 0
    return isinstance(keep_alive, str) and _ZERO_DURATION.fullmatch(keep_alive.strip()) is not None


async def _load(ctx: Context, body: dict, native_path: str, empty: dict) -> Response:
    """Ollama's load/unload conventions (a request with nothing to generate or embed).

    Forwarded to every Ollama deployment of the group, which loads or unloads the model;
    for OpenAI-compatible backends (always loaded) Synapse answers as Ollama would.
    """
    group = _resolve(ctx, body)
    states = [s for s in ctx.router.group_states(group) if s.deployment.speaks_ollama]
    if not states:
        answer: dict[str, object] = {"model": _model_field(body), "created_at": chat_tr.now_iso()}
        answer.update(empty)
        if native_path != "/api/embed":
            reason = "unload" if _unloads(body.get("keep_alive")) else "load"
            answer.update(done=True, done_reason=reason)
        return json_response(answer)

    async def forward(state: DeploymentState) -> Response:
        dep = state.deployment
        payload = orjson.dumps({**body, "model": dep.backend_model})
        up = await ctx.send(state, dep.ollama_base + native_path, payload)
        raw = await relay.read_all(up, 1 << 20)
        if up.status >= 400:
            raise embed_tr.backend_error(dep.id, up.status, raw)
        return Response(raw, up.status, content_type="application/json")

    ctx.trace.deployment = states[0].id
    results = await asyncio.gather(*(forward(s) for s in states), return_exceptions=True)
    for result in results:
        if isinstance(result, Response):
            return result
    error = results[0]
    if isinstance(error, upstream.Retryable):
        raise BadGateway(error.message)
    raise error  # type: ignore[misc]


async def _error_from(up: upstream.Upstream, ctx: Context) -> GatewayError:
    raw = await relay.read_all(up, 1 << 20)
    return embed_tr.backend_error(up.state.id, up.status, raw)


async def chat(request: Request) -> StreamResponse:
    return await _chat_like(request, generate=False)


async def generate(request: Request) -> StreamResponse:
    return await _chat_like(request, generate=True)


async def _chat_like(request: Request, *, generate: bool) -> StreamResponse:
    ctx = Context.of(request)
    body = await ctx.json()
    streaming = body.get("stream", True) is not False
    model = _model_field(body)
    messages = body.get("messages")
    if not generate and messages is not None and not isinstance(messages, list):
        raise BadRequest("messages must be an array")
    if (not body.get("prompt") and not body.get("system")) if generate else not messages:
        empty = {"response": ""} if generate else {"message": {"role": "assistant", "content": ""}}
        return await _load(ctx, body, "/api/generate" if generate else "/api/chat", empty)
    timing = chat_tr.Timing()

    def translate(state: DeploymentState) -> tuple[str, dict]:
        dep = state.deployment
        if generate:
            return chat_tr.generate_request(body, dep.backend_model, dep.provider, dep.id)
        return "/chat/completions", chat_tr.chat_request(
            body, dep.backend_model, dep.provider, dep.id
        )

    native_path = "/api/generate" if generate else "/api/chat"
    up = await _native_or_translated(ctx, body, native_path, translate, streaming)
    native = up.state.deployment.speaks_ollama
    if up.status >= 400:
        raise await _error_from(up, ctx)
    if native:
        if streaming:
            return await relay.relay_ndjson(request, up, ctx.trace)
        return await relay.passthrough(up, ctx.trace)
    if streaming:
        source = chat_tr.sse_to_ndjson(
            up.lines(), str(model), timing, generate=generate, limit=up.limit
        )
        return await relay.relay_ndjson(request, up, ctx.trace, source=source)
    raw = await relay.read_all(up)
    relay.record_usage(ctx.trace.group or "", raw)
    try:
        answer = chat_tr.chat_response(orjson.loads(raw), str(model), timing, generate=generate)
    except (orjson.JSONDecodeError, AttributeError, IndexError, TypeError) as exc:
        raise embed_tr.invalid_answer(up.state.id, exc) from None
    return json_response(answer)


async def embed(request: Request) -> StreamResponse:
    ctx = Context.of(request)
    body = await ctx.json()
    texts = body.get("input")
    if texts in (None, "", []):
        return await _load(ctx, body, "/api/embed", {"embeddings": []})
    if isinstance(texts, str):
        texts = [texts]
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise BadRequest("input must be a string or an array of strings")
    return await _embed(request, ctx, body, texts, legacy=False)


async def embeddings_legacy(request: Request) -> StreamResponse:
    ctx = Context.of(request)
    body = await ctx.json()
    prompt = body.get("prompt")
    if not isinstance(prompt, str):
        raise BadRequest("prompt must be a string")
    return await _embed(request, ctx, body, [prompt], legacy=True)


async def _embed(
    request: Request, ctx: Context, body: dict, texts: list[str], *, legacy: bool
) -> StreamResponse:
    timing = chat_tr.Timing()
    group = _resolve(ctx, body)
    result = await vectors.vectors(ctx, group, texts, Params.from_ollama(body, legacy))
    if legacy:
        return json_response({"embedding": result.vectors[0]})
    return json_response(
        {
            "model": _model_field(body),
            "embeddings": [embed_tr.unit(v) for v in result.vectors],
            "total_duration": timing.durations()["total_duration"],
            "load_duration": 0,
            "prompt_eval_count": sum(result.tokens),
        }
    )


# -- model management (operators only) --------------------------------------------------------


# What Ollama streams for a pull of a model it already has (its layers' lines left out).
PULL_DONE = (
    b'{"status":"pulling manifest"}\n{"status":"verifying sha256 digest"}\n'
    b'{"status":"writing manifest"}\n{"status":"success"}\n'
)


async def pull(request: Request) -> StreamResponse:
    """A pull of a model Synapse serves (any name it answers to) changes nothing, so it is
    answered as Ollama answers for a model it has, without a key: clients that pull a model
    missing from /api/tags (mem0's embedder) can start. Other pulls: operators only."""
    ctx = Context.of(request)
    body = await ctx.json()
    if has_master_key(request, ctx.router.config.master_key):
        return await _forward_management(ctx, body)
    name = _model_field(body)
    group = ctx.router.resolve(name) if isinstance(name, str) and name else None
    if group is None:
        raise _operators_only(request, ctx)
    ctx.trace.model, ctx.trace.group = str(name), group
    ctx.request["caller"].check_model(str(name), group)
    if body.get("stream", True) is False:
        return json_response({"status": "success"})
    return Response(PULL_DONE, content_type="application/x-ndjson")


async def manage(request: Request) -> StreamResponse:
    """push/create/copy/delete (and pulls of models not served): master key only, forwarded
    to an Ollama deployment."""
    ctx = Context.of(request)
    if not has_master_key(request, ctx.router.config.master_key):
        raise _operators_only(request, ctx)
    return await _forward_management(ctx, await ctx.json())


def _operators_only(request: Request, ctx: Context) -> Forbidden:
    return Forbidden(
        f"{request.path} changes the models Ollama stores and is for operators: "
        + (
            "send the master key as 'Authorization: Bearer <key>'"
            if ctx.router.config.master_key
            else "this gateway has no master key (as under `make run`): the local stack's "
            "engines have their models already; to add an Ollama model, run `ollama pull "
            "<name>` against your own Ollama and restart the stack, which serves its models"
        )
    )


async def _forward_management(ctx: Context, body: dict) -> StreamResponse:
    request = ctx.request
    name = _model_field(body)
    target: DeploymentState | None = None
    group = ctx.router.resolve(name) if isinstance(name, str) else None
    candidates = list(ctx.router.group_states(group)) if group else []
    candidates += list(ctx.router.states.values())
    target = next((s for s in candidates if s.deployment.speaks_ollama), None)
    if target is None:
        raise Unavailable("no Ollama deployment is configured to manage models on")
    dep = target.deployment
    if group and group == dep.group and isinstance(name, str):
        for key in ("model", "name"):
            if key in body:
                body[key] = dep.backend_model
    ctx.trace.group, ctx.trace.deployment = dep.group, dep.id
    streaming = (
        request.path in ("/api/pull", "/api/push", "/api/create")
        and body.get("stream", True) is not False
    )
    await target.acquire()
    try:
        up = await ctx.send(
            target,
            dep.ollama_base + request.path,
            orjson.dumps(body),
            streaming=streaming,
            method=request.method,
            total=24 * 3600,
        )
    except upstream.Retryable as exc:
        target.release()
        raise BadGateway(exc.message) from None
    except BaseException:  # cancelled: the slot must not leak
        target.release()
        raise
    if streaming and up.status == 200:
        return await relay.relay_ndjson(request, up, ctx.trace, done_marker=b'"status":"success"')
    return await relay.passthrough(up, ctx.trace, 1 << 20)
