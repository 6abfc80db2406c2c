"""Vectors for an embedding request: cached ones first, the rest through the batcher."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable

from synapse.api import relay
from synapse.api.context import Context
from synapse.embeddings import call
from synapse.embeddings.call import Embedded, Params
from synapse.routing import Trace


async def vectors(ctx: Context, group: str, texts: list[str], params: Params) -> Embedded:
    cache = ctx.gateway.embedding_cache
    keys = [(group, params.key, text) for text in texts]
    found = [cache.get(key) for key in keys]
    missing = [i for i, entry in enumerate(found) if entry is None]
    out = Embedded(
        [e.vector.tolist() if e else [] for e in found], [e.tokens if e else 0 for e in found]
    )
    if not missing:
        return out

    def run(batch: list[str], trace: Trace) -> Awaitable[Embedded]:
        return call.embed(dataclasses.replace(ctx, trace=trace), group, batch, params)

    fresh = await ctx.gateway.embedding_batcher.submit(
        group,
        params.key,
        [texts[i] for i in missing],
        run,
        ctx.trace,
        _batchable(ctx, group, params),
    )
    relay.add_tokens(group, sum(fresh.tokens), None)
    for i, vector, tokens in zip(missing, fresh.vectors, fresh.tokens, strict=True):
        cache.put(keys[i], vector, tokens)
        out.vectors[i], out.tokens[i] = vector, tokens
    return out


def _batchable(ctx: Context, group: str, params: Params) -> bool:
    """Legacy requests batch only where no Ollama deployment (itself or a fallback) answers."""
    if not params.legacy:
        return True
    router = ctx.router
    groups = (group, *router.config.fallbacks.get(group, ()))
    return not any(s.deployment.speaks_ollama for g in groups for s in router.group_states(g))
