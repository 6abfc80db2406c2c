"""`POST /v1/responses` (OpenAI's Responses API, create with or without streaming).

Backends that serve `/responses` themselves get the request as it came, but for `model` and
for references to items this deployment issued, which become the items; the others get it
translated to chat completions (synapse.translate.responses). Which is which is a
per-provider rule, `serves_responses`. The ids of the items Synapse issues on the translated
path carry the items, so an `item_reference` resolves on any replica with no store
(synapse.translate.itemids).
"""

from __future__ import annotations

import functools

import orjson

from synapse.api import relay
from synapse.api.context import Context
from synapse.api.protocol import json_response
from synapse.backends import upstream
from synapse.config.model import Deployment
from synapse.http.message import Request, StreamResponse
from synapse.routing.deployment import DeploymentState
from synapse.translate import embeddings as embed_tr
from synapse.translate import itemids
from synapse.translate import responses as resp_tr

# vLLM and OpenAI serve /v1/responses; Ollama deployments are reached through chat completions.
SERVES_RESPONSES = frozenset({"hosted_vllm", "openai"})


def serves_responses(dep: Deployment) -> bool:
    return dep.provider in SERVES_RESPONSES


async def create(request: Request) -> StreamResponse:
    ctx = Context.of(request)
    body = await ctx.json()
    resp_tr.refuse_stateful(body)
    group = ctx.resolve(body.get("model"))
    streaming = body.get("stream") is True
    key = itemids.item_key(ctx.router.config.master_key)
    # translated once per request, not per attempt: references are checked and inflated here
    native_body = functools.cache(lambda: resp_tr.with_own_items(body, key))
    chat_body = functools.cache(lambda model: resp_tr.chat_request(body, model, key))

    async def attempt(state: DeploymentState) -> upstream.Upstream:
        dep = state.deployment
        if serves_responses(dep):
            payload = orjson.dumps({**native_body(), "model": dep.backend_model})
            path = "/responses"
        else:
            payload = orjson.dumps(chat_body(dep.backend_model))
            path = "/chat/completions"
        return await ctx.send(state, dep.openai_base + path, payload, streaming=streaming)

    up = await ctx.router.run(group, attempt, ctx.trace)
    native = serves_responses(up.state.deployment)
    if up.status >= 400:
        if native:
            return await relay.passthrough(up, ctx.trace)
        raise embed_tr.backend_error(up.state.id, up.status, await relay.read_all(up))
    if streaming and up.content_type.startswith("text/event-stream"):
        source = (
            resp_tr.checked_events(up.lines())
            if native
            else resp_tr.sse_to_events(up.lines(), body, up.limit)
        )
        return await relay.stream(
            request,
            up,
            ctx.trace,
            content_type="text/event-stream",
            source=source,
            done_marker=None,
            error_frame=relay.sse_error,
            on_chunk=lambda chunk: _count_final(ctx.trace.group or "", chunk),
        )
    raw = await relay.read_all(up)
    try:
        answer = orjson.loads(raw)
        if not native:
            answer = resp_tr.from_chat(answer, body, key)
        _count(ctx.trace.group or "", answer.get("usage"))
    except (orjson.JSONDecodeError, AttributeError, IndexError, TypeError) as exc:
        raise embed_tr.invalid_answer(up.state.id, exc) from None
    return json_response(answer)


def _count(group: str, usage: object) -> None:
    if isinstance(usage, dict):
        relay.add_tokens(group, usage.get("input_tokens"), usage.get("output_tokens"))


def _count_final(group: str, chunk: bytes) -> None:
    """Token counts from the final event (`response.completed` / `.incomplete`)."""
    start = chunk.find(b"data:")  # a whole event (translated) or one line (passed through)
    if start < 0 or b'"usage"' not in chunk:
        return
    try:
        event = orjson.loads(chunk[start + 5 :])
    except orjson.JSONDecodeError:
        return
    if isinstance(event, dict) and isinstance(event.get("response"), dict):
        _count(group, event["response"].get("usage"))
