"""Issue 25 item 2: CORS on the keyed port for `synapse_settings.cors_origins`.

What a browser sends (Open WebUI's direct connections: `fetch` with `Authorization: Bearer`
and `Content-Type: application/json`, to `{url}/models` and `{url}/chat/completions`): first
a preflight without credentials, then the keyed request. Raw HTTP here, header by header.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from synapse.config import ConfigError, load_config
from tests.conftest import MASTER_KEY, Backend, Gateway, routing_config

ALLOWED = "https://chat.example.com"
KEYED = {"Authorization": f"Bearer {MASTER_KEY}"}
CHAT = {"model": "llama-cpu", "messages": [{"role": "user", "content": "hi"}]}


def preflight(url: str, origin: str, method: str = "POST") -> httpx.Response:
    return httpx.options(
        url,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": "authorization,content-type",
        },
    )


@pytest.fixture(scope="module")
def gw(
    openai_backend: Backend, ollama_backend: Backend, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    config = routing_config(
        openai_backend, ollama_backend, cors_origins=[ALLOWED, "https://*.corp.example"]
    )
    gateway = Gateway(config, tmp_path_factory.mktemp("cors"))
    yield gateway
    gateway.stop()


@pytest.mark.parametrize(
    ("path", "method", "origin"),
    [
        ("/v1/chat/completions", "POST", ALLOWED),
        ("/v1/models", "GET", ALLOWED),
        ("/api/chat", "POST", "https://team.corp.example"),  # a pattern
    ],
)
def test_preflights_of_allowed_origins_need_no_key(
    gw: Gateway, path: str, method: str, origin: str
) -> None:
    answer = preflight(gw.url + path, origin, method)
    assert answer.status_code == 204
    assert answer.headers["Access-Control-Allow-Origin"] == origin
    assert answer.headers["Vary"] == "Origin"
    assert method in answer.headers["Access-Control-Allow-Methods"]
    allowed_headers = answer.headers["Access-Control-Allow-Headers"].lower()
    assert "authorization" in allowed_headers and "content-type" in allowed_headers


def test_requests_stay_keyed_and_their_errors_are_readable(gw: Gateway) -> None:
    origin = {"Origin": ALLOWED}
    refused = httpx.post(gw.url + "/v1/chat/completions", json=CHAT, headers=origin)
    assert refused.status_code == 401  # the key is still required ...
    assert refused.headers["Access-Control-Allow-Origin"] == ALLOWED  # ... and the page sees why
    assert refused.json()["error"]["type"] == "authentication_error"
    answer = httpx.post(gw.url + "/v1/chat/completions", json=CHAT, headers={**origin, **KEYED})
    assert answer.status_code == 200 and answer.headers["Access-Control-Allow-Origin"] == ALLOWED
    with httpx.stream(
        "POST",
        gw.url + "/v1/chat/completions",
        json={**CHAT, "stream": True},
        headers={**origin, **KEYED},
    ) as stream:
        assert stream.status_code == 200
        assert stream.headers["Access-Control-Allow-Origin"] == ALLOWED
        assert b"[DONE]" in stream.read()


def test_other_origins_get_no_cors(gw: Gateway) -> None:
    refused = preflight(gw.url + "/v1/chat/completions", "https://evil.example")
    assert refused.status_code == 403
    assert "synapse_settings.cors_origins" in refused.json()["error"]["message"]
    assert "Access-Control-Allow-Origin" not in refused.headers
    keyed = httpx.get(gw.url + "/v1/models", headers={"Origin": "https://evil.example", **KEYED})
    assert keyed.status_code == 200  # a server-side caller with a key: as ever
    assert "Access-Control-Allow-Origin" not in keyed.headers


def test_the_ollama_port_keeps_ollamas_rules(gw: Gateway) -> None:
    refused = httpx.get(gw.ollama_url + "/api/tags", headers={"Origin": ALLOWED})
    assert refused.status_code == 403 and "ollama_origins" in refused.json()["error"]


def test_no_cors_on_the_keyed_port_by_default(gateway: Gateway) -> None:
    answer = preflight(gateway.url + "/v1/chat/completions", ALLOWED)
    assert answer.status_code == 401 and "Access-Control-Allow-Origin" not in answer.headers


@pytest.mark.parametrize(
    "origin", ["chat.example.com", "https://chat.example.com/", "https://a*b*.example", ""]
)
def test_origins_are_checked_at_load(tmp_path: Path, origin: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        "model_list: [{model_name: m, litellm_params: {model: ollama/m}}]\n"
        f"synapse_settings: {{cors_origins: ['{ALLOWED}', '{origin}']}}\n"
    )
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert "synapse_settings.cors_origins: entry 1" in str(err.value)
    assert "expected an origin such as https://chat.example.com" in str(err.value)
