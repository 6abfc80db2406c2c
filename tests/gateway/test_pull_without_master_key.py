"""A pull through a gateway without a master key (the local stack) says how to get models
instead of asking for a key that does not exist."""

from __future__ import annotations

import ollama
import pytest

from tests.conftest import Backend, routing_config


def test_pull_on_a_keyless_gateway_says_how_to_get_models(
    make_gateway, ollama_backend: Backend
) -> None:
    config = routing_config(None, ollama_backend)
    del config["general_settings"]["master_key"]
    gw = make_gateway(config)
    client = ollama.Client(host=gw.ollama_url)
    with pytest.raises(ollama.ResponseError) as caught:
        client.pull("llama3.1:8b")
    assert caught.value.status_code == 403
    message = caught.value.error
    assert "no master key" in message and "ollama pull" in message
    assert "send the master key" not in message


def test_pull_on_a_keyed_gateway_still_asks_for_the_master_key(
    make_gateway, ollama_backend: Backend
) -> None:
    gw = make_gateway(routing_config(None, ollama_backend))
    with pytest.raises(ollama.ResponseError) as caught:
        ollama.Client(host=gw.ollama_url).pull("llama3.1:8b")
    assert caught.value.status_code == 403
    assert "send the master key" in caught.value.error
