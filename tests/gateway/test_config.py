"""Config loading: LiteLLM's format, precise errors, warnings for what Synapse ignores."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from synapse.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def check(path: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "synapse", "check-config", str(path)],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin", **env},
    )


@pytest.mark.parametrize("name", ["litellm-config.yaml", "local.yaml"])
def test_shipped_configs_are_valid(name: str) -> None:
    result = check(ROOT / "config" / name, SYNAPSE_MASTER_KEY="x" * 32)
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout and "warning" not in result.stderr


def test_cluster_config_routes_as_the_plan_says() -> None:
    config = load_config(ROOT / "config/litellm-config.yaml", {"SYNAPSE_MASTER_KEY": "k" * 32})
    assert config.groups["mxbai-embed-large"][0].provider == "ollama"
    gpu = config.groups["llama3.1-8b"][0]
    assert gpu.provider == "hosted_vllm" and "vllm-inference" in gpu.api_base
    assert config.fallbacks["llama3.1-8b"] == ("llama3.1-8b-cpu",)
    assert config.groups["llama3.1-8b-cpu"][0].backend_model == "llama3.1:8b"
    assert config.aliases["llama3.1:8b"] == "llama3.1-8b"
    assert config.groups["whisper-large-v3"][0].mode == "audio_transcription"
    assert config.groups["piper-tts"][0].mode == "audio_speech"
    assert config.master_key == "k" * 32


def test_error_names_file_key_path_and_expectation(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
model_list:
  - model_name: a
    litellm_params: {model: bedrock/claude, api_base: http://x}
  - model_name: b
    litellm_params: {model: openai/x, api_base: ftp://nope, timeout: -1}
  - litellm_params: {model: ollama/x}
""",
    )
    result = check(path)
    assert result.returncode == 1
    err = result.stderr
    assert (
        f"{path}: model_list[0].litellm_params.model: expected '<provider>/<backend model>'" in err
    )
    assert "model_list[1].litellm_params.api_base: expected an http:// or https:// URL" in err
    assert "model_list[1].litellm_params.timeout:" in err and "greater than 0" in err
    assert "model_list[2].model_name: required key is missing" in err


def test_missing_environment_variable_is_named(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
model_list:
  - model_name: a
    litellm_params: {model: ollama/a, api_key: os.environ/BACKEND_KEY}
""",
    )
    with pytest.raises(ConfigError) as err:
        load_config(path, {})
    assert err.value.problems == [
        "model_list[0].litellm_params.api_key: environment variable BACKEND_KEY is not set"
    ]
    assert load_config(path, {"BACKEND_KEY": "s3"}).groups["a"][0].api_key == "s3"


def test_unknown_keys_warn_once_each(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
model_list:
  - model_name: a
    litellm_params: {model: ollama/a, rpm: 10}
  - model_name: a
    litellm_params: {model: ollama/a, rpm: 20, api_base: http://other:11434}
litellm_settings: {drop_params: true}
router_settings: {routing_strategy: usage-based-routing-v2, enable_pre_call_checks: true}
""",
    )
    result = check(path)
    assert result.returncode == 0
    lines = result.stderr.splitlines()
    assert sum("model_list[*].litellm_params.rpm: not implemented" in x for x in lines) == 1
    assert any("litellm_settings.drop_params" in x for x in lines)
    assert any("router_settings.enable_pre_call_checks" in x for x in lines)
    assert any("routing_strategy" in x and "least in-flight" in x for x in lines)


def test_synapse_settings_are_strict(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
model_list:
  - model_name: a
    litellm_params: {model: ollama/a}
synapse_settings: {ollama_prot: 1}
""",
    )
    with pytest.raises(ConfigError) as err:
        load_config(path, {})
    text = str(err.value)
    assert "synapse_settings.ollama_prot: unknown key" in text


def test_a_removed_setting_says_what_replaced_it(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
model_list:
  - model_name: a
    litellm_params: {model: ollama/a}
synapse_settings: {embedding_batching: {max_wait_ms: 5}}
""",
    )
    with pytest.raises(ConfigError) as err:
        load_config(path, {})
    text = str(err.value)
    assert "synapse_settings.embedding_batching.max_wait_ms: removed" in text
    assert "max_in_flight" in text and "check the spelling" not in text


def test_cross_references_after_schema(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
model_list:
  - model_name: a
    litellm_params: {model: ollama/a, api_base: http://o:11434/v1}
router_settings:
  fallbacks: [{a: [ghost]}]
  model_group_alias: {b: nobody}
""",
    )
    with pytest.raises(ConfigError) as err:
        load_config(path, {})
    problems = err.value.problems
    assert any(
        "api_base: the Ollama server's root URL is expected, without /v1" in p for p in problems
    )
    assert any(
        "fallbacks[0].a: expected an existing model_name; got 'ghost'" in p for p in problems
    )
    assert any(
        "model_group_alias.b: expected an existing model_name; got 'nobody'" in p for p in problems
    )


def test_openai_base_is_accepted_with_or_without_v1(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
model_list:
  - model_name: a
    litellm_params: {model: hosted_vllm/m, api_base: http://v:8000/v1/}
  - model_name: b
    litellm_params: {model: openai/m, api_base: http://v:8000}
""",
    )
    config = load_config(path, {})
    assert config.groups["a"][0].openai_base == "http://v:8000/v1"
    assert config.groups["b"][0].openai_base == "http://v:8000/v1"


def test_unreadable_and_non_mapping_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read file"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(write(tmp_path, "- just\n- a list\n"))
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(write(tmp_path, "model_list: [\n"))
