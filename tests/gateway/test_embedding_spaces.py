"""check-config refuses mixed embedding vectors (issue 27): a group of different backend models
and an embedding fallback to another model, unless declared one `model_info.embedding_space`."""

from __future__ import annotations

from pathlib import Path

import pytest

from synapse.config import ConfigError, load_config
from tests.gateway.test_config import check, write

MIXED_GROUP = """
model_list:
  - model_name: mxbai-embed-large
    litellm_params: {model: ollama/mxbai-embed-large, api_base: http://ollama:11434}
    model_info: {mode: embedding%(ollama_space)s}
  - model_name: mxbai-embed-large
    litellm_params:
      model: hosted_vllm/mixedbread-ai/mxbai-embed-large-v1
      api_base: http://vllm:8000/v1
    model_info: {mode: embedding%(vllm_space)s}
"""

FALLBACK = """
model_list:
  - model_name: embed-gpu
    litellm_params: {model: hosted_vllm/mixedbread-ai/mxbai-embed-large-v1, api_base: http://v:8000}
    model_info: {mode: embedding%(gpu_space)s}
  - model_name: embed-cpu
    litellm_params: {model: ollama/mxbai-embed-large, api_base: http://ollama:11434}
    model_info: {mode: embedding%(cpu_space)s}
  - model_name: embed-cpu-2
    litellm_params: {model: ollama/mxbai-embed-large:latest, api_base: http://ollama-2:11434}
    model_info: {mode: embedding}
router_settings:
  model_group_alias: {mxbai: embed-gpu}
  fallbacks:
    - embed-cpu: [embed-cpu-2]
    - mxbai: [embed-cpu]
"""

SPACE = ", embedding_space: mxbai-large-v1"


def test_a_group_of_two_backend_models_is_refused_with_file_key_and_expectation(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, MIXED_GROUP % {"ollama_space": "", "vllm_space": ""})
    result = check(path)
    assert result.returncode == 1
    assert (
        f"{path}: model_list[1].model_info.embedding_space: embedding group 'mxbai-embed-large' "
        "mixes vectors: mixedbread-ai/mxbai-embed-large-v1 (openai-compatible) here, "
        "mxbai-embed-large (ollama) at model_list[0]; expected one backend model per embedding "
        "group, or declare them one space with the same model_info.embedding_space"
    ) in result.stderr


def test_one_declared_space_is_accepted_and_half_declared_is_not(tmp_path: Path) -> None:
    both = load_config(write(tmp_path, MIXED_GROUP % {"ollama_space": SPACE, "vllm_space": SPACE}))
    assert len(both.groups["mxbai-embed-large"]) == 2
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, MIXED_GROUP % {"ollama_space": SPACE, "vllm_space": ""}))
    assert "here, space 'mxbai-large-v1' at model_list[0]" in str(caught.value)


def test_an_embedding_fallback_to_another_model_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, FALLBACK % {"gpu_space": "", "cpu_space": ""})
    result = check(path)
    assert result.returncode == 1
    problems = [line for line in result.stderr.splitlines() if "fallbacks" in line]
    # embed-cpu → embed-cpu-2 is the same model (":latest" implied): allowed
    assert problems == [
        f"{path}: router_settings.fallbacks[1].mxbai: embedding group 'embed-gpu' "
        "(mixedbread-ai/mxbai-embed-large-v1 (openai-compatible)) falls back to 'embed-cpu' "
        "(mxbai-embed-large (ollama)), whose vectors are not comparable; expected a fallback of "
        "the same backend model, or declare them one space with the same "
        "model_info.embedding_space on every deployment concerned, once their vectors are "
        'checked to agree (README "Embedding spaces")'
    ]


def test_the_gpu_embeddings_plan_loads_once_declared_one_space(tmp_path: Path) -> None:
    text = FALLBACK % {"gpu_space": SPACE, "cpu_space": SPACE}
    text = text.replace("    - embed-cpu: [embed-cpu-2]\n", "")
    config = load_config(write(tmp_path, text))
    assert config.fallbacks["embed-gpu"] == ("embed-cpu",)


def test_an_empty_space_name_is_refused(tmp_path: Path) -> None:
    path = write(
        tmp_path, MIXED_GROUP % {"ollama_space": ", embedding_space: ''", "vllm_space": ""}
    )
    result = check(path)
    assert "model_list[0].model_info.embedding_space: String should have at least 1" in (
        result.stderr
    )
