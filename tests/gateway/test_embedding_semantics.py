"""Ollama's two embedding routes keep their own meaning whichever backend answers (issue 27):
`/api/embed` returns unit-length vectors, `/api/embeddings` the model's raw vector. The OpenAI
stub here does not normalize (`embed_scale` 3), as some engines' pooling does not."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest

from tests.conftest import Backend, Gateway, routing_config
from tests.gateway.embedding_helpers import close_to, ollama_client, openai_client, sync, unique
from tests.stubs.backend import legacy_vector, vector

SCALE = 3.0


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Gateway, Backend, Backend]]:
    openai_b, ollama_b = Backend("openai"), Backend("ollama")
    try:
        openai_b.control(embed_scale=SCALE)
        config = routing_config(openai_b, ollama_b, embedding_cache={"enabled": False})
        gw = Gateway(config, tmp_path_factory.mktemp("semantics"))
        yield gw, openai_b, ollama_b
        gw.stop()
    finally:
        for backend in (openai_b, ollama_b):
            backend.stop()


def _norm(v: list[float]) -> float:
    return math.sqrt(sum(x * x for x in v))


@pytest.mark.parametrize("model", ["mxbai-embed-large", "embed-openai"])
@sync
async def test_api_embed_is_normalized_whichever_backend_answers(stack, model: str) -> None:
    gw = stack[0]
    texts = [unique("unit"), unique("unit")]
    answer = await ollama_client(gw).embed(model=model, input=texts)
    for text, got in zip(texts, answer.embeddings, strict=True):
        assert _norm(got) == pytest.approx(1.0, abs=1e-6)
        assert close_to(got, text)  # the same direction as the model's vector


@sync
async def test_api_embeddings_is_the_models_raw_vector_on_either_backend(stack) -> None:
    gw = stack[0]
    ol = ollama_client(gw)
    text = unique("raw")
    on_ollama = await ol.embeddings(model="mxbai-embed-large", prompt=text)
    on_openai = await ol.embeddings(model="embed-openai", prompt=text)
    assert on_ollama.embedding == pytest.approx(legacy_vector(text), abs=1e-6)  # unnormalized
    assert on_openai.embedding == pytest.approx([SCALE * x for x in vector(text)], abs=1e-5)


@sync
async def test_openai_route_passes_the_engines_vectors_as_they_are(stack) -> None:
    gw = stack[0]
    text = unique("as-is")
    answer = await openai_client(gw).embeddings.create(model="embed-openai", input=text)
    assert answer.data[0].embedding == pytest.approx([SCALE * x for x in vector(text)], abs=1e-5)
