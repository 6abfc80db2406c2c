"""Hostile headers (issue 15: 2, 7, 10, 12): request ids, keys with bad bytes, no banner,
log lines bounded and never lost. Raw sockets: clients refuse to send these bytes."""

from __future__ import annotations

import json
import uuid

import httpx

from tests.conftest import MASTER_KEY, Gateway
from tests.gateway import raw

AUTH = ("Authorization", f"Bearer {MASTER_KEY}")
JSON = ("Content-Type", "application/json")
EMBED = b'{"model": "mxbai-embed-large", "input": "x"}'


def served_line(gateway: Gateway, before: int) -> dict:
    lines = raw.wait_for_lines(gateway, before + 1)
    assert len(lines) == before + 1, lines[before:]
    return lines[-1]


def test_non_utf8_request_id_is_replaced_and_the_request_served(gateway: Gateway) -> None:
    for port, headers in ((gateway.port, [AUTH, JSON]), (gateway.ollama_port, [JSON])):
        before = len(raw.request_lines(gateway.log))
        path = "/v1/embeddings" if port == gateway.port else "/api/embed"
        answer = raw.request(
            port, "POST", path, [*headers, ("X-Request-ID", b"abc\xff\xfe")], EMBED
        )
        assert answer.status == 200
        echoed = answer.headers["X-Request-ID"]
        assert uuid.UUID(echoed).hex == echoed
        line = served_line(gateway, before)
        assert line["request_id"] == echoed and line["status"] == 200


def test_request_id_with_spaces_or_control_bytes_is_replaced(gateway: Gateway) -> None:
    for bad in (b"two words", b"tab\there", b"x" * 129):
        answer = raw.request(gateway.port, "GET", "/v1/models", [AUTH, ("X-Request-ID", bad)])
        assert answer.status == 200
        assert answer.headers["X-Request-ID"] != bad.decode()


def test_a_good_request_id_is_kept(gateway: Gateway) -> None:
    answer = raw.request(gateway.port, "GET", "/v1/models", [AUTH, ("X-Request-ID", "trace-42.a")])
    assert answer.headers["X-Request-ID"] == "trace-42.a"


def test_failed_auth_with_a_bad_request_id_is_logged(gateway: Gateway) -> None:
    before = len(raw.request_lines(gateway.log))
    answer = raw.request(gateway.port, "GET", "/v1/models", [("X-Request-ID", b"\xff" * 10)])
    assert answer.status == 401
    assert served_line(gateway, before)["status"] == 401


def test_undecodable_bearer_token_is_a_400(gateway: Gateway) -> None:
    before = len(raw.request_lines(gateway.log))
    for header in (("Authorization", b"Bearer \xff\xfe"), ("X-Api-Key", b"\xc3\x28")):
        answer = raw.request(gateway.port, "GET", "/v1/models", [header])
        assert answer.status == 400
        assert "printable ASCII" in answer.json()["error"]["message"]  # type: ignore[index]
    lines = raw.wait_for_lines(gateway, before + 2)
    assert [line["status"] for line in lines[before:]] == [400, 400]


def test_key_with_trailing_nul_or_del_is_never_printed(gateway: Gateway) -> None:
    before = len(raw.request_lines(gateway.log))
    for tail in (b"\x00", b"\x7f"):
        header = ("Authorization", f"Bearer {MASTER_KEY}".encode() + tail)
        answer = raw.request(gateway.port, "GET", "/v1/models", [header])
        assert answer.status == 400
        assert MASTER_KEY not in answer.body.decode("utf-8", "replace")
        assert answer.json()["error"]["type"] == "invalid_request_error"  # type: ignore[index]
        assert "aiohttp" not in answer.headers.get("Server", "")
    lines = raw.wait_for_lines(gateway, before + 2)
    assert [line["status"] for line in lines[before:]] == [400, 400]
    assert MASTER_KEY not in gateway.log


def test_no_server_version_banner(gateway: Gateway) -> None:
    for url in (gateway.url + "/v1/models", gateway.ollama_url + "/api/tags", gateway.metrics_url):
        response = httpx.get(url, headers={"Authorization": f"Bearer {MASTER_KEY}"})
        assert response.headers["Server"] == "synapse", url
    assert httpx.get(gateway.url + "/nowhere").headers["Server"] == "synapse"


def test_a_one_mib_model_name_is_cut_in_the_log(gateway: Gateway) -> None:
    before = len(raw.request_lines(gateway.log))
    body = json.dumps({"model": "m" * (1 << 20), "input": "x"}).encode()
    answer = raw.request(gateway.port, "POST", "/v1/embeddings", [AUTH, JSON], body)
    assert answer.status == 404
    line = served_line(gateway, before)
    assert 1000 < len(line["model"]) < 1100 and line["model"].endswith("(1048576 chars)")
    assert max(len(x) for x in gateway.log.splitlines()) < 16 * 1024
