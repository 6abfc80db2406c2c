"""verify's deployment checks against the fake API server and fake backends (issues 16.4, 16.5,
16.9, 16.10, 13.3, 15.11): GPU pre-flight, PVCs against the disk, VRAM against vLLM's budget,
a tool call to vLLM, Prometheus's own view of rules and targets, metrics on their own port."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.ops.conftest import Stack, checks_by_name, cli_json
from tests.ops.fakebackends import FakeDCGM
from tests.ops.test_health_verify import add_pvcs

REPO = Path(__file__).resolve().parents[2]


def decommission_own_ollama(stack: Stack) -> None:
    dep = stack.cluster.obj("deployments", "jarvis-cortex", "ollama")
    dep["spec"]["replicas"] = 0
    stack.cluster._settle(dep)


# -- GPU pre-flight (risk R2) -----------------------------------------------------------------


def test_preflight_refuses_while_the_consumer_ollama_holds_the_gpu(stack, capsys):
    code, doc = cli_json(capsys, "verify", "--phase", "2", "--preflight")
    assert code == 1
    row = checks_by_name(doc)["nvidia.com/gpu free for vLLM"]
    assert row["status"] == "fail" and row["value"] == "0 free"
    assert "jarvis-cortex/ollama" in row["detail"] and "R2" in row["detail"]
    assert set(checks_by_name(doc)) == {"RuntimeClass nvidia", "nvidia.com/gpu free for vLLM"}
    decommission_own_ollama(stack)
    code, doc = cli_json(capsys, "verify", "--phase", "2", "--preflight")
    assert code == 0, doc
    # A running vLLM holds its own GPU: that is not contention.
    assert "vllm-inference" not in checks_by_name(doc)["nvidia.com/gpu free for vLLM"]["detail"]


def test_preflight_needs_the_nvidia_runtime_class(stack, capsys):
    decommission_own_ollama(stack)
    stack.cluster.objects["runtimeclasses"].clear()
    code, doc = cli_json(capsys, "verify", "--phase", "2", "--preflight")
    assert code == 1
    assert checks_by_name(doc)["RuntimeClass nvidia"]["value"] == "missing"


def test_preflight_without_a_gpu_on_any_node(stack, capsys):
    decommission_own_ollama(stack)
    for node in stack.cluster.objects["nodes"].values():
        node["status"]["allocatable"].pop("nvidia.com/gpu")
    code, doc = cli_json(capsys, "verify", "--phase", "2", "--preflight")
    assert code == 1
    assert "device plugin" in checks_by_name(doc)["nvidia.com/gpu free for vLLM"]["detail"]


def test_preflight_is_a_phase_2_thing_and_gates_deploy_phase2(stack, capsys):
    code, doc = cli_json(capsys, "verify", "--phase", "1", "--preflight")
    assert code != 0 and "phase 2" in doc["error"]
    done = subprocess.run(
        ["make", "-s", "-n", "deploy-phase2", "KUBECTL=kubectl"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    lines = done.stdout.splitlines()
    gate = next(i for i, line in enumerate(lines) if "verify --phase 2 --preflight" in line)
    apply = next(i for i, line in enumerate(lines) if "apply -k manifests/phases/phase2" in line)
    assert gate < apply


# -- PVCs against the disk (verify --phase 1) -------------------------------------------------


def test_phase1_checks_every_planned_pvc_against_the_disk(stack, capsys):
    code, doc = cli_json(capsys, "verify", "--phase", "1", "--samples", "1")
    row = checks_by_name(doc)["PVCs fit the disk"]
    # 200Gi Ollama + 100Gi vLLM + the speech caches: every claim of the end state, rendered.
    assert row["status"] == "pass" and row["value"] == "325Gi of 1800Gi", row
    assert "ollama-models 200Gi" in row["detail"] and "vllm-model-cache 100Gi" in row["detail"]
    node = stack.cluster.obj("nodes", "", "forge")
    node["status"]["capacity"]["ephemeral-storage"] = "350Gi"  # 325Gi > 90 % of 350Gi
    code, doc = cli_json(capsys, "verify", "--phase", "1", "--samples", "1")
    row = checks_by_name(doc)["PVCs fit the disk"]
    assert row["status"] == "fail" and row["value"] == "325Gi of 350Gi"
    assert code == 1


# -- VRAM in GiB against vLLM's own budget ----------------------------------------------------


def _dcgm(stack: Stack, served, used_mib: float, free_mib: float) -> None:
    url = served.start(FakeDCGM(used_mib, free_mib).app())
    stack.cluster.add_service("monitoring", "dcgm-exporter", 9400, url)
    vllm = stack.cluster.obj("deployments", "llm-infra", "vllm-inference")
    vllm["spec"]["template"]["spec"]["containers"][0]["args"] = [
        "meta-llama/Meta-Llama-3.1-8B-Instruct",
        "--gpu-memory-utilization=0.85",
    ]


def test_vram_of_a_correct_deployment_passes(stack, capsys, served):
    # 0.85 of an RTX 5090 (32607 MiB): vLLM uses about 27.1 GiB, above the old 28e9-byte bar.
    _dcgm(stack, served, used_mib=27750, free_mib=32607 - 27750)
    decommission_own_ollama(stack)
    add_pvcs(stack, vllm_model_cache="Bound")
    code, doc = cli_json(capsys, "verify", "--phase", "2", "--tokens", "8")
    row = checks_by_name(doc)["GPU VRAM within budget"]
    assert row["status"] == "pass", row
    assert code == 0, doc
    assert row["value"] == "27.1 GiB" and "0.85 x 31.8 GiB = 27.1 GiB" in row["detail"]


def test_vram_beyond_the_budget_fails(stack, capsys, served):
    _dcgm(stack, served, used_mib=30500, free_mib=32607 - 30500)
    decommission_own_ollama(stack)
    code, doc = cli_json(capsys, "verify", "--phase", "2", "--tokens", "8")
    assert checks_by_name(doc)["GPU VRAM within budget"]["status"] == "fail"
    assert code == 1


# -- tool calls to vLLM (issue 13.3) ----------------------------------------------------------


def test_phase2_proves_vllm_accepts_tool_calls(stack, capsys):
    decommission_own_ollama(stack)
    code, doc = cli_json(capsys, "verify", "--phase", "2", "--tokens", "8")
    row = checks_by_name(doc)["tool call (tool_choice auto)"]
    assert row["status"] == "pass" and row["detail"] == "tool_calls: get_weather"
    stack.vllm.auto_tools = False  # the server started without the two flags
    code, doc = cli_json(capsys, "verify", "--phase", "2", "--tokens", "8")
    row = checks_by_name(doc)["tool call (tool_choice auto)"]
    assert code == 1 and row["status"] == "fail" and row["value"] == "HTTP 400"
    assert "--enable-auto-tool-choice" in row["detail"]


# -- Prometheus's own view (issue 16.4) -------------------------------------------------------


def _rule(stack: Stack, *alerts: str) -> None:
    stack.cluster.put(
        "prometheusrules",
        {
            "metadata": {"name": "synapse-alerts", "namespace": "llm-infra"},
            "spec": {"groups": [{"name": "g", "rules": [{"alert": a} for a in alerts]}]},
        },
    )


def test_phase5_reads_loaded_rules_and_scraped_targets(stack, capsys):
    _rule(stack, "OllamaDown", "SynapseGatewayDown")
    code, doc = cli_json(capsys, "verify", "--phase", "5")
    assert code == 1
    checks = checks_by_name(doc)
    # The PrometheusRule exists, but Prometheus never loaded it (no selector label): fail.
    assert checks["alert rules loaded"]["status"] == "pass"
    rules = checks["alert rules loaded in Prometheus"]
    assert rules["status"] == "fail" and rules["value"] == "0/2 alerts"
    assert "release" in rules["detail"]
    targets = checks["Prometheus scrapes synapse"]
    assert targets["status"] == "fail" and "no active target" in targets["detail"]

    stack.prometheus.alerts = ["OllamaDown", "SynapseGatewayDown", "Other"]
    stack.prometheus.targets = [
        {
            "labels": {"job": "synapse", "namespace": "llm-infra", "pod": "synapse-a"},
            "scrapeUrl": "http://10.42.0.7:9090/metrics",
            "health": "up",
            "lastError": "",
        }
    ]
    _, doc = cli_json(capsys, "verify", "--phase", "5")
    checks = checks_by_name(doc)
    assert checks["alert rules loaded in Prometheus"]["value"] == "2/2 alerts"
    assert checks["alert rules loaded in Prometheus"]["status"] == "pass"
    assert checks["Prometheus scrapes synapse"]["value"] == "1/1 targets up"
    stack.prometheus.targets[0] |= {"health": "down", "lastError": "connection refused"}
    _, doc = cli_json(capsys, "verify", "--phase", "5")
    row = checks_by_name(doc)["Prometheus scrapes synapse"]
    assert row["status"] == "fail" and "connection refused" in row["detail"]


# -- metrics on their own port (issue 15.11) --------------------------------------------------


def test_health_reads_the_gateway_metrics_from_the_metrics_port(stack, capsys):
    code, doc = cli_json(capsys, "health", "--phase", "3")
    assert checks_by_name(doc)["via gateway: llama3.1-8b"]["value"] == "up"
    # The API port serves no /metrics: pointed there, the check fails instead of passing.
    code, doc = cli_json(capsys, "health", "--phase", "3", "--metrics-port", "8000")
    assert code == 1
    assert checks_by_name(doc)["gateway metrics"]["status"] == "fail"
