"""Vectors for an embedding request: the cache first, the rest through the batcher, each
batch one backend call through the router (slots, breakers, retries)."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable
from dataclasses import dataclass

import orjson

from synapse.api import relay
from synapse.api.context import Context
from synapse.backends import upstream
from synapse.embeddings.batcher import Embedded
from synapse.errors import BadRequest
from synapse.routing import Trace
from synapse.routing.deployment import DeploymentState
from synapse.translate import embeddings as embed_tr

# Fields an Ollama caller may send that shape the vector or the model's lifetime.
OLLAMA_FIELDS = ("dimensions", "truncate", "keep_alive", "options")
# Fields of an OpenAI request that are not parameters: the caller's own framing.
OPENAI_FRAMING = ("model", "input", "encoding_format")


@dataclass(frozen=True, slots=True)
class Params:
    """Everything besides the texts that goes to the backend; requests differing in it never
    share a batch or a cache entry. `fields` uses Ollama's names (`dimensions` is common)."""

    fields: dict
    key: bytes
    # Ollama's deprecated /api/embeddings: its vectors are not normalized, /api/embed's are,
    # so on Ollama deployments these go one text per call to /api/embeddings.
    legacy: bool = False

    @classmethod
    def of(cls, fields: dict, legacy: bool = False) -> Params:
        """`null` means absent (the ollama client sends `"options": null`): one key for both."""
        fields = {k: v for k, v in fields.items() if v is not None}
        key = orjson.dumps(fields, option=orjson.OPT_SORT_KEYS)
        return cls(fields, b"legacy" + key if legacy else key, legacy)

    @classmethod
    def from_openai(cls, body: dict) -> Params:
        return cls.of({k: v for k, v in body.items() if k not in OPENAI_FRAMING})

    @classmethod
    def from_ollama(cls, body: dict, legacy: bool = False) -> Params:
        return cls.of({k: body[k] for k in OLLAMA_FIELDS if k in body}, legacy)


async def embed(ctx: Context, group: str, texts: list[str], params: Params) -> Embedded:
    """Vectors for `texts`, in order: Ollama's `/api/embed` or OpenAI's `/embeddings`."""

    async def attempt(state: DeploymentState) -> upstream.Upstream:
        dep = state.deployment
        if dep.speaks_ollama and params.legacy:
            (text,) = texts  # never batched where an Ollama deployment may answer (service.py)
            request = {k: params.fields[k] for k in ("options", "keep_alive") if k in params.fields}
            request.update(model=dep.backend_model, prompt=text)
            return await ctx.send(state, dep.ollama_base + "/api/embeddings", orjson.dumps(request))
        if dep.speaks_ollama:
            payload = embed_tr.ollama_embed_request(dep.backend_model, texts, params.fields)
            return await ctx.send(state, dep.ollama_base + "/api/embed", payload)
        request = {k: v for k, v in params.fields.items() if k not in OLLAMA_FIELDS[1:]}
        request.update(model=dep.backend_model, input=texts, encoding_format="float")
        return await ctx.send(state, dep.openai_base + "/embeddings", orjson.dumps(request))

    up = await ctx.router.run(group, attempt, ctx.trace)
    raw = await relay.read_all(up)
    if up.status != 200:
        raise embed_tr.backend_error(up.state.id, up.status, raw)
    try:
        answer = orjson.loads(raw)
        if up.state.deployment.speaks_ollama and params.legacy:
            vectors, total = [answer["embedding"]], 0
        elif up.state.deployment.speaks_ollama:
            vectors = answer["embeddings"]
            total = answer.get("prompt_eval_count") or 0
        else:
            vectors = embed_tr.openai_vectors(answer)
            total = (answer.get("usage") or {}).get("prompt_tokens") or 0
        if not isinstance(vectors, list) or len(vectors) != len(texts):
            raise ValueError(f"{len(texts)} texts sent, {len(vectors)} vectors answered")
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise embed_tr.invalid_answer(up.state.id, exc) from None
    return Embedded(vectors, apportion(total if isinstance(total, int) else 0, texts))


def apportion(total: int, texts: list[str]) -> list[int]:
    """A call's token count shared among its texts by length, summing to `total`."""
    lengths = [len(t) or 1 for t in texts]
    whole = sum(lengths)
    shares = [total * n // whole for n in lengths]
    shares[0] += total - sum(shares)
    return shares


async def vectors(ctx: Context, group: str, texts: list[str], params: Params) -> Embedded:
    limit = ctx.settings.max_embedding_inputs
    if len(texts) > limit:
        raise BadRequest(
            f"{len(texts)} texts in one request: at most {limit} (max_embedding_inputs); "
            "send them as several requests",
            param="input",
        )
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
        return embed(dataclasses.replace(ctx, trace=trace), group, batch, params)

    chain = "\0".join(ctx.router.chain(group, ctx.trace)).encode()
    fresh = await ctx.gateway.embedding_batcher.submit(
        group,
        ctx.router.config.groups[group],
        params.key + b"\0" + chain,
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
