"""The plan's two-step migration against the fake API server (issue 16.1, 16.2): phase 1 onto the
shared Ollama, decommission of the consumer's own Ollama, phase 3 onto the gateway, rollbacks
that return to the last working endpoint, and the NetworkPolicy gate."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from synapse.ops.migration import ANNOTATION, PHASE_TARGETS
from tests.ops.conftest import Stack, checks_by_name, cli_json

OWN = "http://ollama:11434"
SHARED = PHASE_TARGETS[1]
GATEWAY = PHASE_TARGETS[3]
REPO = Path(__file__).resolve().parents[2]


def urls(stack: Stack) -> set[str]:
    data = stack.cluster.obj("configmaps", "jarvis-cortex", "ai-memory-config")["data"]
    return {data["OLLAMA_BASE_URL"], data["OLLAMA_URL"]}


def history(stack: Stack) -> list[dict]:
    cm = stack.cluster.obj("configmaps", "jarvis-cortex", "ai-memory-config")
    raw = (cm["metadata"].get("annotations") or {}).get(ANNOTATION)
    return json.loads(raw)["history"] if raw else []


def mc(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict]:
    return cli_json(capsys, "migrate-consumer", *argv)


def no_gateway_yet(stack: Stack) -> None:
    """Phase 1: the gateway is not deployed."""
    stack.cluster.objects["services"].pop(("llm-infra", "synapse"))
    for port in (8000, 11434):
        stack.cluster.services.pop(("llm-infra", "synapse", port))


def test_phase1_targets_the_shared_ollama_while_no_gateway_exists(stack, capsys):
    no_gateway_yet(stack)
    code, doc = mc(capsys, "plan", "--phase", "1")
    assert code == 0, doc
    assert doc["target"] == SHARED
    assert checks_by_name(doc)["target"]["value"] == "2 models"
    code, doc = mc(capsys, "apply", "--phase", "1", "--yes")
    assert code == 0, doc
    assert urls(stack) == {SHARED}
    assert [(h["phase"], h["target"]) for h in history(stack)] == [(1, SHARED)]
    code, doc = mc(capsys, "verify", "--phase", "1")
    assert code == 0, doc
    assert doc["new_url"] == SHARED and doc["old_url"] == OWN


def test_without_a_step_nothing_is_guessed(stack, capsys):
    code, doc = mc(capsys, "apply", "--yes")
    assert code == 1 and "--phase 1" in doc["error"] and "--phase 3" in doc["error"]
    assert urls(stack) == {OWN}


def test_phase3_after_decommission_then_rollbacks(stack, capsys):
    assert mc(capsys, "apply", "--phase", "1", "--yes")[0] == 0
    code, doc = mc(capsys, "decommission", "--yes")
    assert code == 0, doc
    # The consumer's own Ollama answers nothing now; phase 3 starts from the shared one.
    code, doc = mc(capsys, "apply", "--phase", "3", "--yes")
    assert code == 0, doc
    assert checks_by_name(doc)  # ran its checks
    assert urls(stack) == {GATEWAY}
    assert [h["phase"] for h in history(stack)] == [1, 3]
    code, doc = mc(capsys, "verify", "--phase", "3")
    assert code == 0, doc
    assert doc["old_url"] == SHARED
    # Rollback undoes phase 3 only: back on the shared Ollama, which works.
    code, doc = mc(capsys, "rollback", "--yes")
    assert code == 0, doc
    assert urls(stack) == {SHARED}
    assert [h["phase"] for h in history(stack)] == [1]
    assert checks_by_name(doc)["rollout indexer"]["status"] == "pass"
    # Rolling back phase 1 would point the consumer at its decommissioned Ollama: refused.
    code, doc = mc(capsys, "rollback", "--yes")
    assert code == 1 and OWN in doc["error"] and "decommissioned" in doc["error"]
    assert urls(stack) == {SHARED}
    assert [h["phase"] for h in history(stack)] == [1]


def test_phase3_plan_compares_with_the_endpoint_in_use(stack, capsys):
    assert mc(capsys, "apply", "--phase", "1", "--yes")[0] == 0
    assert mc(capsys, "decommission", "--yes")[0] == 0
    code, doc = mc(capsys, "plan", "--phase", "3")
    assert code == 0, doc
    assert doc["consumer_ollama"] == SHARED
    assert checks_by_name(doc)["consumer Ollama"]["status"] == "pass"


def test_restarts_what_reads_the_configmap_whatever_its_name(stack, capsys):
    reads = {
        "env": [
            {
                "name": "OLLAMA_BASE_URL",
                "valueFrom": {
                    "configMapKeyRef": {"name": "ai-memory-config", "key": "OLLAMA_BASE_URL"}
                },
            }
        ]
    }
    stack.cluster.add_deployment("jarvis-cortex", "worker", 1, container_extra=reads)
    code, doc = mc(capsys, "plan", "--phase", "3")
    assert code == 0, doc
    found = {d["name"] for d in doc["deployments"]}
    assert found == {"indexer", "extractor", "query", "graph-builder", "worker"}
    assert mc(capsys, "apply", "--phase", "3", "--yes")[0] == 0
    patched = {p.rsplit("/", 1)[1] for m, p, _ in stack.cluster.requests if m == "PATCH"}
    assert "worker" in patched and not patched & {"neo4j", "ollama"}


def test_a_configmap_nobody_reads_is_a_failed_precheck(stack, capsys):
    for name in ("indexer", "extractor", "query", "graph-builder"):
        stack.cluster.objects["deployments"].pop(("jarvis-cortex", name))
    code, doc = mc(capsys, "plan", "--phase", "3")
    assert code == 1
    assert checks_by_name(doc)["deployments"]["value"] == "none"


# -- the NetworkPolicy gate (make deploy-networkpolicies) -----------------------------------------


def _make_policies(tmp_path: Path) -> tuple[int, str, list[str]]:
    """Run the real make target with a kubectl that only records what it was asked to do."""
    log = tmp_path / "kubectl.log"
    kubectl = tmp_path / "kubectl"
    kubectl.write_text(f'#!/bin/sh\necho "$*" >> {log}\n')
    kubectl.chmod(0o755)
    done = subprocess.run(
        ["make", "-s", "deploy-networkpolicies", f"KUBECTL={kubectl}", "OPS_ARGS=--json"],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        timeout=300,
        check=False,
    )
    calls = log.read_text().splitlines() if log.exists() else []
    return done.returncode, done.stdout + done.stderr, calls


@pytest.mark.parametrize("step", [None, "1"])
def test_policies_refused_while_a_consumer_is_not_on_the_gateway(stack, capsys, tmp_path, step):
    if step:
        assert mc(capsys, "apply", "--phase", step, "--yes")[0] == 0
    code, out, calls = _make_policies(tmp_path)
    assert code != 0 and "refusing to apply NetworkPolicies" in out
    assert calls == []


def test_policies_applied_once_the_consumer_uses_the_gateway(stack, capsys, tmp_path):
    assert mc(capsys, "apply", "--phase", "3", "--yes")[0] == 0
    code, out, calls = _make_policies(tmp_path)
    assert code == 0, out
    assert calls[0] == "apply -k manifests/infra/networkpolicies"
