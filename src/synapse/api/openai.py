"""OpenAI-compatible surface: /v1/models, chat, completions, embeddings (also unprefixed).

Requests for OpenAI-compatible backends are forwarded with only `model` rewritten; answers
come back byte for byte. Embeddings of text go through the embedding cache and batcher
(synapse.embeddings), to Ollama's `/api/embed` or an OpenAI `/embeddings`, in OpenAI's shape.
"""

from __future__ import annotations

import orjson

from synapse.api import relay, vectors
from synapse.api.context import Context
from synapse.api.protocol import json_response
from synapse.api.vectors import Params
from synapse.backends import upstream
from synapse.errors import BadRequest, ModelNotFound
from synapse.http.message import Request, Response, StreamResponse
from synapse.routing.deployment import DeploymentState
from synapse.translate import embeddings as embed_tr


async def list_models(request: Request) -> Response:
    ctx = Context.of(request)
    created = int(ctx.gateway.started_at)
    caller = request["caller"]  # a consumer sees only the models it may use
    return json_response(
        {
            "object": "list",
            "data": [
                {"id": name, "object": "model", "created": created, "owned_by": "synapse"}
                for name in ctx.router.public_names()
                if caller.may_use(ctx.router.resolve(name))
            ],
        }
    )


async def retrieve_model(request: Request) -> Response:
    """`GET /v1/models/{id}` (the SDKs' `models.retrieve`): what `/v1/models` lists.

    A hidden alias, or a model outside the caller's allow-list, does not exist for it (404).
    """
    ctx = Context.of(request)
    name = request.match_info["model"]
    group = ctx.router.resolve(name, listed=True)
    if group is None or not request["caller"].may_use(group):
        raise ModelNotFound(f"The model '{name}' does not exist", param="model")
    return json_response(
        {
            "id": name,
            "object": "model",
            "created": int(ctx.gateway.started_at),
            "owned_by": "synapse",
        }
    )


async def chat_completions(request: Request) -> StreamResponse:
    ctx = Context.of(request)
    body = await ctx.json()
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' is required and must be a non-empty array", param="messages")
    return await _forward_openai(request, ctx, body, "/chat/completions")


async def completions(request: Request) -> StreamResponse:
    ctx = Context.of(request)
    body = await ctx.json()
    if "prompt" not in body:
        raise BadRequest("'prompt' is required", param="prompt")
    return await _forward_openai(request, ctx, body, "/completions")


async def _forward_openai(request: Request, ctx: Context, body: dict, path: str) -> StreamResponse:
    group = ctx.resolve(body.get("model"))
    streaming = body.get("stream") is True

    async def attempt(state: DeploymentState) -> upstream.Upstream:
        dep = state.deployment
        payload = orjson.dumps({**body, "model": dep.backend_model})
        return await ctx.send(state, dep.openai_base + path, payload, streaming=streaming)

    up = await ctx.router.run(group, attempt, ctx.trace)
    if streaming and up.status == 200 and up.content_type.startswith("text/event-stream"):
        return await relay.relay_sse(request, up, ctx.trace)
    return await relay.passthrough(up, ctx.trace)


async def embeddings(request: Request) -> StreamResponse:
    ctx = Context.of(request)
    body = await ctx.json()
    texts = embed_tr.openai_input(body.get("input"))
    encoding = body.get("encoding_format", "float")
    if encoding not in ("float", "base64"):
        raise BadRequest("'encoding_format' must be 'float' or 'base64'", param="encoding_format")
    group = ctx.resolve(body.get("model"))
    if texts is None:
        return await _embed_tokens(request, ctx, body, group)
    result = await vectors.vectors(ctx, group, texts, Params.from_openai(body))
    answer = {"embeddings": result.vectors, "prompt_eval_count": sum(result.tokens)}
    return json_response(embed_tr.ollama_to_openai(answer, body.get("model"), encoding))


async def _embed_tokens(request: Request, ctx: Context, body: dict, group: str) -> StreamResponse:
    """Token-id input: only an OpenAI-compatible backend can read it; sent as it came."""

    async def attempt(state: DeploymentState) -> upstream.Upstream:
        dep = state.deployment
        if dep.speaks_ollama:
            raise BadRequest(
                f"'input' holds token ids, but {dep.id} is an Ollama deployment, which "
                "embeds text and cannot decode another tokenizer's ids: send strings "
                "(LangChain: OpenAIEmbeddings(..., check_embedding_ctx_length=False))",
                param="input",
            )
        payload = orjson.dumps({**body, "model": dep.backend_model})
        return await ctx.send(state, dep.openai_base + "/embeddings", payload)

    up = await ctx.router.run(group, attempt, ctx.trace)
    return await relay.passthrough(up, ctx.trace)
