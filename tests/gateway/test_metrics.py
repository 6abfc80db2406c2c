"""/metrics exports every series the alerts and dashboard rely on, with real values."""

from __future__ import annotations

import subprocess
import sys

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import MASTER_KEY, Gateway


def samples(gateway: Gateway) -> dict[str, list]:
    text = httpx.get(gateway.metrics_url).text
    out: dict[str, list] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append(sample)
    return out


def value(found: dict[str, list], name: str, **labels: str) -> float:
    return sum(
        s.value for s in found.get(name, []) if all(s.labels.get(k) == v for k, v in labels.items())
    )


def test_metrics_need_no_key_and_count_traffic(gateway: Gateway, openai_backend) -> None:
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=MASTER_KEY, max_retries=0)
    before = samples(gateway)
    client.chat.completions.create(model="llama-gpu", messages=[{"role": "user", "content": "m"}])
    list(
        client.chat.completions.create(
            model="llama-gpu",
            messages=[{"role": "user", "content": "m"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    openai_backend.control(mode="error500")
    client.chat.completions.create(model="llama-gpu", messages=[{"role": "user", "content": "m"}])
    openai_backend.control(mode="ok")
    after = samples(gateway)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    route = "/v1/chat/completions"
    assert delta("synapse_requests_total", model="llama-gpu", route=route, status="200") == 3
    assert delta("synapse_request_duration_seconds_count", model="llama-gpu", route=route) == 3
    assert delta("synapse_time_to_first_token_seconds_count", model="llama-gpu") == 1
    assert delta("synapse_retries_total", model="llama-gpu", deployment="vllm-chat") == 1
    assert delta("synapse_fallbacks_total", from_model="llama-gpu", to_model="llama-cpu") == 1
    # Counted under the group the caller asked for, fallback answers included.
    assert delta("synapse_prompt_tokens_total", model="llama-gpu") == 21
    assert delta("synapse_completion_tokens_total", model="llama-gpu") == 18
    assert (
        value(after, "synapse_deployment_up", deployment="vllm-chat", provider="hosted_vllm") == 1
    )
    assert value(after, "synapse_circuit_breaker_state", deployment="ollama-embed") == 0
    assert "synapse_requests_in_flight" in after and "synapse_requests_queued" in after
    assert value(after, "process_resident_memory_bytes") > 0


def test_metrics_are_served_only_on_their_own_listener(gateway: Gateway) -> None:
    assert httpx.get(gateway.metrics_url).status_code == 200
    auth = {"Authorization": f"Bearer {MASTER_KEY}"}
    for base in (gateway.url, gateway.ollama_url):
        for headers in ({}, auth):
            response = httpx.get(base + "/metrics", headers=headers)
            assert response.status_code == 404, (base, headers)
            assert "synapse_requests_total" not in response.text
        assert httpx.get(base + "/health/liveliness").status_code == 200
        assert httpx.get(base + "/health/readiness").status_code == 200
    metrics_base = gateway.metrics_url.removesuffix("/metrics")
    assert httpx.get(metrics_base + "/v1/models", headers=auth).status_code == 404


def test_metrics_port_comes_from_settings_unless_the_flag_overrides_it(tmp_path) -> None:
    from tests.conftest import free_port, wait_http

    port, from_settings, from_flag = free_port(), free_port(), free_port()
    config = tmp_path / "c.yaml"
    config.write_text(
        "model_list: [{model_name: m, litellm_params: {model: ollama/m}}]\n"
        f"synapse_settings: {{metrics_port: {from_settings}, health_check_interval: 0}}\n"
    )
    serve = [sys.executable, "-m", "synapse", "serve", "--config", str(config)]
    serve += ["--host", "127.0.0.1", "--port", str(port)]
    for extra, expected in (([], from_settings), (["--metrics-port", str(from_flag)], from_flag)):
        proc = subprocess.Popen([*serve, *extra], stderr=subprocess.DEVNULL)
        try:
            wait_http(f"http://127.0.0.1:{expected}/metrics", proc)
            assert (
                "synapse_requests_total" in httpx.get(f"http://127.0.0.1:{expected}/metrics").text
            )
            if extra:
                with pytest.raises(httpx.ConnectError):
                    httpx.get(f"http://127.0.0.1:{from_settings}/metrics")
        finally:
            proc.kill()
            proc.wait()
