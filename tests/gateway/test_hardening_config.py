"""Config hardening (issue 15: 4, 10, 12): fail closed on weak keys, never echo a secret,
refuse unusable api_base values. Through `synapse check-config` and `synapse serve`, as run."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from synapse.config import ConfigError, load_config
from tests.conftest import ROOT, Backend, routing_config

SECRET = "98765432109876"


def run(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "synapse", *args],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin", **env},
        cwd=ROOT,
        timeout=30,
    )


def config_file(tmp_path: Path, general: dict | None = None, **params: object) -> Path:
    entry = {"model": "ollama/m", "api_base": "http://ollama:11434", **params}
    config = {"model_list": [{"model_name": "m", "litellm_params": entry}]}
    if general is not None:
        config["general_settings"] = general
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize("value", ["", "   ", "short-key"])
def test_empty_or_short_master_key_from_the_environment_fails_closed(
    tmp_path: Path, value: str
) -> None:
    path = config_file(tmp_path, {"master_key": "os.environ/KEY"})
    checked = run("check-config", str(path), KEY=value)
    assert checked.returncode == 1
    assert "general_settings.master_key: expected a key of at least 16 characters" in (
        checked.stderr
    )
    assert checked.stdout == ""
    served = run("serve", "--config", str(path), "--port", "0", KEY=value)
    assert served.returncode == 1 and "general_settings.master_key" in served.stderr
    if value.strip():
        assert value not in checked.stderr + served.stderr


def test_master_key_set_to_nothing_in_the_file_fails_closed(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "model_list: [{model_name: m, litellm_params: {model: ollama/m}}]\n"
        "general_settings: {master_key: }\n"
    )
    with pytest.raises(ConfigError) as err:
        load_config(path, {})
    assert err.value.problems[0].startswith(
        "general_settings.master_key: expected a key of at least 16 characters; got an empty value"
    )


def test_no_master_key_at_all_is_still_allowed(tmp_path: Path) -> None:
    assert load_config(config_file(tmp_path), {}).master_key is None


def test_ollama_requires_key_without_a_key_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "model_list: [{model_name: m, litellm_params: {model: ollama/m}}]\n"
        "synapse_settings: {ollama_requires_key: true}\n"
    )
    with pytest.raises(ConfigError) as err:
        load_config(path, {})
    assert err.value.problems == [
        "synapse_settings.ollama_requires_key: expected general_settings.master_key to be set"
    ]


def test_mistyped_secrets_are_described_not_printed(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        f"model_list: [{{model_name: m, litellm_params: {{model: ollama/m, api_key: {SECRET},"
        " timeout: os.environ/T}}]\n"
        f"general_settings: {{master_key: {SECRET}}}\n"
    )
    checked = run("check-config", str(path), T="sk-env-secret-value")
    assert checked.returncode == 1
    assert "general_settings.master_key: Input should be a valid string; got a secret" in (
        checked.stderr
    )
    assert "litellm_params.api_key: Input should be a valid string; got a secret" in (
        checked.stderr
    )
    assert "litellm_params.timeout:" in checked.stderr and "from the environment" in (
        checked.stderr
    )
    assert SECRET not in checked.stderr and "sk-env-secret-value" not in checked.stderr


def test_a_section_of_the_wrong_type_is_not_printed(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "model_list: [{model_name: m, litellm_params: {model: ollama/m}}]\n"
        f"general_settings: [{{master_key: {SECRET}}}]\n"
    )
    with pytest.raises(ConfigError) as err:
        load_config(path, {})
    assert err.value.problems == [
        "general_settings: Input should be a valid dictionary or instance of GeneralSettings; "
        "got a list"
    ]


def test_yaml_errors_name_the_place_not_the_line(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(f"general_settings:\n  master_key: {SECRET}: [\n")
    checked = run("check-config", str(path))
    assert checked.returncode == 1
    assert "invalid YAML at line 2" in checked.stderr and SECRET not in checked.stderr


def test_credentials_in_api_base_are_not_printed(tmp_path: Path) -> None:
    path = config_file(tmp_path, api_base="http://user:hunter2hunter2@ollama:11434/v1")
    checked = run("check-config", str(path))
    assert checked.returncode == 1
    assert "got 'http://***@ollama:11434/v1'" in checked.stderr
    assert "hunter2" not in checked.stderr


@pytest.mark.parametrize(
    ("api_base", "expected"),
    [
        ("http://ollama :11434", "without whitespace or control characters"),
        ("http://oll\tama:11434", "without whitespace or control characters"),
        ("http://", "with a host"),
        ("http:///v1", "with a host"),
        ("https://:8000", "with a host"),
        ("http://[::1:8000", "expected a valid URL"),
    ],
)
def test_unusable_api_base_is_refused_at_load(tmp_path: Path, api_base: str, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(config_file(tmp_path, api_base=api_base), {})
    [problem] = err.value.problems
    assert problem.startswith("model_list[0].litellm_params.api_base: ") and expected in problem


def test_failed_hot_reload_does_not_log_the_secret(make_gateway, tmp_path: Path) -> None:
    backend = Backend("ollama")
    try:
        config = routing_config(None, backend)
        gw = make_gateway(config)
        config["general_settings"] = {"master_key": int(SECRET)}
        gw.config_path.write_text(yaml.safe_dump(config))
        deadline = time.monotonic() + 10
        while "config reload failed" not in gw.log and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "general_settings.master_key" in gw.log
        assert SECRET not in gw.log
    finally:
        backend.stop()
