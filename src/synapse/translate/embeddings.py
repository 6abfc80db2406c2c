"""Embeddings between OpenAI's `/v1/embeddings` and Ollama's `/api/embed` / `/api/embeddings`."""

from __future__ import annotations

import base64
import math
from array import array

import orjson

from synapse.errors import BadGateway, BadRequest, GatewayError


def openai_input(value: object) -> list[str] | None:
    """Texts of an OpenAI `input`; None for token input; BadRequest when malformed."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value:
        if all(isinstance(v, str) for v in value):
            return value
        if all(isinstance(v, int) for v in value) or all(
            isinstance(v, list) and all(isinstance(t, int) for t in v) for v in value
        ):
            return None
    raise BadRequest(
        "'input' is required: a string, an array of strings, or token arrays", param="input"
    )


def ollama_embed_request(model: str, texts: list[str], body: dict) -> bytes:
    request: dict[str, object] = {"model": model, "input": texts}
    if isinstance(body.get("dimensions"), int):
        request["dimensions"] = body["dimensions"]
    for key in ("truncate", "keep_alive", "options"):
        if key in body:
            request[key] = body[key]
    return orjson.dumps(request)


def unit(vector: list[float]) -> list[float]:
    """Ollama's `/api/embed` promises unit-length vectors; an OpenAI-compatible engine may not
    normalize (its `/api/embeddings`-style raw vectors are passed on as they are)."""
    norm = math.hypot(*vector)  # in C, exact to an ulp: a Python loop per float cost 10x
    if norm == 0 or abs(norm - 1) < 1e-6:
        return vector
    return [x / norm for x in vector]


def encode(vector: list[float], encoding: str) -> list[float] | str:
    if encoding == "base64":
        return base64.b64encode(array("f", vector).tobytes()).decode()
    return vector


def ollama_to_openai(answer: dict, model: object, encoding: str) -> dict:
    vectors = answer["embeddings"]
    if not isinstance(vectors, list):
        raise TypeError("'embeddings' is not an array")
    tokens = answer.get("prompt_eval_count") or 0
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": encode(v, encoding)}
            for i, v in enumerate(vectors)
        ],
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def openai_vectors(answer: dict) -> list[list[float]]:
    """Float vectors from an OpenAI embeddings answer (float or base64 encoded)."""
    data = sorted(answer["data"], key=lambda item: item.get("index", 0))
    vectors = []
    for item in data:
        emb = item["embedding"]
        if isinstance(emb, str):
            emb = array("f", base64.b64decode(emb)).tolist()
        vectors.append(emb)
    return vectors


def backend_error(deployment: str, status: int, raw: bytes) -> GatewayError:
    """A backend's 4xx, kept with its status and message, for the caller's protocol."""
    message = raw.decode("utf-8", "replace")[:500]
    try:
        parsed = orjson.loads(raw)
        err = parsed.get("error")
        message = err.get("message", message) if isinstance(err, dict) else (err or message)
    except (orjson.JSONDecodeError, AttributeError):
        pass
    detail = message.strip() or f"answered {status} with no detail"
    error = GatewayError(f"{deployment}: {detail}", status=status, code="backend_error")
    if 400 <= status < 500 and status not in (401, 403):  # 401/403: the gateway's credentials
        error.type = "invalid_request_error"  # the caller's request: OpenAI SDKs branch on it
    return error


def invalid_answer(deployment: str, exc: Exception) -> BadGateway:
    return BadGateway(f"{deployment} sent an answer that is not what its API promises: {exc}")
