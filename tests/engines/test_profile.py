"""The effective local config: ports rewritten, a local Ollama's models added, still valid."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from synapse.config.loader import load_config
from synapse.local import profile
from synapse.local.supervisor import free_port

ROOT = Path(__file__).resolve().parents[2]
LOCAL = ROOT / "config" / "local-engines.yaml"
TAGS = {
    "models": [
        {"name": "llama3.2:1b", "model": "llama3.2:1b", "details": {"family": "llama"}},
        {"name": "all-minilm:latest", "details": {"family": "bert", "families": ["bert"]}},
        {"name": "e5-small", "details": {"family": "bert"}},  # clashes with a local group
    ]
}


class _FakeOllama(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        found = self.path == "/api/tags"
        body = json.dumps(TAGS if found else {"error": "not found"}).encode()
        self.send_response(200 if found else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def fake_ollama() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeOllama)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_checked_in_profile_is_a_valid_gateway_config() -> None:
    config = load_config(LOCAL)
    assert set(config.groups) == {
        "e5-small", "llama3.1-8b", "llama3.1-8b-cpu", "whisper-tiny", "piper-voice",
    }  # fmt: skip
    assert config.fallbacks["llama3.1-8b"] == ("llama3.1-8b-cpu",)  # as in production
    assert config.groups["llama3.1-8b"][0].provider == "hosted_vllm"
    modes = {name: deps[0].mode for name, deps in config.groups.items()}
    assert modes["whisper-tiny"] == "audio_transcription"
    assert modes["piper-voice"] == "audio_speech"
    assert modes["e5-small"] == "embedding"
    assert all(d.api_base.startswith("http://127.0.0.1:") for d in config.deployments)


def test_effective_config_moves_engines_to_their_real_ports(tmp_path: Path) -> None:
    base = profile.load(LOCAL)
    cfg = profile.effective(base, {8102: 40102, 8104: 40104})
    bases = {e["model_name"]: e["litellm_params"]["api_base"] for e in cfg["model_list"]}
    assert bases["llama3.1-8b"] == "http://127.0.0.1:40102/v1"
    assert bases["whisper-tiny"] == bases["piper-voice"] == "http://127.0.0.1:40104/v1"
    assert bases["llama3.1-8b-cpu"] == "http://127.0.0.1:8103/v1"  # not remapped
    assert profile.load(LOCAL) == base  # the checked-in profile is not modified
    written = profile.write(cfg, tmp_path / "config.yaml")
    assert load_config(written).groups["llama3.1-8b"][0].api_base == "http://127.0.0.1:40102/v1"


def test_non_loopback_api_base_is_left_alone() -> None:
    base = {
        "model_list": [
            {"model_name": "x", "litellm_params": {"model": "openai/x",
                                                   "api_base": "http://example.test:8102/v1"}}
        ]
    }  # fmt: skip
    cfg = profile.effective(base, {8102: 1})
    assert cfg["model_list"][0]["litellm_params"]["api_base"] == "http://example.test:8102/v1"


def test_local_ollama_models_become_groups(fake_ollama: str, tmp_path: Path) -> None:
    models = profile.detect_ollama(fake_ollama)
    assert models is not None and len(models) == 3
    cfg = profile.effective(profile.load(LOCAL), {}, models, fake_ollama)
    config = load_config(profile.write(cfg, tmp_path / "config.yaml"))
    chat = config.groups["llama3.2:1b"][0]
    assert (chat.provider, chat.mode, chat.api_base) == ("ollama_chat", "chat", fake_ollama)
    embed = config.groups["all-minilm:latest"][0]
    assert (embed.provider, embed.mode) == ("ollama", "embedding")
    assert config.groups["e5-small"][0].provider == "openai"  # the local group wins a clash
    assert len(config.groups["e5-small"]) == 1


def test_no_ollama_when_nothing_listens_or_something_else_answers(fake_ollama: str) -> None:
    assert profile.detect_ollama(f"http://127.0.0.1:{free_port()}") is None
    assert profile.detect_ollama(fake_ollama + "/not-ollama") is None
