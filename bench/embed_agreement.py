"""Cosine agreement of one model's vectors across precisions, against another model's.

What "declare them one embedding space only if their vectors agree" means in numbers, with the
tiny models here: the tiny BERT on vLLM's pooling runner in float32 and in bfloat16 (the same
model, another precision: as vLLM fp16 on a GPU against a quantized GGUF on a CPU Ollama) and a
tiny BERT of the same shape with other weights (another model). One vLLM at a time.

Run: python bench/embed_agreement.py --vllm-venv .venv-vllm
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

import aiohttp

from synapse.embeddings import agreement
from synapse.local.pooling import MODEL_NAME, PoolingServer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from procs import exit_on_sigterm, free_port

VARIANTS = (("float32", 0), ("bfloat16", 0), ("float32", 1))


async def fetch(url: str) -> list[list[float]]:
    async with aiohttp.ClientSession() as session:
        return await agreement.vectors(session, url + "/v1", MODEL_NAME, {})


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vllm-venv", type=Path, required=True)
    args = ap.parse_args()
    exit_on_sigterm()
    found = {}
    with tempfile.TemporaryDirectory(prefix="embed-agree-") as tmp:
        for dtype, seed in VARIANTS:
            log = Path(tmp) / f"vllm-{dtype}-{seed}.log"
            server = PoolingServer(args.vllm_venv, Path(tmp), free_port(), log, dtype, seed)
            try:
                server.start()
                found[(dtype, seed)] = asyncio.run(fetch(server.url))
            finally:
                server.stop()
    base = found[VARIANTS[0]]
    lines = ["| against tiny BERT float32 | min cosine | mean cosine |", "|---|---|---|"]
    for label, key in (
        ("same model, bfloat16", VARIANTS[1]),
        ("another model (other weights), float32", VARIANTS[2]),
    ):
        result = agreement.compare(base, found[key])
        lines.append(f"| {label} | {result['min']:.5f} | {result['mean']:.5f} |")
    print("\n".join(lines))
    print(f"\n{len(agreement.TEXTS)} texts (synapse.embeddings.agreement.TEXTS).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
