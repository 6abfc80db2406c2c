"""Issue 16.8: the CPU Ollama keeps the fallback LLM and the embedding model loaded together.

With OLLAMA_MAX_LOADED_MODELS=1 they evict each other on every switch while vLLM is down, and
embeddings stop meeting the plan's < 100 ms exactly then. Two must be allowed, and the two must
fit the container's memory limit with room to spare.
"""

from __future__ import annotations

import yaml

from tests.deploy.helpers import CONFIG, Doc, containers, find

GB = 1000**3
GI = 1024**3
# Resident size of each model on a CPU Ollama: the library's Q4_K_M / F16 weights plus the
# context's KV cache and compute buffers at OLLAMA_NUM_PARALLEL=4 (ollama.com/library figures:
# llama3.1:8b 4.9 GB, mxbai-embed-large 670 MB), rounded up.
RESIDENT = {"llama3.1:8b": 9 * GB, "mxbai-embed-large": 1.5 * GB}


def _ollama_models() -> set[str]:
    config = yaml.safe_load(CONFIG.read_text())
    models = set()
    for entry in config["model_list"]:
        provider, _, name = entry["litellm_params"]["model"].partition("/")
        if provider in ("ollama", "ollama_chat"):
            models.add(name)
    return models


def test_every_ollama_model_of_the_config_stays_loaded(phase5: list[Doc]) -> None:
    (container,) = containers(find(phase5, "Deployment", "ollama"))
    env = {e["name"]: e.get("value") for e in container["env"]}
    routed = _ollama_models()
    assert routed == set(RESIDENT), "size the new model in RESIDENT"
    assert int(env["OLLAMA_MAX_LOADED_MODELS"]) >= len(routed)
    limit = container["resources"]["limits"]["memory"]
    assert limit.endswith("Gi")
    together = sum(RESIDENT.values())
    assert together * 2 < int(limit[:-2]) * GI, "both models, with margin, within the limit"
