"""Fault suite: backends that die, fail, hang, cut streams or saturate; the gateway's own
signals and config changes. Real processes on loopback throughout."""

from __future__ import annotations

import concurrent.futures
import json
import signal
import threading
import time

import httpx
import openai
import pytest
import yaml

from tests.conftest import MASTER_KEY, Backend, Gateway, routing_config
from tests.gateway.raw import request_lines

AUTH = {"Authorization": f"Bearer {MASTER_KEY}"}
CHAT = {"model": "llama-gpu", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def backends():
    primary, fallback = Backend("openai"), Backend("ollama")
    yield primary, fallback
    primary.stop()
    fallback.stop()


def sdk(gw) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=MASTER_KEY, max_retries=0)


def last_request_log(gw, path: str = "/v1/chat/completions") -> dict:

    for _ in range(50):
        lines = [json.loads(x) for x in gw.log.splitlines() if '"msg":"request"' in x]
        lines = [x for x in lines if x["path"] == path]
        if lines:
            return lines[-1]
        time.sleep(0.05)
    raise AssertionError("no request line logged")


def test_fallback_when_primary_process_is_killed(make_gateway, backends) -> None:
    primary, fallback = backends
    gw = make_gateway(routing_config(primary, fallback))
    primary.kill()
    answer = sdk(gw).chat.completions.create(**CHAT)
    assert answer.model == "llama3.1:8b"  # the CPU Ollama answered
    line = last_request_log(gw)
    assert line["fallback"] == "llama-cpu" and line["deployment"] == "ollama-chat"
    assert line["retries"] == 1  # num_retries=1 on the dead primary first


def test_fallback_on_500(make_gateway, backends) -> None:
    primary, fallback = backends
    gw = make_gateway(routing_config(primary, fallback))
    primary.control(mode="error500")
    answer = sdk(gw).chat.completions.create(**CHAT)
    assert answer.model == "llama3.1:8b"
    assert primary.stats()["calls"] == 2  # first try + one retry, then the fallback


def test_hung_backend_times_out_then_falls_back(make_gateway, backends) -> None:
    primary, fallback = backends
    config = routing_config(primary, fallback)
    config["router_settings"]["num_retries"] = 0
    gw = make_gateway(config)  # llama-gpu has timeout: 2
    primary.control(mode="hang")
    started = time.monotonic()
    answer = sdk(gw).chat.completions.create(**CHAT)
    elapsed = time.monotonic() - started
    assert answer.model == "llama3.1:8b"
    assert 2.0 <= elapsed < 5.0, elapsed  # the configured bound, not a hang


def test_hung_backend_without_fallback_is_504(make_gateway) -> None:
    primary = Backend("openai")
    try:
        config = routing_config(primary, None)
        config["router_settings"]["num_retries"] = 0
        gw = make_gateway(config)
        primary.control(mode="hang")
        with pytest.raises(openai.APIStatusError) as err:
            sdk(gw).chat.completions.create(**CHAT)
        assert err.value.status_code == 504
    finally:
        primary.stop()


def test_stream_cut_midway_raises_in_the_client(make_gateway, backends) -> None:
    primary, fallback = backends
    gw = make_gateway(routing_config(primary, fallback))
    primary.control(mode="cut_stream")
    received: list[str] = []
    with pytest.raises((openai.APIError, httpx.RemoteProtocolError)):
        for chunk in sdk(gw).chat.completions.create(**CHAT, stream=True):
            if chunk.choices and chunk.choices[0].delta.content:
                received.append(chunk.choices[0].delta.content)
    assert received == ["Hello", " from"]  # what arrived before the cut, then an error


def logged(gw: Gateway, request_id: str, timeout: float = 5.0) -> dict:
    """The request's log line, once the gateway has written it."""
    deadline = time.monotonic() + timeout
    while not (lines := [x for x in request_lines(gw.log) if x["request_id"] == request_id]):
        assert time.monotonic() < deadline, f"no log line for {request_id}"
        time.sleep(0.02)
    return lines[0]


def test_all_deployments_down_is_503_fast_once_breakers_open(make_gateway) -> None:
    dead = Backend("openai")
    dead_fallback = Backend("ollama")
    gw = make_gateway(routing_config(dead, dead_fallback))
    dead.kill()
    dead_fallback.kill()
    for _ in range(4):  # allowed_fails=3 consecutive failures open each breaker
        response = httpx.post(gw.url + "/v1/chat/completions", json=CHAT, headers=AUTH)
        assert response.status_code == 503
    headers = {**AUTH, "X-Request-ID": "after-the-breakers"}
    response = httpx.post(gw.url + "/v1/chat/completions", json=CHAT, headers=headers)
    assert response.status_code == 503
    assert "no healthy deployment" in response.json()["error"]["message"]
    # fast because nothing was tried: no deployment picked, no attempt failed
    line = logged(gw, "after-the-breakers")  # request lines are flushed once per loop turn
    assert line["status"] == 503 and line["deployment"] is None and "errors" not in line, line
    health = httpx.get(gw.url + "/health", headers=AUTH).json()
    open_ids = {d["id"] for d in health["unhealthy_endpoints"]}
    assert {"vllm-chat", "ollama-chat"} <= open_ids
    assert httpx.get(gw.url + "/health/readiness").status_code == 200  # the gateway is fine


def test_200_concurrent_requests_all_succeed(gateway) -> None:
    def one(i: int) -> int:
        body = {"model": "llama-gpu", "messages": [{"role": "user", "content": str(i)}]}
        return httpx.post(
            gateway.url + "/v1/chat/completions", json=body, headers=AUTH, timeout=30
        ).status_code

    with concurrent.futures.ThreadPoolExecutor(max_workers=200) as pool:
        statuses = list(pool.map(one, range(200)))
    assert statuses == [200] * 200


def test_queue_full_is_429_with_retry_after(make_gateway) -> None:
    primary = Backend("openai")
    try:
        config = routing_config(primary, None, queue_size=1, queue_timeout=10)
        config["model_list"][0]["litellm_params"]["max_parallel_requests"] = 1
        gw = make_gateway(config)
        primary.control(mode="slow", delay=1.5)
        with concurrent.futures.ThreadPoolExecutor(max_workers=3) as pool:
            futures = [
                pool.submit(
                    httpx.post, gw.url + "/v1/chat/completions", json=CHAT, headers=AUTH, timeout=30
                )
                for _ in range(3)
            ]
            responses = [f.result() for f in futures]
        statuses = sorted(r.status_code for r in responses)
        assert statuses == [200, 200, 429]  # one running, one queued, one refused
        refused = next(r for r in responses if r.status_code == 429)
        assert int(refused.headers["Retry-After"]) >= 1
        assert refused.json()["error"]["type"] == "rate_limit_error"
    finally:
        primary.stop()


def test_queue_full_on_ollama_api_is_429_in_ollama_shape(make_gateway) -> None:
    fallback = Backend("ollama")
    try:
        config = routing_config(None, fallback, queue_size=0)
        config["model_list"][0]["litellm_params"]["max_parallel_requests"] = 1
        gw = make_gateway(config)
        fallback.control(mode="slow", delay=1.0)
        body = {"model": "mxbai-embed-large", "input": "x"}
        with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
            futures = [
                pool.submit(httpx.post, gw.ollama_url + "/api/embed", json=body, timeout=30)
                for _ in range(2)
            ]
            responses = [f.result() for f in futures]
        refused = next(r for r in responses if r.status_code == 429)
        assert "error" in refused.json() and isinstance(refused.json()["error"], str)
        assert "Retry-After" in refused.headers
    finally:
        fallback.stop()


def test_sigterm_lets_a_running_request_finish_then_exits_0(make_gateway) -> None:
    primary = Backend("openai")
    try:
        config = routing_config(primary, None, drain_delay=0.5)
        config["model_list"][0]["litellm_params"]["timeout"] = 10
        gw = make_gateway(config)
        primary.control(mode="slow", delay=2.0)
        result: dict[str, object] = {}

        def call() -> None:
            result["response"] = httpx.post(
                gw.url + "/v1/chat/completions", json=CHAT, headers=AUTH, timeout=30
            )

        thread = threading.Thread(target=call)
        thread.start()
        time.sleep(0.5)  # the request is in flight at the backend
        gw.signal(signal.SIGTERM)
        time.sleep(0.2)
        assert httpx.get(gw.url + "/health/readiness").status_code == 503  # draining
        thread.join(timeout=15)
        assert result["response"].status_code == 200  # type: ignore[attr-defined]
        assert gw.proc.wait(timeout=15) == 0
    finally:
        primary.stop()


def test_invalid_config_keeps_old_serving_and_valid_one_is_applied(make_gateway, backends) -> None:
    primary, fallback = backends
    config = routing_config(primary, fallback)
    gw = make_gateway(config)
    gw.config_path.write_text("model_list: [ {model_name: broken} ]\n")
    for _ in range(100):
        if "config reload failed" in gw.log:
            break
        time.sleep(0.05)
    assert "config reload failed" in gw.log
    assert sdk(gw).chat.completions.create(**CHAT).choices  # old config still serves
    metrics = httpx.get(gw.metrics_url).text
    assert 'synapse_config_reloads_total{result="failed"} 1.0' in metrics

    config["router_settings"]["model_group_alias"]["fresh-alias"] = "llama-cpu"
    new = gw.config_path.with_name("new.yaml")
    new.write_text(yaml.safe_dump(config))
    new.replace(gw.config_path)  # atomic swap, as a ConfigMap volume does
    for _ in range(100):
        ids = {m.id for m in sdk(gw).models.list()}
        if "fresh-alias" in ids:
            break
        time.sleep(0.05)
    assert "fresh-alias" in ids
