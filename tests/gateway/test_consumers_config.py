"""Consumers (issue 19): `check-config` names every problem of `synapse_settings.consumers`
by key path, and never shows a consumer's key."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from synapse.config import ConfigError, load_config
from synapse.config.consumers import key_digest
from tests.conftest import ROOT

KEY = "sk-consumer-0123456789"


def write(tmp_path: Path, consumers: list[dict[str, Any]], **settings: Any) -> Path:
    config = {
        "model_list": [
            {"model_name": "embed", "litellm_params": {"model": "ollama/mxbai-embed-large"}},
            {"model_name": "chat", "litellm_params": {"model": "ollama/llama3.1:8b"}},
        ],
        "router_settings": {"model_group_alias": {"llama3.1:8b": "chat"}},
        "synapse_settings": {"consumers": consumers, **settings},
    }
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def problems(path: Path, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as err:
        load_config(path, environ or {})
    return err.value.problems


def test_a_valid_block_resolves_aliases_shares_limits_and_keeps_only_digests(
    tmp_path: Path,
) -> None:
    path = write(
        tmp_path,
        [
            {
                "name": "memory",
                "key": "os.environ/K",
                "models": ["embed", "llama3.1:8b"],
                "priority": "batch",
                "rpm": 601,
                "max_parallel": 8,
            },
            {"name": "ui", "key_sha256": hashlib.sha256(b"x" * 20).hexdigest()},
        ],
        replicas=2,
        ollama_consumer="ui",
    )
    config = load_config(path, {"K": KEY})
    memory, ui = config.consumers
    assert memory.models == frozenset({"embed", "chat"})  # the alias allows its group
    assert (memory.rpm, memory.max_parallel, memory.priority) == (300, 4, "batch")
    assert memory.key_sha256 == key_digest(KEY) and KEY not in repr(config)
    assert ui.models is None and ui.key_sha256 == key_digest("x" * 20)
    assert config.ollama_consumer is ui


def test_every_problem_is_named_by_key_path(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        [
            {"name": "a", "key": "os.environ/K", "models": ["embed", "gpt-4"]},
            {"name": "a", "key": "os.environ/K"},
            {"name": "b", "key": ""},
            {"name": "c"},
            {"name": "d", "key": KEY + "x", "key_sha256": "ab" * 32},
            {"name": "master", "key_sha256": "cd" * 32},
            {"name": "e", "key_sha256": "ef" * 32, "rpm": 1},
        ],
        replicas=2,
        ollama_consumer="nobody",
    )
    found = problems(path, {"K": KEY})
    c = "synapse_settings.consumers"
    assert found == [
        f"{c}[0].models[1]: expected a model_name or model_group_alias; got 'gpt-4' "
        "(known: chat, embed, llama3.1:8b)",
        f"{c}[1].name: duplicate consumer name 'a' (also {c}[0])",
        f"{c}[1]: the same key as {c}[0]; give each its own key",
        f"{c}[2].key: expected a printable key of at least 16 characters; got an empty value",
        f"{c}[3]: expected exactly one of key or key_sha256",
        f"{c}[4]: expected exactly one of key or key_sha256",
        f"{c}[5].name: 'master' is reserved for the master key's requests",
        f"{c}[6].rpm: expected at least synapse_settings.replicas (2), so each replica may "
        "serve at least one; got 1",
        "synapse_settings.ollama_consumer: expected the name of a consumer in "
        "synapse_settings.consumers; got 'nobody'",
    ]


def test_a_consumer_key_equal_to_the_master_key_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, [{"name": "a", "key": KEY}])
    raw = yaml.safe_load(path.read_text())
    raw["general_settings"] = {"master_key": KEY}
    path.write_text(yaml.safe_dump(raw))
    assert problems(path) == [
        "synapse_settings.consumers[0]: the same key as general_settings.master_key; "
        "give each its own key"
    ]


def test_check_config_reports_without_showing_the_key(tmp_path: Path) -> None:
    short = "sk-short"
    path = write(tmp_path, [{"name": "a", "key": "os.environ/K", "priority": "urgent"}])
    checked = subprocess.run(
        [sys.executable, "-m", "synapse", "check-config", str(path)],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin", "K": short},
        cwd=ROOT,
        timeout=30,
    )
    assert checked.returncode == 1
    assert "synapse_settings.consumers[0].priority: Input should be 'interactive' or 'batch'" in (
        checked.stderr
    )
    assert short not in checked.stderr
