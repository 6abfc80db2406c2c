"""A path the gateway does not serve (vLLM's own `/v1/responses`, for one) is a plain 404: the
error must not claim that a model is missing, or a client chases the wrong problem."""

from __future__ import annotations

import httpx

from tests.conftest import MASTER_KEY, Gateway


def test_unknown_route_is_a_404_that_names_the_path_not_a_model(gateway: Gateway) -> None:
    response = httpx.post(
        gateway.url + "/v1/responses",
        headers={"Authorization": f"Bearer {MASTER_KEY}"},
        json={"model": "gpt-4o-mini", "input": "hi"},
        timeout=10,
    )
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["message"] == "POST /v1/responses: Not Found"
    assert error["type"] == "invalid_request_error"
    assert error["code"] is None
