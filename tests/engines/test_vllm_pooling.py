"""Real vLLM pooling (`--runner pooling`, tiny random BERT) behind Synapse as an embedding
deployment, through both APIs with the real clients (issue 27).

vLLM batches concurrent requests itself; the gateway's batcher may also merge them (a group
bound of 2 here forces it), and every caller must still get its own text's vector: each answer
is compared with vLLM's own answer for that text. Starts its own vLLM (~80 s on two cores)
after test_vllm.py has stopped the chat one: two vLLMs on two cores slow each other.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Iterator

import httpx
import ollama
import openai
import pytest

from synapse.local.pooling import MODEL_NAME, PoolingServer
from tests.conftest import MASTER_KEY, Gateway, free_port
from tests.engines.conftest import VLLM_VENV

pytestmark = pytest.mark.engines

GROUP = "tiny-bert"
TEXTS = [f"note {i}: the meeting moved the project deadline to day {i}" for i in range(16)]


@pytest.fixture(scope="module")
def pooling(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PoolingServer]:
    if not (VLLM_VENV / "bin" / "python").exists():
        pytest.fail(f"{VLLM_VENV} is missing: run `make test-engines`, which installs it")
    state = tmp_path_factory.mktemp("pooling")
    server = PoolingServer(VLLM_VENV, state, free_port(), state / "vllm-pooling.log")
    began = time.monotonic()
    server.start()
    print(f"vLLM pooling ready in {time.monotonic() - began:.0f} s")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def gateway(pooling: PoolingServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    config = {
        "model_list": [
            {
                "model_name": GROUP,
                "litellm_params": {
                    "model": f"hosted_vllm/{MODEL_NAME}",
                    "api_base": pooling.url + "/v1",
                },
                "model_info": {"mode": "embedding"},
            }
        ],
        "router_settings": {"num_retries": 0, "timeout": 60},
        "general_settings": {"master_key": "os.environ/SYNAPSE_MASTER_KEY"},
        "synapse_settings": {
            "health_check_interval": 0,
            "drain_delay": 0,
            "embedding_cache": {"enabled": False},
            "embedding_batching": {"max_in_flight": 2},  # 16 callers: batches must form
        },
    }
    gw = Gateway(config, tmp_path_factory.mktemp("pooling-gw"))
    yield gw
    gw.stop()


@pytest.fixture(scope="module")
def direct(pooling: PoolingServer) -> dict[str, list[float]]:
    """vLLM's own vector for each text, one request per text."""
    out = {}
    for text in TEXTS:
        body = {"model": MODEL_NAME, "input": text}
        answer = httpx.post(pooling.url + "/v1/embeddings", json=body, timeout=60).json()
        out[text] = answer["data"][0]["embedding"]
    return out


def _cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def _same(got: list[float], want: list[float]) -> bool:
    """vLLM's vectors for one text agree to float32 noise whatever the batch around it."""
    return len(got) == len(want) and _cosine(got, want) > 0.9999


def _norm(v: list[float]) -> float:
    return math.sqrt(sum(x * x for x in v))


def test_openai_embeddings_list_and_base64(gateway: Gateway, direct: dict) -> None:
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=MASTER_KEY, max_retries=0)
    listed = client.embeddings.create(model=GROUP, input=TEXTS[:4], encoding_format="float")
    assert [d.index for d in listed.data] == [0, 1, 2, 3]
    assert all(_same(d.embedding, direct[t]) for d, t in zip(listed.data, TEXTS, strict=False))
    assert listed.usage.prompt_tokens > 0
    one = client.embeddings.create(model=GROUP, input=TEXTS[5])  # the SDK asks for base64
    assert _same(one.data[0].embedding, direct[TEXTS[5]])


def test_ollama_embed_and_legacy_embeddings(gateway: Gateway, direct: dict) -> None:
    client = ollama.Client(host=gateway.ollama_url, timeout=60)
    embed = client.embed(model=GROUP, input=TEXTS[:3])
    for got, text in zip(embed.embeddings, TEXTS, strict=False):
        assert _same(got, direct[text])
        assert _norm(got) == pytest.approx(1.0, abs=1e-5)  # /api/embed: unit length
    assert embed.prompt_eval_count > 0
    legacy = client.embeddings(model=GROUP, prompt=TEXTS[3])
    assert _same(legacy.embedding, direct[TEXTS[3]])  # the model's own vector


def test_concurrent_callers_each_get_their_own_vector(gateway: Gateway, direct: dict) -> None:
    """16 single-text callers from both APIs; the gateway merges them (2 calls in flight)."""

    async def main() -> list[list[float]]:
        oa = openai.AsyncOpenAI(base_url=gateway.url + "/v1", api_key=MASTER_KEY, max_retries=0)
        ol = ollama.AsyncClient(host=gateway.ollama_url, timeout=60)

        async def one(i: int, text: str) -> list[float]:
            if i % 2:
                return (await ol.embed(model=GROUP, input=text)).embeddings[0]
            return (await oa.embeddings.create(model=GROUP, input=text)).data[0].embedding

        return await asyncio.gather(*(one(i, t) for i, t in enumerate(TEXTS)))

    for _ in range(3):
        for text, got in zip(TEXTS, asyncio.run(main()), strict=True):
            assert _same(got, direct[text]), text
    metrics = httpx.get(gateway.metrics_url, timeout=10).text
    sizes = [
        line for line in metrics.splitlines() if line.startswith("synapse_embedding_batch_size_")
    ]
    total = float(next(s for s in sizes if "_sum{" in s).rsplit(" ", 1)[1])
    count = float(next(s for s in sizes if "_count{" in s).rsplit(" ", 1)[1])
    assert total / count > 1, sizes  # batches did form against the real engine


def test_too_long_input_is_a_400_in_each_protocol(gateway: Gateway) -> None:
    text = "river " * 2000  # far over max_model_len 512
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=MASTER_KEY, max_retries=0)
    with pytest.raises(openai.BadRequestError) as caught:
        client.embeddings.create(model=GROUP, input=text)
    assert caught.value.body["type"] == "invalid_request_error"
    assert "tiny-bert" in caught.value.message  # the deployment's own message, kept
    answer = httpx.post(
        gateway.ollama_url + "/api/embed", json={"model": GROUP, "input": text}, timeout=60
    )
    assert answer.status_code == 400
    assert isinstance(answer.json()["error"], str) and "tiny-bert" in answer.json()["error"]
