"""pull-models against a fake Ollama speaking /api/pull NDJSON, directly and via the API proxy."""

from __future__ import annotations

import socket

import pytest

from synapse.ops.pull import PullFailed, follow_pull, plan_targets
from tests.ops.conftest import cli, cli_json
from tests.ops.fakebackends import FakeOllama


def write_config(tmp_path, ollama_url: str) -> None:
    (tmp_path / "config").mkdir(exist_ok=True)
    (tmp_path / "config" / "litellm-config.yaml").write_text(
        f"""
model_list:
  - model_name: mxbai-embed-large
    litellm_params: {{model: ollama/mxbai-embed-large, api_base: "{ollama_url}"}}
    model_info: {{mode: embedding}}
  - model_name: llama3.1-8b
    litellm_params: {{model: hosted_vllm/meta-llama/Meta-Llama-3.1-8B-Instruct, api_base: "http://vllm:8001/v1"}}
  - model_name: llama3.1-8b-cpu
    litellm_params: {{model: ollama_chat/llama3.1:8b, api_base: "{ollama_url}"}}
"""
    )


@pytest.fixture
def ollama(served, cluster, tmp_path):
    fake = FakeOllama([], available={"mxbai-embed-large": [4000, 300], "llama3.1:8b": [9000]})
    url = served.start(fake.app())
    write_config(tmp_path, url)
    fake.url = url
    return fake


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_defaults_come_from_the_config(ollama, capsys):
    code, doc = cli_json(capsys, "pull-models")
    assert code == 0, doc
    assert [(m["model"], m["status"]) for m in doc["models"]] == [
        ("mxbai-embed-large", "pulled"),
        ("llama3.1:8b", "pulled"),
    ]
    assert doc["models"][0]["bytes_total"] == 4300  # both layers' totals from the stream
    assert ollama.pulls == ["mxbai-embed-large:latest", "llama3.1:8b"]


def test_present_models_are_skipped_and_force_pulls_again(ollama, capsys):
    ollama.models = ["mxbai-embed-large:latest", "llama3.1:8b"]
    code, doc = cli_json(capsys, "pull-models")
    assert code == 0
    assert {m["status"] for m in doc["models"]} == {"present"}
    assert ollama.pulls == []
    code, doc = cli_json(capsys, "pull-models", "mxbai-embed-large", "--force")
    assert code == 0 and doc["models"][0]["status"] == "pulled"
    assert ollama.pulls == ["mxbai-embed-large:latest"]


def test_an_unknown_model_fails_with_ollamas_message(ollama, capsys):
    code, doc = cli_json(capsys, "pull-models", "no-such-model", "mxbai-embed-large")
    assert code == 1
    by = {m["model"]: m for m in doc["models"]}
    assert by["no-such-model"]["status"] == "failed"
    assert "file does not exist" in by["no-such-model"]["detail"]
    assert by["mxbai-embed-large"]["status"] == "pulled"


def test_ollama_unreachable_is_a_clear_error(cluster, capsys):
    url = f"http://127.0.0.1:{free_port()}"
    code, out = cli(capsys, "pull-models", "--ollama-url", url, "mxbai-embed-large")
    assert code == 3
    assert "cannot reach Ollama" in out and url in out
    assert "Traceback" not in out


def test_pull_through_the_api_server_service_proxy(ollama, stack, capsys):
    stack.cluster.services[("llm-infra", "ollama", 11434)] = ollama.url
    code, doc = cli_json(
        capsys,
        "pull-models",
        "--ollama-url",
        "http://ollama.llm-infra.svc.cluster.local:11434",
        "llama3.1:8b",
    )
    assert code == 0, doc
    assert doc["models"][0]["ollama"].startswith("llm-infra/ollama:11434")
    proxied = [p for m, p, _ in stack.cluster.requests if p.endswith("/proxy/api/pull")]
    assert proxied == ["/api/v1/namespaces/llm-infra/services/ollama:11434/proxy/api/pull"]


def test_service_without_endpoints_is_unreachable(stack, capsys):
    del stack.cluster.services[("llm-infra", "ollama", 11434)]
    code, doc = cli_json(capsys, "pull-models", "mxbai-embed-large")
    assert code == 3
    assert "no endpoints available" in doc["error"]


def test_human_output_has_progress_and_a_table(ollama, capsys):
    code, out = cli(capsys, "pull-models", "mxbai-embed-large")
    assert code == 0
    assert "pulled" in out and "mxbai-embed-large" in out


def test_follow_pull_needs_success_and_surfaces_errors():
    seen = []
    follow_pull(['{"status":"pulling manifest"}', "", '{"status":"success"}'], seen.append)
    assert [e["status"] for e in seen] == ["pulling manifest", "success"]
    with pytest.raises(PullFailed, match="ended before"):
        follow_pull(['{"status":"pulling manifest"}'], seen.append)
    with pytest.raises(PullFailed, match="manifest unknown"):
        follow_pull(['{"error":"manifest unknown"}'], seen.append)
    with pytest.raises(PullFailed, match="NDJSON"):
        follow_pull(["<html>"], seen.append)


def test_plan_targets_without_config(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert plan_targets([], None, None) == {
        "http://ollama.llm-infra.svc.cluster.local:11434": ["mxbai-embed-large", "llama3.1:8b"]
    }
    assert plan_targets(["x"], "http://h:1", None) == {"http://h:1": ["x"]}
