"""Do two embedding endpoints return one space? Cosine of their vectors for the same texts.

Before two deployments (a GPU vLLM and a CPU Ollama of one model, say) are declared one
`model_info.embedding_space`, their vectors for the same texts must point the same way: the
same model in another precision agrees to a cosine near 1, another model does not (tiny
models here: README "Embedding spaces"). `synapse bench --direct-embed-url` reports it.
"""

from __future__ import annotations

import math
from typing import Any

# Short and long, several languages and shapes: where quantization differences show first.
TEXTS = (
    "search_query: how much protein per day",
    "The quarterly review moved the project deadline to March 14.",
    "Meeting notes: Alice owns the migration; Bob reviews the manifests.",
    "def cosine(a, b): return dot(a, b) / (norm(a) * norm(b))",
    "Das Treffen wurde auf nächsten Dienstag verschoben.",
    "Réunion reportée à mardi prochain, même salle.",
    "ok",
    "GPU embeddings: vLLM on the 5090, CPU Ollama as the fallback. " * 8,
)


def cosine(a: list[float], b: list[float]) -> float:
    dot = math.fsum(x * y for x, y in zip(a, b, strict=True))
    norm = math.sqrt(math.fsum(x * x for x in a)) * math.sqrt(math.fsum(y * y for y in b))
    return dot / norm if norm else 0.0


def compare(left: list[list[float]], right: list[list[float]]) -> dict[str, Any]:
    """Per-text cosines and their minimum and mean; vectors of other sizes never agree."""
    if len(left) != len(right) or any(len(a) != len(b) for a, b in zip(left, right, strict=True)):
        sizes = sorted({len(v) for v in left}), sorted({len(v) for v in right})
        return {"cosines": [], "min": None, "mean": None, "dimensions": sizes}
    cosines = [cosine(a, b) for a, b in zip(left, right, strict=True)]
    return {
        "cosines": cosines,
        "min": min(cosines),
        "mean": math.fsum(cosines) / len(cosines),
        "dimensions": len(left[0]) if left else 0,
    }


async def vectors(session: Any, base: str, model: str, headers: dict[str, str]) -> list:
    """The endpoint's vectors for TEXTS (OpenAI `/embeddings`, floats), one call."""
    body = {"model": model, "input": list(TEXTS), "encoding_format": "float"}
    async with session.post(f"{base.rstrip('/')}/embeddings", json=body, headers=headers) as resp:
        payload = await resp.json(content_type=None)
        if resp.status != 200:
            raise RuntimeError(f"{base}: {resp.status} {str(payload)[:200]}")
    data = sorted(payload["data"], key=lambda d: d.get("index", 0))
    return [d["embedding"] for d in data]
