"""A backend is judged only by its own faults, says why it is unhealthy, and never takes
work for callers who have gone.

Real gateway and stub backend processes on loopback; raw sockets where clients must vanish.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time

import httpx
import pytest

from tests.conftest import MASTER_KEY, Backend, one_chat_deployment, routing_config
from tests.gateway.rawhttp import request_bytes

AUTH = {"Authorization": f"Bearer {MASTER_KEY}"}
CHAT = {"model": "llama-gpu", "messages": [{"role": "user", "content": "hi"}]}


def wait_for(check, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)


def process_state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rpartition(")")[2].split()[0]


def endpoints(gw) -> dict[str, dict]:
    health = httpx.get(gw.url + "/health", headers=AUTH).json()
    return {e["id"]: e for e in health["healthy_endpoints"] + health["unhealthy_endpoints"]}


# -- 20.2: a caller's mistake never reaches the backend or its breaker ---------------------


def test_wrong_mode_is_a_400_before_any_backend(
    gateway, openai_backend: Backend, ollama_backend: Backend
) -> None:
    calls = (openai_backend.stats()["calls"], ollama_backend.stats()["calls"])
    for _ in range(5):  # more than allowed_fails
        wrong = httpx.post(
            gateway.url + "/v1/embeddings",
            json={"model": "llama-gpu", "input": "x"},
            headers=AUTH,
        )
        assert wrong.status_code == 400
        error = wrong.json()["error"]
        assert error["type"] == "invalid_request_error" and error["param"] == "model"
        assert "chat model" in error["message"] and "/v1/embeddings" in error["message"]
        assert "mxbai-embed-large" in error["message"]  # what to use instead
    native = httpx.post(
        gateway.ollama_url + "/api/chat",
        json={"model": "mxbai-embed-large", "messages": [{"role": "user", "content": "x"}]},
    )
    assert native.status_code == 400 and "embedding model" in native.json()["error"]
    speech = httpx.post(
        gateway.url + "/v1/audio/speech",
        json={"model": "llama-gpu", "input": "hello", "voice": "x"},
        headers=AUTH,
    )
    assert speech.status_code == 400
    transcription = httpx.post(
        gateway.url + "/v1/audio/transcriptions",
        files={"file": ("a.wav", b"RIFF....", "audio/wav")},
        data={"model": "mxbai-embed-large"},
        headers=AUTH,
    )
    assert transcription.status_code == 400
    assert (openai_backend.stats()["calls"], ollama_backend.stats()["calls"]) == calls
    states = endpoints(gateway)
    assert states["vllm-chat"]["state"] == "closed"
    assert states["vllm-chat"]["consecutive_failures"] == 0
    ok = httpx.post(gateway.url + "/v1/chat/completions", json=CHAT, headers=AUTH)
    assert ok.status_code == 200 and ok.json()["model"] == "meta-llama/Llama-3.1-8B-Instruct"


def test_backend_4xx_answers_do_not_count_against_it(gateway, openai_backend: Backend) -> None:
    openai_backend.control(mode="error400")
    for _ in range(5):
        answer = httpx.post(gateway.url + "/v1/chat/completions", json=CHAT, headers=AUTH)
        assert answer.status_code == 400
    openai_backend.control(mode="ok")
    assert httpx.post(gateway.url + "/v1/chat/completions", json=CHAT, headers=AUTH).is_success
    assert endpoints(gateway)["vllm-chat"]["state"] == "closed"


# -- 20.5 / 15.12: why a deployment is unhealthy, naming no internal address ---------------


def test_last_failure_in_health_log_and_503(make_gateway) -> None:
    primary = Backend("openai")
    gw = make_gateway(routing_config(primary, None, health_check_interval=0.2))
    primary.kill()
    # Checks run every 0.2 s, so the kill can land while one is in flight: the dying process
    # closes that connection, or one its kernel accepted just before its listening socket
    # went. The first verdict is then "closed", truthfully; every later check is refused, and
    # /health keeps the latest reason.
    refused = "health check: connection refused"
    wait_for(lambda: (endpoints(gw)["openai-embed"]["last_failure"] or {}).get("reason") == refused)
    health = endpoints(gw)["openai-embed"]
    assert health["state"] == "open" and health["last_failure"]["at"].endswith("Z")
    changes = [json.loads(x) for x in gw.log.splitlines() if "deployment health changed" in x]
    opened = [c for c in changes if c.get("deployment") == "openai-embed" and c["to"] == "open"]
    assert len(opened) == 1, changes
    assert opened[0]["reason"] in (refused, "health check: connection closed by the backend")
    for url, path, body in (
        (gw.url, "/v1/embeddings", {"model": "embed-openai", "input": "x"}),
        (gw.ollama_url, "/api/embed", {"model": "embed-openai", "input": "x"}),
    ):
        answer = httpx.post(url + path, json=body, headers=AUTH)
        assert answer.status_code == 503
        text = answer.text
        assert "openai-embed: health check: connection refused" in text, text
        assert "127.0.0.1" not in text and str(primary.port) not in text


def test_request_failure_names_the_deployment_not_its_address(make_gateway) -> None:
    primary = Backend("openai")
    gw = make_gateway(routing_config(primary, None))
    primary.kill()
    body = {"model": "llama3.1:8b", "messages": [{"role": "user", "content": "hi"}]}
    answer = httpx.post(gw.ollama_url + "/api/chat", json=body)  # the keyless listener
    assert answer.status_code == 503
    error = answer.json()["error"]
    assert "vllm-chat: connection refused" in error
    assert "127.0.0.1" not in error and str(primary.port) not in error
    assert endpoints(gw)["vllm-chat"]["last_failure"]["reason"] == "connection refused"


def test_health_never_shows_api_base_credentials(make_gateway, openai_backend) -> None:
    config = routing_config(openai_backend, None)
    port = openai_backend.port
    config["model_list"][0]["litellm_params"]["api_base"] = (
        f"http://admin:s3cret@127.0.0.1:{port}/v1"
    )
    gw = make_gateway(config)
    health = httpx.get(gw.url + "/health", headers=AUTH)
    assert "s3cret" not in health.text and "admin" not in health.text
    assert endpoints(gw)["vllm-chat"]["api_base"] == f"http://127.0.0.1:{port}/v1"


# -- 15.9: a queued request whose client has gone never reaches the backend ----------------


@pytest.mark.parametrize("rounds", [3])
def test_aborted_queued_requests_never_reach_the_backend(make_gateway, rounds: int) -> None:
    backend = Backend("openai")
    try:
        config = routing_config(None, None, queue_size=32, queue_timeout=30)
        config["model_list"] = one_chat_deployment(backend, max_parallel_requests=1, timeout=60)
        gw = make_gateway(config)
        backend.control(mode="slow", delay=5)
        raw = request_bytes("POST", "/v1/chat/completions", gw.port, CHAT, AUTH)
        for n in range(1, rounds + 1):
            clients = [socket.create_connection(("127.0.0.1", gw.port))]
            clients[0].sendall(raw)
            wait_for(lambda n=n: backend.stats()["calls"] == n)
            for _ in range(8):
                clients.append(socket.create_connection(("127.0.0.1", gw.port)))
                clients[-1].sendall(raw)
            wait_for(lambda: endpoints(gw)["vllm-chat"]["queued"] == 8)
            # All clients leave at once, as the gateway sees it: it is stopped while they
            # close, so the served request's slot is handed over as the waiters are cancelled.
            os.kill(gw.proc.pid, signal.SIGSTOP)
            wait_for(lambda: process_state(gw.proc.pid) == "T")
            for client in clients:  # the one being served first, then every queued one
                client.close()
            os.kill(gw.proc.pid, signal.SIGCONT)
            wait_for(lambda: endpoints(gw)["vllm-chat"]["in_flight"] == 0)
            assert endpoints(gw)["vllm-chat"]["queued"] == 0
            time.sleep(0.3)
            assert backend.stats()["calls"] == n  # only the request that held the slot
    finally:
        backend.stop()
