"""health and verify --phase N against the fake cluster and fake backends."""

from __future__ import annotations

from tests.ops.conftest import MASTER_KEY, Stack, checks_by_name, cli, cli_json

GI = 1024**3


def add_pvcs(stack: Stack, **phases: str) -> None:
    for name, phase in phases.items():
        stack.cluster.put(
            "persistentvolumeclaims",
            {
                "metadata": {"name": name.replace("_", "-"), "namespace": "llm-infra"},
                "spec": {
                    "accessModes": ["ReadWriteOnce"],
                    "resources": {"requests": {"storage": "1Gi"}},
                },
                "status": {"phase": phase, "capacity": {"storage": "200Gi"}},
            },
        )


def test_health_phase1_all_green(stack, capsys):
    add_pvcs(stack, ollama_models="Bound")
    code, doc = cli_json(capsys, "health", "--phase", "1")
    assert code == 0, doc
    checks = checks_by_name(doc)
    assert set(checks) == {
        "namespace llm-infra",
        "pods ollama",
        "pvc ollama-models",
        "ollama direct",
    }
    assert checks["pods ollama"]["value"] == "1/1 ready"
    assert checks["pvc ollama-models"]["value"] == "Bound 200Gi"


def test_health_reports_unbound_pvc_and_unready_pods(stack, capsys):
    add_pvcs(stack, ollama_models="Pending")
    stack.cluster.stuck.add(("llm-infra", "ollama"))
    stack.cluster.obj("deployments", "llm-infra", "ollama")["status"]["readyReplicas"] = 0
    code, doc = cli_json(capsys, "health", "--phase", "1")
    assert code == 1
    checks = checks_by_name(doc)
    assert checks["pvc ollama-models"]["status"] == "fail"
    assert checks["pods ollama"]["value"] == "0/1 ready"


def test_health_phase3_sees_backends_through_the_gateway(stack, capsys, monkeypatch):
    add_pvcs(stack, ollama_models="Bound", vllm_model_cache="Bound")
    code, doc = cli_json(capsys, "health", "--phase", "3")
    assert code == 0, doc
    checks = checks_by_name(doc)
    assert checks["gateway /health"]["status"] == "pass"  # key read from the Secret
    assert checks["via gateway: llama3.1-8b"]["value"] == "up"
    # The API server strips Authorization on the proxy; the key arrived as x-api-key.
    seen = [{k.lower(): v for k, v in h.items()} for g in stack.gateways for h in g.seen_auth]
    assert seen and all("authorization" not in h and h["x-api-key"] == MASTER_KEY for h in seen)
    stack.vllm.up = False
    code, doc = cli_json(capsys, "health", "--phase", "3")
    assert code == 1
    checks = checks_by_name(doc)
    assert checks["vllm-inference direct"]["status"] == "fail"
    assert checks["via gateway: llama3.1-8b"]["value"] == "down"


def test_health_wrong_key_names_the_problem(stack, capsys):
    add_pvcs(stack, ollama_models="Bound", vllm_model_cache="Bound")
    code, doc = cli_json(capsys, "health", "--phase", "3", "--master-key", "wrong")
    assert code == 1
    row = checks_by_name(doc)["gateway /health"]
    assert row["value"] == "HTTP 401" and "--gateway-url" in row["detail"]


def test_health_with_a_consumer_key_names_the_problem(stack, capsys):
    """The gateway's /health is the master key's: a consumer's key gets a 403."""
    add_pvcs(stack, ollama_models="Bound", vllm_model_cache="Bound")
    stack.state.consumer_keys.add("sk-consumer-0123456789abcdef")
    code, doc = cli_json(
        capsys, "health", "--phase", "3", "--master-key", "sk-consumer-0123456789abcdef"
    )
    assert code == 1
    row = checks_by_name(doc)["gateway /health"]
    assert row["value"] == "HTTP 403" and "need the master key" in row["detail"]


def test_verify_phase1_measures(stack, capsys):
    add_pvcs(stack, ollama_models="Bound")
    stack.cluster.metrics[("llm-infra", "ollama-1f7c-0")] = {"memory": "3Gi"}
    code, doc = cli_json(capsys, "verify", "--phase", "1", "--samples", "3")
    assert code == 0, doc
    checks = checks_by_name(doc)
    assert checks["model mxbai-embed-large"]["status"] == "pass"
    assert checks["embedding works"]["value"] == "dim 1024"
    lat = checks["embedding latency < 100ms"]
    assert lat["value"] == "p50 42.0 ms" and "total_duration" in lat["detail"]
    assert checks["memory ollama < 64Gi"]["value"] == "3.0 Gi"


def test_verify_phase1_fails_slow_embeddings_and_missing_models(stack, capsys):
    add_pvcs(stack, ollama_models="Bound")
    stack.synapse_ollama.embed_ns = 250_000_000
    stack.synapse_ollama.models.remove("llama3.1:8b")
    code, doc = cli_json(capsys, "verify", "--phase", "1", "--samples", "2")
    assert code == 1
    checks = checks_by_name(doc)
    assert checks["embedding latency < 100ms"]["value"] == "p50 250.0 ms"
    assert checks["embedding latency < 100ms"]["status"] == "fail"
    assert checks["model llama3.1:8b"]["status"] == "fail"
    assert checks["LLM chat works (CPU)"]["status"] == "fail"
    assert checks["memory ollama < 64Gi"]["status"] == "skip"  # no metrics-server data


def decommissioned(stack: Stack) -> None:
    """The consumer's own Ollama gave the GPU back (phase 1's last step)."""
    stack.cluster.obj("deployments", "jarvis-cortex", "ollama")["spec"]["replicas"] = 0
    stack.cluster._settle(stack.cluster.obj("deployments", "jarvis-cortex", "ollama"))


def test_verify_phase2(stack, capsys):
    add_pvcs(stack, vllm_model_cache="Bound")
    decommissioned(stack)
    code, doc = cli_json(capsys, "verify", "--phase", "2", "--tokens", "64")
    checks = checks_by_name(doc)
    assert checks["GPU allocated"]["value"] == "nvidia.com/gpu: 1"
    assert checks["tokens/s > 100"]["value"].endswith("tok/s")
    assert checks["GPU VRAM within budget"]["status"] == "skip"
    assert checks["model survives restart"]["status"] == "skip"
    assert code == 0, doc


def test_verify_phase2_disruptive_restart(stack, capsys):
    add_pvcs(stack, vllm_model_cache="Bound")
    decommissioned(stack)
    old = [
        p["metadata"]["name"]
        for p in stack.cluster.pods_of("llm-infra")
        if p["metadata"]["name"].startswith("vllm")
    ]
    code, doc = cli_json(capsys, "verify", "--phase", "2", "--tokens", "8", "--disruptive")
    assert code == 0, doc
    row = checks_by_name(doc)["model survives restart"]
    assert row["status"] == "pass" and row["detail"] not in old


def test_verify_phase3_fallback_is_proved_and_undone(stack, capsys):
    code, doc = cli_json(capsys, "verify", "--phase", "3", "--samples", "2")
    checks = checks_by_name(doc)
    assert code == 0, doc
    assert checks["pods synapse"]["value"] == "2/2 ready"
    assert "vllm-llama3.1-8b" in checks["LLM via gateway → vLLM"]["detail"]
    assert checks["fallback: kill vLLM → Ollama"]["status"] == "skip"
    assert checks["CronJob or equivalent"]["value"] == "not needed"

    code, doc = cli_json(capsys, "verify", "--phase", "3", "--samples", "2", "--disruptive")
    checks = checks_by_name(doc)
    assert code == 0, doc
    assert "fallbacks 1" in checks["fallback: kill vLLM → Ollama"]["detail"]
    assert checks["restore vllm-inference"]["status"] == "pass"
    assert stack.cluster.obj("deployments", "llm-infra", "vllm-inference")["spec"]["replicas"] == 1
    assert stack.vllm.up


def test_verify_phase3_fallback_not_happening_fails(stack, capsys):
    stack.cluster.on_scale.clear()  # vLLM keeps answering although scaled to 0: no fallback
    code, doc = cli_json(capsys, "verify", "--phase", "3", "--samples", "1", "--disruptive")
    assert code == 1
    assert checks_by_name(doc)["fallback: kill vLLM → Ollama"]["status"] == "fail"
    assert stack.cluster.obj("deployments", "llm-infra", "vllm-inference")["spec"]["replicas"] == 1


def test_verify_phase4_round_trip(stack, capsys):
    for app in ("speaches-stt", "piper-tts"):
        stack.cluster.add_deployment("llm-infra", app, 1)
    code, doc = cli_json(capsys, "verify", "--phase", "4")
    checks = checks_by_name(doc)
    assert checks["STT via gateway"]["detail"].startswith("'Hello world.'")
    assert checks["TTS via gateway"]["status"] == "pass"
    assert code == 0, doc


def test_verify_phase5_probes_from_inside_namespaces(stack, capsys, served):
    from tests.ops.fakebackends import FakeGateway

    for i, name in enumerate(("default-deny-ingress", "allow-gateway", "allow-backends")):
        spec = {"podSelector": {}, "policyTypes": ["Ingress"]}
        if i:
            spec = {
                "podSelector": {"matchLabels": {"app": name}},
                "policyTypes": ["Ingress"],
                "ingress": [{}],
            }
        stack.cluster.put(
            "networkpolicies", {"metadata": {"name": name, "namespace": "llm-infra"}, "spec": spec}
        )
    stack.cluster.blocked.add(("default", "ollama.llm-infra.svc.cluster.local:11434"))
    ingress = served.start(FakeGateway(stack.state).app())
    code, doc = cli_json(capsys, "verify", "--phase", "5", "--ingress-url", ingress)
    checks = checks_by_name(doc)
    assert checks["NetworkPolicies active"]["value"] == "3 policies"
    assert checks["direct Ollama blocked from outside ns"]["value"].startswith("curl exit 28")
    assert checks["gateway Ollama port from jarvis-cortex"]["status"] == "pass"
    assert checks["ingress works"]["status"] == "pass"
    assert checks["alert rules loaded"]["status"] == "fail"
    assert code == 1
    # Unblocked, the same probe reaches Ollama: that must fail the check.
    stack.cluster.blocked.clear()
    code, doc = cli_json(capsys, "verify", "--phase", "5", "--ingress-url", ingress)
    assert checks_by_name(doc)["direct Ollama blocked from outside ns"]["status"] == "fail"


def test_verify_human_output(stack, capsys):
    add_pvcs(stack, ollama_models="Bound")
    code, out = cli(capsys, "verify", "--phase", "1", "--samples", "1")
    assert code == 0
    assert "embedding latency < 100ms" in out and "PASS" in out
