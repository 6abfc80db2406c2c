"""Health checks, load balancing, stream timeouts and cancellation."""

from __future__ import annotations

import time
from collections import Counter

import httpx
import openai
import pytest

from synapse.config import load_config
from synapse.gateway import Gateway as GatewayState
from synapse.routing import Router, Trace
from synapse.routing.breaker import Breaker, State
from tests.conftest import MASTER_KEY, Backend, routing_config

AUTH = {"Authorization": f"Bearer {MASTER_KEY}"}


def two_deployment_router(tmp_path) -> Router:
    path = tmp_path / "c.yaml"
    path.write_text("""
model_list:
  - model_name: g
    litellm_params: {model: hosted_vllm/m, api_base: http://a:8000}
    model_info: {id: a}
  - model_name: g
    litellm_params: {model: hosted_vllm/m, api_base: http://b:8000}
    model_info: {id: b}
""")
    return GatewayState(load_config(path, {})).router


def test_least_in_flight_wins_and_ties_are_random(tmp_path) -> None:
    router = two_deployment_router(tmp_path)
    a, b = router.states["a"], router.states["b"]
    a.in_flight = 3
    assert {router.pick("g", set()).id for _ in range(20)} == {"b"}
    a.in_flight = b.in_flight = 1
    picks = Counter(router.pick("g", set()).id for _ in range(400))
    assert picks["a"] > 100 and picks["b"] > 100  # both chosen: ties broken at random
    assert router.pick("g", {"a"}).id == "b"  # an untried deployment first on retry


def test_open_breaker_is_skipped_until_cooldown_then_half_open(tmp_path) -> None:
    router = two_deployment_router(tmp_path)
    a = router.states["a"]
    a.breaker.cooldown = 0.2
    for _ in range(3):
        a.record(ok=False)
    assert a.breaker.state is State.OPEN
    assert {router.pick("g", set()).id for _ in range(10)} == {"b"}
    time.sleep(0.25)
    assert a.breaker.allows() and a.breaker.state is State.HALF_OPEN
    a.breaker.begin()
    assert not a.breaker.allows()  # one trial at a time
    a.record(ok=True)
    assert a.breaker.state is State.CLOSED


def test_breaker_half_open_failure_reopens() -> None:
    breaker = Breaker(allowed_fails=2, cooldown=0)
    breaker.failed()
    assert breaker.state is State.CLOSED  # one failure is allowed
    breaker.failed()
    assert breaker.state is State.OPEN
    assert breaker.allows()  # cooldown 0: half-open at once
    breaker.begin()
    breaker.failed()
    assert breaker.state is State.OPEN


def test_active_health_check_opens_and_recovers(make_gateway) -> None:
    ollama = Backend("ollama")
    try:
        gw = make_gateway(routing_config(None, ollama, health_check_interval=0.2))
        ollama.kill()

        def states() -> dict[str, str]:
            health = httpx.get(gw.url + "/health", headers=AUTH).json()
            return {
                d["id"]: d["state"]
                for d in health["healthy_endpoints"] + health["unhealthy_endpoints"]
            }

        for _ in range(100):
            if states()["ollama-embed"] == "open":
                break
            time.sleep(0.05)
        assert states()["ollama-embed"] == "open"
        assert "deployment health changed" in gw.log
    finally:
        ollama.stop()


def test_idle_gap_between_stream_chunks_times_out(make_gateway) -> None:
    primary = Backend("openai")
    try:
        gw = make_gateway(routing_config(primary, None, stream_idle_timeout=0.5))
        primary.control(chunk_delay=6.0)  # far past the 0.5 s gap, so no load blurs which fired
        client = openai.OpenAI(base_url=gw.url + "/v1", api_key=MASTER_KEY, max_retries=0)
        started = time.monotonic()
        with pytest.raises((openai.APIError, httpx.RemoteProtocolError)) as err:
            for _ in client.chat.completions.create(
                model="llama-gpu", messages=[{"role": "user", "content": "x"}], stream=True
            ):
                pass
        assert time.monotonic() - started < 4.0  # the idle gap, not the backend's next chunk
        assert "idle timeout" in str(err.value) or "broke" in gw.log
    finally:
        primary.stop()


def test_client_disconnect_cancels_the_upstream_stream(make_gateway) -> None:
    primary = Backend("openai")
    try:
        gw = make_gateway(routing_config(primary, None))
        primary.control(chunk_delay=0.3)
        body = {
            "model": "llama-gpu",
            "messages": [{"role": "user", "content": "x"}],
            "stream": True,
        }
        with httpx.stream(
            "POST", gw.url + "/v1/chat/completions", json=body, headers=AUTH
        ) as response:
            next(response.iter_raw())  # the stream has started; now hang up
        for _ in range(60):
            if primary.stats().get("disconnects"):
                break
            time.sleep(0.05)
        assert primary.stats().get("disconnects") == 1  # the backend saw us go
        for _ in range(40):
            if '"status":499' in gw.log:
                break
            time.sleep(0.05)
        assert '"status":499' in gw.log
    finally:
        primary.stop()


def test_half_open_trial_ended_without_verdict_frees_the_breaker(tmp_path) -> None:
    import asyncio

    from synapse.errors import BadRequest

    router = two_deployment_router(tmp_path)
    a = router.states["a"]
    router.states.pop("b")
    router._by_group["g"] = (a,)
    a.breaker.cooldown = 0
    a.breaker.trip()

    async def refuse(state):  # e.g. the request is invalid for this backend
        raise BadRequest("images not supported")

    with pytest.raises(BadRequest):
        asyncio.run(router.run("g", refuse, Trace("t")))
    assert a.breaker.allows()  # the trial slot was given back
