"""migrate-consumer against the fake API server: plan, apply, verify, rollback, decommission."""

from __future__ import annotations

import json

import pytest

from synapse.ops.migration import ANNOTATION, REPLICAS_ANNOTATION
from tests.ops.conftest import Stack, checks_by_name, cli, cli_json

TARGET = "http://synapse.llm-infra.svc.cluster.local:11434"
CONSUMER_DEPLOYMENTS = ("indexer", "extractor", "query", "graph-builder")


def cm(stack: Stack) -> dict:
    return stack.cluster.obj("configmaps", "jarvis-cortex", "ai-memory-config")


def dep(stack: Stack, name: str, ns: str = "jarvis-cortex") -> dict:
    return stack.cluster.obj("deployments", ns, name)


def test_plan_shows_changes_and_prechecks_without_touching_anything(stack, capsys):
    rv = cm(stack)["metadata"]["resourceVersion"]
    code, doc = cli_json(capsys, "migrate-consumer", "--phase", "3")
    assert code == 0, doc
    assert doc["configmap"] == "ai-memory-config"  # discovered: the one holding the keys
    assert {(c["key"], c["old"], c["new"]) for c in doc["changes"]} == {
        ("OLLAMA_BASE_URL", "http://ollama:11434", TARGET),
        ("OLLAMA_URL", "http://ollama:11434", TARGET),
    }
    assert [d["name"] for d in doc["deployments"] if d["found"]] == list(CONSUMER_DEPLOYMENTS)
    # mxbai-embed-large:latest on the consumer == mxbai-embed-large on Synapse.
    assert {m["name"]: m["status"] for m in doc["models"]} == {
        "mxbai-embed-large:latest": "pass",
        "llama3.1:8b": "pass",
    }
    assert cm(stack)["metadata"]["resourceVersion"] == rv
    assert not any(method == "PATCH" for method, _, _ in stack.cluster.requests)


def test_plan_human_output_names_every_change(stack, capsys):
    code, out = cli(capsys, "migrate-consumer", "plan", "--phase", "3")
    assert code == 0
    for text in ("ai-memory-config", "OLLAMA_BASE_URL", "OLLAMA_URL", TARGET, "graph-builder"):
        assert text in out


def test_model_not_served_fails_plan_and_blocks_apply(stack, capsys):
    stack.consumer_ollama.models.append("nomic-embed-text:latest")
    code, doc = cli_json(capsys, "migrate-consumer", "plan", "--phase", "3")
    assert code == 1
    assert checks_by_name(doc)["model nomic-embed-text:latest"]["status"] == "fail"
    code, doc = cli_json(capsys, "migrate-consumer", "apply", "--phase", "3", "--yes")
    assert code == 1 and "pre-checks failed" in doc["error"]
    assert cm(stack)["data"]["OLLAMA_URL"] == "http://ollama:11434"


def test_alias_served_only_through_show_counts_as_served(stack, capsys):
    stack.state.unlisted.add("llama3.1:8b")  # an alias: not in /api/tags, /api/show knows it
    code, doc = cli_json(capsys, "migrate-consumer", "plan", "--phase", "3")
    assert code == 0, doc
    shows = [p for m, p, _ in stack.cluster.requests if m == "POST" and p.endswith("/api/show")]
    assert len(shows) == 1
    stack.state.served.remove("llama3.1:8b")  # now unknown to the gateway too
    code, doc = cli_json(capsys, "migrate-consumer", "plan", "--phase", "3")
    assert code == 1 and checks_by_name(doc)["model llama3.1:8b"]["status"] == "fail"


def test_model_missing_in_synapse_ollama_is_a_warning(stack, capsys):
    stack.synapse_ollama.models.remove("llama3.1:8b")
    code, doc = cli_json(capsys, "migrate-consumer", "plan", "--phase", "3")
    assert code == 0
    row = checks_by_name(doc)["model llama3.1:8b"]
    assert row["status"] == "warn" and "pull-models" in row["detail"]


def test_apply_records_patches_restarts_and_waits(stack, capsys):
    gens = {n: dep(stack, n)["metadata"]["generation"] for n in CONSUMER_DEPLOYMENTS}
    code, doc = cli_json(
        capsys, "migrate-consumer", "apply", "--phase", "3", "--yes", "--timeout", "30"
    )
    assert code == 0, doc
    obj = cm(stack)
    assert obj["data"]["OLLAMA_BASE_URL"] == TARGET and obj["data"]["OLLAMA_URL"] == TARGET
    assert obj["data"]["NEO4J_URI"] == "bolt://neo4j:7687"
    [record] = json.loads(obj["metadata"]["annotations"][ANNOTATION])["history"]
    assert record["phase"] == 3 and record["target"] == TARGET
    assert record["values"] == {
        "OLLAMA_BASE_URL": "http://ollama:11434",
        "OLLAMA_URL": "http://ollama:11434",
    }
    for name in CONSUMER_DEPLOYMENTS:
        d = dep(stack, name)
        stamp = d["spec"]["template"]["metadata"]["annotations"][
            "kubectl.kubernetes.io/restartedAt"
        ]
        assert stamp.endswith("Z")
        assert d["metadata"]["generation"] == gens[name] + 1
        assert d["status"]["updatedReplicas"] == d["spec"]["replicas"]
        assert checks_by_name(doc)[f"rollout {name}"]["status"] == "pass"
    # Restarts use a strategic merge patch, the ConfigMap a merge patch pinned to its version.
    kinds = {(p.split("/")[-2], ct) for m, p, ct in stack.cluster.requests if m == "PATCH"}
    assert ("configmaps", "application/merge-patch+json") in kinds
    assert ("deployments", "application/strategic-merge-patch+json") in kinds
    patched = {p.split("/")[-1] for m, p, _ in stack.cluster.requests if m == "PATCH"}
    assert not patched & {"ollama", "neo4j"}  # they do not read the ConfigMap


def test_apply_twice_keeps_the_first_record(stack, capsys):
    assert cli_json(capsys, "migrate-consumer", "apply", "--phase", "3", "--yes")[0] == 0
    first = cm(stack)["metadata"]["annotations"][ANNOTATION]
    patches = sum(1 for m, *_ in stack.cluster.requests if m == "PATCH")
    code, doc = cli_json(capsys, "migrate-consumer", "apply", "--phase", "3", "--yes")
    assert code == 0 and doc["changed"] is False and doc["already_migrated"] is True
    assert cm(stack)["metadata"]["annotations"][ANNOTATION] == first
    assert sum(1 for m, *_ in stack.cluster.requests if m == "PATCH") == patches


def test_apply_retries_on_409_conflict(stack, capsys):
    # The plan reads the ConfigMap once, apply's update reads it again: conflict after that.
    stack.cluster.conflict_after_get[("configmaps", "jarvis-cortex", "ai-memory-config")] = 2
    code, doc = cli_json(capsys, "migrate-consumer", "apply", "--phase", "3", "--yes")
    assert code == 0, doc
    cm_patches = [p for m, p, _ in stack.cluster.requests if m == "PATCH" and "/configmaps/" in p]
    assert len(cm_patches) == 2  # first one hit the stale resourceVersion
    assert cm(stack)["data"]["OLLAMA_URL"] == TARGET


def test_apply_needs_confirmation(stack, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin.isatty", lambda: False)
    code, out = cli(capsys, "migrate-consumer", "apply", "--phase", "3")
    assert code == 1 and "--yes" in out
    assert cm(stack)["data"]["OLLAMA_URL"] == "http://ollama:11434"


def test_apply_reports_a_stuck_rollout(stack, capsys):
    stack.cluster.stuck.add(("jarvis-cortex", "extractor"))
    code, doc = cli_json(
        capsys, "migrate-consumer", "apply", "--phase", "3", "--yes", "--timeout", "5"
    )
    assert code == 1
    row = checks_by_name(doc)["rollout extractor"]
    assert row["status"] == "fail" and "progress deadline" in row["detail"]


def test_missing_deployment_is_a_failed_precheck(stack, capsys):
    code, doc = cli_json(
        capsys,
        "migrate-consumer",
        "--phase",
        "3",
        "--deployment",
        "indexer",
        "--deployment",
        "worker",
    )
    assert code == 1
    assert checks_by_name(doc)["deployment worker"]["value"] == "missing"


def test_no_configmap_holds_the_keys(stack, capsys):
    code, doc = cli_json(capsys, "migrate-consumer", "--phase", "3", "--key", "NOPE_URL")
    assert code == 1 and "--configmap" in doc["error"]


def test_unknown_namespace(stack, capsys):
    code, doc = cli_json(capsys, "migrate-consumer", "--phase", "3", "-n", "nowhere")
    assert code == 1 and "nowhere" in doc["error"]


def test_verify_compares_old_and_new_vectors_from_inside_the_namespace(stack, capsys):
    assert cli_json(capsys, "migrate-consumer", "apply", "--phase", "3", "--yes")[0] == 0
    code, doc = cli_json(capsys, "migrate-consumer", "verify", "--phase", "3")
    assert code == 0, doc
    checks = checks_by_name(doc)
    assert checks["new endpoint"]["value"].startswith("dim 1024")
    assert checks["dimension"]["value"] == "1024 vs 1024"
    assert checks["same model"]["status"] == "pass"
    # The probe pods ran in jarvis-cortex and are gone.
    created = [p for m, p, _ in stack.cluster.requests if m == "POST" and p.endswith("/pods")]
    assert created == ["/api/v1/namespaces/jarvis-cortex/pods"] * 2
    assert not stack.cluster._bucket("pods")


def test_verify_fails_on_a_dimension_mismatch(stack, capsys):
    stack.consumer_ollama.dim = 768
    assert cli_json(capsys, "migrate-consumer", "apply", "--phase", "3", "--yes")[0] == 0
    code, doc = cli_json(capsys, "migrate-consumer", "verify", "--phase", "3")
    assert code == 1
    assert checks_by_name(doc)["dimension"]["value"] == "1024 vs 768"


def test_verify_fails_when_the_new_endpoint_is_blocked(stack, capsys):
    stack.cluster.blocked.add(("jarvis-cortex", "synapse.llm-infra.svc.cluster.local:11434"))
    assert cli_json(capsys, "migrate-consumer", "apply", "--phase", "3", "--yes")[0] == 0
    code, doc = cli_json(capsys, "migrate-consumer", "verify", "--phase", "3")
    assert code == 1
    assert "timed out" in checks_by_name(doc)["new endpoint"]["value"]


def test_rollback_restores_the_recorded_values(stack, capsys):
    assert cli_json(capsys, "migrate-consumer", "apply", "--phase", "3", "--yes")[0] == 0
    code, doc = cli_json(capsys, "migrate-consumer", "rollback", "--yes")
    assert code == 0, doc
    obj = cm(stack)
    assert obj["data"]["OLLAMA_URL"] == "http://ollama:11434"
    assert obj["data"]["OLLAMA_BASE_URL"] == "http://ollama:11434"
    assert ANNOTATION not in (obj["metadata"].get("annotations") or {})
    assert checks_by_name(doc)["rollout indexer"]["status"] == "pass"


def test_rollback_without_a_record_fails(stack, capsys):
    code, doc = cli_json(capsys, "migrate-consumer", "rollback", "--yes")
    assert code == 1 and ANNOTATION in doc["error"]


def test_decommission_refuses_before_migration(stack, capsys):
    code, doc = cli_json(capsys, "migrate-consumer", "decommission", "--yes")
    assert code == 1 and "apply and verify first" in doc["error"]
    assert dep(stack, "ollama")["spec"]["replicas"] == 1


def test_decommission_scales_to_zero_and_deletes_only_when_asked(stack, capsys):
    assert cli_json(capsys, "migrate-consumer", "apply", "--phase", "3", "--yes")[0] == 0
    code, doc = cli_json(capsys, "migrate-consumer", "decommission", "--yes")
    assert code == 0, doc
    d = dep(stack, "ollama")
    assert d["spec"]["replicas"] == 0
    assert d["metadata"]["annotations"][REPLICAS_ANNOTATION] == "1"
    assert stack.cluster.obj("services", "jarvis-cortex", "ollama") is not None
    code, doc = cli_json(capsys, "migrate-consumer", "decommission", "--yes", "--delete")
    assert code == 0, doc
    assert dep(stack, "ollama") is None
    assert stack.cluster.obj("services", "jarvis-cortex", "ollama") is None


@pytest.mark.parametrize("action", ["plan", "apply"])
def test_unreachable_api_server(action, capsys, monkeypatch, tmp_path):
    from tests.ops.fakekube import write_kubeconfig

    monkeypatch.setenv("KUBECONFIG", write_kubeconfig(tmp_path / "kc", "http://127.0.0.1:9"))
    code, doc = cli_json(capsys, "migrate-consumer", action, "--phase", "3", "--yes")
    assert code == 3 and "Kubernetes API" in doc["error"]


def test_context_flag_picks_the_cluster(stack, capsys, tmp_path, monkeypatch):
    import yaml

    doc = {
        "clusters": [
            {"name": "dead", "cluster": {"server": "http://127.0.0.1:9"}},
            {"name": "forge", "cluster": {"server": stack.cluster.url}},
        ],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [
            {"name": "dead", "context": {"cluster": "dead", "user": "u"}},
            {"name": "forge", "context": {"cluster": "forge", "user": "u"}},
        ],
        "current-context": "dead",
    }
    path = tmp_path / "two-contexts"
    path.write_text(yaml.safe_dump(doc))
    assert cli_json(capsys, "migrate-consumer", "--phase", "3", "--kubeconfig", str(path))[0] == 3
    code, doc = cli_json(
        capsys, "migrate-consumer", "--phase", "3", "--kubeconfig", str(path), "--context", "forge"
    )
    assert code == 0, doc
