"""Offline decision logic: names, config reading, migration records, rollout judgement,
kubeconfig merging, service URLs, curl output."""

from __future__ import annotations

import json

import pytest
from lightkube.models.apps_v1 import DeploymentCondition, DeploymentSpec, DeploymentStatus
from lightkube.models.core_v1 import PodTemplateSpec
from lightkube.models.meta_v1 import LabelSelector, ObjectMeta
from lightkube.resources.apps_v1 import Deployment

from synapse.ops import migration as m
from synapse.ops.endpoints import ServiceRef, service_ref
from synapse.ops.incluster import MARK, curl_args, parse_output
from synapse.ops.kube import load_kubeconfig, merge_kubeconfigs, rollout_state
from synapse.ops.models import missing, ollama_name, read_routing
from synapse.ops.output import OpsError

TARGET = m.DEFAULT_TARGET


def test_ollama_latest_rule():
    assert ollama_name("mxbai-embed-large") == "mxbai-embed-large:latest"
    assert ollama_name("llama3.1:8b") == "llama3.1:8b"
    assert ollama_name("registry.io:5000/library/x") == "registry.io:5000/library/x:latest"
    assert missing(["a", "b:latest", "c:7b"], ["a:latest", "b", "c"]) == ["c:7b"]


def test_read_routing(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        """
model_list:
  - model_name: emb
    litellm_params: {model: ollama/mxbai-embed-large, api_base: "http://o:11434"}
    model_info: {mode: embedding, id: e1}
  - model_name: chat
    litellm_params: {model: hosted_vllm/meta/llama, api_base: "http://v:8001/v1"}
  - model_name: chat-cpu
    litellm_params: {model: ollama_chat/llama3.1:8b, api_base: "http://o:11434/v1"}
router_settings:
  model_group_alias: {"llama3.1:8b": chat}
  fallbacks: [{chat: [chat-cpu]}]
general_settings: {master_key: os.environ/NOT_SET_HERE}
"""
    )
    cfg = read_routing(path)
    assert cfg.groups == ["emb", "chat", "chat-cpu"]
    assert cfg.ollama_models() == {"http://o:11434": ["mxbai-embed-large", "llama3.1:8b"]}
    assert cfg.aliases == {"llama3.1:8b": "chat"} and cfg.fallbacks == {"chat": ["chat-cpu"]}
    assert cfg.first(provider=["hosted_vllm"]).backend_model == "meta/llama"
    assert cfg.served_names() == ["emb", "chat", "chat-cpu", "llama3.1:8b"]
    (tmp_path / "bad.yaml").write_text("model_list: 3")
    with pytest.raises(OpsError, match="no model_list"):
        read_routing(tmp_path / "bad.yaml")


def test_choose_configmap():
    cms = {"ai-memory-config": {"OLLAMA_URL": "x"}, "other": {"A": "b"}, "kube-root-ca.crt": {}}
    assert m.choose_configmap(cms, m.DEFAULT_KEYS, None) == "ai-memory-config"
    assert m.choose_configmap({"app": {"OLLAMA_BASE_URL": "x"}}, m.DEFAULT_KEYS, None) == "app"
    with pytest.raises(OpsError, match="several"):
        m.choose_configmap({"a": {"OLLAMA_URL": ""}, "b": {"OLLAMA_URL": ""}}, m.DEFAULT_KEYS, None)
    with pytest.raises(OpsError, match="--configmap"):
        m.choose_configmap({"a": {}}, m.DEFAULT_KEYS, None)
    with pytest.raises(OpsError, match="not found"):
        m.choose_configmap(cms, m.DEFAULT_KEYS, "nope")


def test_each_step_is_recorded_and_rollback_undoes_one_at_a_time():
    shared = m.PHASE_TARGETS[1]
    data = {"OLLAMA_BASE_URL": "http://ollama:11434"}  # OLLAMA_URL absent before
    step1 = m.apply_patch(data, {}, m.DEFAULT_KEYS, shared, at="t0", phase=1)
    assert step1["data"] == {"OLLAMA_BASE_URL": shared, "OLLAMA_URL": shared}
    after1 = {k: shared for k in m.DEFAULT_KEYS}
    notes1 = step1["metadata"]["annotations"]
    assert m.apply_patch(after1, notes1, m.DEFAULT_KEYS, shared, at="t1", phase=1) is None
    step3 = m.apply_patch(after1, notes1, m.DEFAULT_KEYS, TARGET, at="t2", phase=3)
    notes3 = step3["metadata"]["annotations"]
    history = m.parse_history(notes3[m.ANNOTATION])
    assert [(r.phase, r.target, r.values["OLLAMA_URL"]) for r in history] == [
        (1, shared, None),
        (3, TARGET, shared),
    ]
    after3 = {k: TARGET for k in m.DEFAULT_KEYS}
    # Rollback of phase 3 returns to the shared Ollama, keeping phase 1's record.
    back = m.rollback_patch(after3, notes3)
    assert back["data"] == {"OLLAMA_BASE_URL": shared, "OLLAMA_URL": shared}
    remaining = back["metadata"]["annotations"][m.ANNOTATION]
    assert [r.phase for r in m.parse_history(remaining)] == [1]
    # Rollback of phase 1 restores the original values, absent keys removed, record dropped.
    back = m.rollback_patch(after1, {m.ANNOTATION: remaining})
    assert back["data"] == {"OLLAMA_BASE_URL": "http://ollama:11434", "OLLAMA_URL": None}
    assert back["metadata"]["annotations"] == {m.ANNOTATION: None}


def test_single_step_records_of_the_earlier_format_still_roll_back():
    legacy = json.dumps({"values": {"OLLAMA_URL": "http://ollama:11434"}, "target": TARGET})
    back = m.rollback_patch({"OLLAMA_URL": TARGET}, {m.ANNOTATION: legacy})
    assert back["data"] == {"OLLAMA_URL": "http://ollama:11434"}


def test_unreadable_record_is_never_overwritten():
    with pytest.raises(OpsError, match="not a record"):
        m.apply_patch({}, {m.ANNOTATION: "{oops"}, m.DEFAULT_KEYS, TARGET, at="t")
    with pytest.raises(OpsError, match="nothing recorded"):
        m.rollback_patch({}, {})


def test_consumer_ollama_url_is_what_this_step_replaces():
    shared = m.PHASE_TARGETS[1]
    history = m.dump_history(
        [
            m.Record({"OLLAMA_BASE_URL": "http://ollama:11434"}, shared, "t0", 1),
            m.Record({"OLLAMA_BASE_URL": shared}, TARGET, "t1", 3),
        ]
    )
    notes = {m.ANNOTATION: history}
    # Before phase 3 the consumer is on the shared Ollama, not on its decommissioned own one.
    on_shared = {k: shared for k in m.DEFAULT_KEYS}
    assert m.consumer_ollama_url(on_shared, notes, m.DEFAULT_KEYS, TARGET) == shared
    on_gateway = {k: TARGET for k in m.DEFAULT_KEYS}
    assert m.consumer_ollama_url(on_gateway, notes, m.DEFAULT_KEYS, TARGET) == shared
    assert m.consumer_ollama_url(on_shared, notes, m.DEFAULT_KEYS, shared) == "http://ollama:11434"
    assert m.consumer_ollama_url(on_gateway, {}, m.DEFAULT_KEYS, TARGET) == (
        m.DEFAULT_CONSUMER_OLLAMA
    )


def test_reads_configmap_finds_every_way_a_pod_reads_it():
    def spec(**container):
        return {"containers": [{"name": "c", **container}]}

    assert m.reads_configmap(spec(envFrom=[{"configMapRef": {"name": "cm"}}]), "cm")
    ref = {"valueFrom": {"configMapKeyRef": {"name": "cm", "key": "OLLAMA_URL"}}}
    assert m.reads_configmap(spec(env=[{"name": "X", **ref}]), "cm")
    assert m.reads_configmap({"containers": [], "volumes": [{"configMap": {"name": "cm"}}]}, "cm")
    projected = {"projected": {"sources": [{"configMap": {"name": "cm"}}]}}
    assert m.reads_configmap({"containers": [], "volumes": [projected]}, "cm")
    assert m.reads_configmap(
        {"containers": [], "initContainers": [{"envFrom": [{"configMapRef": {"name": "cm"}}]}]},
        "cm",
    )
    assert not m.reads_configmap(spec(envFrom=[{"configMapRef": {"name": "other"}}]), "cm")
    assert not m.reads_configmap(spec(env=[{"name": "X", "value": "cm"}]), "cm")


def test_model_rows():
    rows = m.model_rows(
        ["mxbai-embed-large:latest", "llama3.1:8b", "nomic"],
        ["mxbai-embed-large", "llama3.1-8b"],
        {"llama3.1:8b": True, "nomic": False},
        ["mxbai-embed-large:latest"],
    )
    assert [(r.name, r.status) for r in rows] == [
        ("mxbai-embed-large:latest", "pass"),
        ("llama3.1:8b", "warn"),  # served (alias), not pulled in Synapse's Ollama
        ("nomic", "fail"),
    ]


def test_embedding_and_cosine():
    assert m.embedding_of({"embedding": [1, 0]}) == [1.0, 0.0]
    assert m.embedding_of({"embeddings": [[0, 2]]}) == [0.0, 2.0]
    with pytest.raises(OpsError):
        m.embedding_of({"error": "x"})
    assert m.cosine([1, 0], [2, 0]) == pytest.approx(1.0)
    assert m.cosine([1, 0], [0, 1]) == pytest.approx(0.0)


def deployment(gen, spec_replicas, **status):
    conds = status.pop("conditions", None)
    return Deployment(
        metadata=ObjectMeta(name="d", generation=gen),
        spec=DeploymentSpec(
            replicas=spec_replicas, selector=LabelSelector(), template=PodTemplateSpec()
        ),
        status=DeploymentStatus(conditions=conds, **status),
    )


@pytest.mark.parametrize(
    ("status", "done", "words"),
    [
        ({"observedGeneration": 1}, False, "spec update to be observed"),
        ({"observedGeneration": 2, "updatedReplicas": 1, "replicas": 3}, False, "1 of 2 new"),
        ({"observedGeneration": 2, "updatedReplicas": 2, "replicas": 3}, False, "old replicas"),
        (
            {"observedGeneration": 2, "updatedReplicas": 2, "replicas": 2, "availableReplicas": 1},
            False,
            "1 of 2 updated",
        ),
        (
            {"observedGeneration": 2, "updatedReplicas": 2, "replicas": 2, "availableReplicas": 2},
            True,
            "successfully",
        ),
    ],
)
def test_rollout_state_follows_kubectl(status, done, words):
    st = rollout_state(deployment(2, 2, **status))
    assert st.done is done and words in st.message


def test_rollout_state_progress_deadline():
    cond = DeploymentCondition(
        type="Progressing", status="False", reason="ProgressDeadlineExceeded", message="m"
    )
    st = rollout_state(deployment(2, 2, observedGeneration=2, conditions=[cond]))
    assert st.failed and not st.done


def test_scaled_to_zero_is_rolled_out():
    assert rollout_state(deployment(3, 0, observedGeneration=3)).done


def kubeconfig_doc(name, server, *, current=None, ca=None):
    cluster = {"server": server}
    if ca:
        cluster["certificate-authority"] = ca
    return {
        "clusters": [{"name": name, "cluster": cluster}],
        "users": [{"name": name, "user": {"token": name}}],
        "contexts": [
            {"name": name, "context": {"cluster": name, "user": name, "namespace": "ns-" + name}}
        ],
        "current-context": current,
    }


def test_merge_kubeconfigs_first_wins_and_paths_resolve(tmp_path):
    a = kubeconfig_doc("forge", "https://a:6443", ca="ca.crt")
    b = kubeconfig_doc("forge", "https://b:6443", current="forge")
    b["clusters"].append({"name": "other", "cluster": {"server": "https://o"}})
    merged = merge_kubeconfigs([(tmp_path / "a", a), (tmp_path / "sub" / "b", b)])
    assert [c["cluster"]["server"] for c in merged["clusters"]] == ["https://a:6443", "https://o"]
    assert merged["clusters"][0]["cluster"]["certificate-authority"] == str(tmp_path / "ca.crt")
    assert merged["current-context"] == "forge"


def test_load_kubeconfig_honours_env_list_and_context(tmp_path, monkeypatch):
    import yaml

    (tmp_path / "one").write_text(
        yaml.safe_dump(kubeconfig_doc("one", "http://127.0.0.1:1", current="one"))
    )
    (tmp_path / "two").write_text(yaml.safe_dump(kubeconfig_doc("two", "http://127.0.0.1:2")))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv(
        "KUBECONFIG", f"{tmp_path / 'one'}:{tmp_path / 'missing'}:{tmp_path / 'two'}"
    )
    assert load_kubeconfig().cluster.server == "http://127.0.0.1:1"
    assert load_kubeconfig(context="two").cluster.server == "http://127.0.0.1:2"
    with pytest.raises(OpsError, match="Context 'three' not found"):
        load_kubeconfig(context="three")
    with pytest.raises(OpsError, match="no kubeconfig"):
        load_kubeconfig(str(tmp_path / "nope"))


@pytest.mark.parametrize(
    ("url", "ref"),
    [
        ("http://ollama:11434", ServiceRef("jarvis-cortex", "ollama", 11434)),
        (
            "http://synapse.llm-infra.svc.cluster.local:11434",
            ServiceRef("llm-infra", "synapse", 11434),
        ),
        ("http://ollama.llm-infra:11434/", ServiceRef("llm-infra", "ollama", 11434)),
        (
            "http://vllm-inference.llm-infra.svc:8001/v1",
            ServiceRef("llm-infra", "vllm-inference", 8001),
        ),
        ("https://llm.arunlabs.com", None),
        ("http://localhost:11434", None),
        ("http://127.0.0.1:11434", None),
    ],
)
def test_service_ref(url, ref):
    assert service_ref(url, "jarvis-cortex") == ref


def test_curl_args_and_output():
    args = curl_args("http://x/api/embeddings", method="POST", json_body={"a": 1}, max_time=5)
    assert args[0] == "curl" and args[-1] == "http://x/api/embeddings"
    assert args[args.index("--data-binary") + 1] == '{"a": 1}'
    body, code, secs = parse_output(f'{{"embedding": [1]}}\n{MARK} 200 0.012\n')
    assert (body, code, secs) == ('{"embedding": [1]}', 200, 0.012)
    assert parse_output("curl: (7) Failed to connect")[1] is None


def test_read_routing_of_the_shipped_config():
    from pathlib import Path

    cfg = read_routing(Path(__file__).parents[2] / "config" / "litellm-config.yaml")
    assert {"mxbai-embed-large", "llama3.1-8b", "llama3.1-8b-cpu"} <= set(cfg.groups)
    assert "http://ollama.llm-infra.svc.cluster.local:11434" in cfg.ollama_models()
    assert cfg.first(provider=["hosted_vllm"]).group == "llama3.1-8b"
