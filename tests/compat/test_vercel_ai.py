"""The Vercel AI SDK (`ai` + `@ai-sdk/openai`, Node) against two Synapse replicas (issue 25 item 1).

The SDK sends earlier assistant output back as `item_reference` unless `store: false`; the
script (tests/compat/node/vercel_responses.mjs) alternates its requests between two gateway
processes, so every reference is resolved by the replica that did not issue it.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import MASTER_KEY, Backend, Gateway, routing_config

NODE_DIR = Path(__file__).parent / "node"
NODE = NODE_DIR / "node_modules" / ".bin" / "node"  # node 22 from the npm registry's `node`


@pytest.fixture(scope="module")
def replicas(
    openai_backend: Backend, ollama_backend: Backend, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[Gateway]]:
    config = routing_config(openai_backend, ollama_backend)
    gateways = [Gateway(config, tmp_path_factory.mktemp("replica")) for _ in range(2)]
    yield gateways
    for gw in gateways:
        gw.stop()


def run_script(replicas: list[Gateway], phase: str) -> dict:
    assert NODE.exists(), "run `make compat-tools` (installs tests/compat/node)"
    env = {
        **os.environ,
        "SYNAPSE_URLS": ",".join(gw.url for gw in replicas),
        "SYNAPSE_KEY": MASTER_KEY,
        "MODEL": "llama-cpu",  # an Ollama deployment: Responses translated to chat
        "PHASE": phase,
    }
    done = subprocess.run(
        [str(NODE), "vercel_responses.mjs"],
        cwd=NODE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def _references(request: dict) -> list[str]:
    return [item["id"] for item in request["input"] if item.get("type") == "item_reference"]


def test_two_turns_and_a_tool_loop_across_replicas(
    replicas: list[Gateway], ollama_backend: Backend
) -> None:
    out = run_script(replicas, "conversation")
    texts, sent = out["texts"], out["sent"]
    assert texts["first"].endswith("You said: remember 42")
    assert texts["second"].endswith("You said: what number?")
    assert texts["toolLoop"].endswith("You said: sunny in stub") and out["toolLoopSteps"] == 2
    assert [s["path"] for s in sent] == ["/v1/responses"] * 4  # openai(id): the Responses model
    assert [s["replica"] for s in sent] == [0, 1, 0, 1]
    # Each answer was referenced on the replica that did not issue it, and resolved there:
    assert len(_references(sent[1])) == 1 and len(_references(sent[3])) == 2
    last = ollama_backend.stats()["last_chat_body"]["messages"]  # the tool loop's 2nd step
    assert [m["role"] for m in last] == [
        "user",
        "assistant",
        "user",
        "assistant",
        "user",
        "assistant",
        "tool",
    ]
    assert last[1]["content"] == texts["first"] and last[3]["content"] == texts["second"]
    assert last[5]["tool_calls"][0]["id"] == last[6]["tool_call_id"] == "call_stub0"


def test_streamed_answers_need_store_false(replicas: list[Gateway]) -> None:
    """A streamed item's id is announced before its text exists, so it carries nothing: the
    SDK's reference to it is a 400 that names `store: false`, and with it all works."""
    out = run_script(replicas, "stream")
    refused = out["errors"]["streamedReference"]
    assert refused["status"] == 400 and "'store' to false" in refused["message"]
    assert out["texts"]["streamedStoreFalse"] == "Hello from the stub backend."
    assert _references(out["sent"][1]) and not _references(out["sent"][2])
