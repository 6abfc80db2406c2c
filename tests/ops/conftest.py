"""Fixtures: a fake Kubernetes API server and fake backends on 127.0.0.1, one kubeconfig."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.ops.fakebackends import FakeGateway, FakeOllama, FakePrometheus, FakeVLLM, GatewayState
from tests.ops.fakekube import FakeCluster, Served, write_kubeconfig

MASTER_KEY = "sk-test-master"
SERVED = [
    "mxbai-embed-large",
    "llama3.1-8b",
    "llama3.1-8b-cpu",
    "llama3.1:8b",
    "whisper-large-v3",
    "piper-tts",
]


@pytest.fixture(scope="session")
def served() -> Iterator[Served]:
    s = Served()
    yield s
    s.close()


@pytest.fixture
def cluster(served: Served, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> FakeCluster:
    fc = FakeCluster()
    url = served.start(fc.app())
    monkeypatch.setenv("KUBECONFIG", write_kubeconfig(tmp_path / "kubeconfig", url))
    # kubectl (`kustomize` renders the planned manifests) caches what the fake API server says
    # in ~/.kube/cache/http: the test's own directory, never the user's.
    monkeypatch.setenv("KUBECACHEDIR", str(tmp_path / "kube-cache"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.delenv("SYNAPSE_MASTER_KEY", raising=False)
    monkeypatch.setenv("COLUMNS", "250")  # rich tables unwrapped, so text checks see whole cells
    monkeypatch.chdir(tmp_path)  # no config/litellm-config.yaml unless a test writes one
    fc.url = url  # type: ignore[attr-defined]
    return fc


@dataclass
class Stack:
    cluster: FakeCluster
    consumer_ollama: FakeOllama
    synapse_ollama: FakeOllama
    vllm: FakeVLLM
    gateways: list[FakeGateway]
    state: GatewayState
    prometheus: FakePrometheus


@pytest.fixture
def stack(cluster: FakeCluster, served: Served) -> Stack:
    """llm-infra with Ollama, vLLM and two gateway replicas; jarvis-cortex with its consumer."""
    for ns in ("llm-infra", "jarvis-cortex", "default", "monitoring"):
        cluster.add_namespace(ns)
    # forge: one RTX 5090 and a 1.8 TiB disk; K3s made RuntimeClass nvidia.
    cluster.put(
        "nodes",
        {
            "metadata": {"name": "forge"},
            "status": {
                "capacity": {"ephemeral-storage": "1800Gi", "nvidia.com/gpu": "1"},
                "allocatable": {"ephemeral-storage": "1700Gi", "nvidia.com/gpu": "1"},
            },
        },
    )
    cluster.put("runtimeclasses", {"metadata": {"name": "nvidia"}, "handler": "nvidia"})
    prometheus = FakePrometheus()
    cluster.add_service(
        "monitoring", "kube-prometheus-stack-prometheus", 9090, served.start(prometheus.app())
    )
    consumer = FakeOllama(["mxbai-embed-large:latest", "llama3.1:8b"])
    synapse_ollama = FakeOllama(
        ["mxbai-embed-large", "llama3.1:8b"],
        available={"mxbai-embed-large": [1000, 200], "llama3.1:8b": [5000]},
    )
    vllm = FakeVLLM()
    state = GatewayState(MASTER_KEY, list(SERVED), vllm)
    gateways = [FakeGateway(state), FakeGateway(state)]
    gw_urls = [served.start(g.app()) for g in gateways]
    metrics_urls = [served.start(g.metrics_app()) for g in gateways]

    consumer_url = served.start(consumer.app())
    cluster.add_service("jarvis-cortex", "ollama", 11434, consumer_url)
    cluster.add_service("llm-infra", "ollama", 11434, served.start(synapse_ollama.app()))
    cluster.add_service("llm-infra", "vllm-inference", 8001, served.start(vllm.app()))
    cluster.add_service("llm-infra", "synapse", 8000, None)
    cluster.services[("llm-infra", "synapse", 8000)] = gw_urls  # type: ignore[assignment]
    cluster.services[("llm-infra", "synapse", 11434)] = gw_urls  # type: ignore[assignment]
    cluster.pod_targets[("llm-infra", "synapse", 8000)] = gw_urls
    cluster.services[("llm-infra", "synapse", 9090)] = metrics_urls  # type: ignore[assignment]
    cluster.pod_targets[("llm-infra", "synapse", 9090)] = metrics_urls

    cluster.put(
        "configmaps",
        {
            "metadata": {"name": "ai-memory-config", "namespace": "jarvis-cortex"},
            "data": {
                "OLLAMA_BASE_URL": "http://ollama:11434",
                "OLLAMA_URL": "http://ollama:11434",
                "NEO4J_URI": "bolt://neo4j:7687",
            },
        },
    )
    cluster.put(
        "configmaps",
        {
            "metadata": {"name": "kube-root-ca.crt", "namespace": "jarvis-cortex"},
            "data": {"ca.crt": "x"},
        },
    )
    # The consumer's workers read the ConfigMap (envFrom, or one key through env); neo4j and the
    # consumer's own Ollama do not, so a migration must not restart them.
    reads_all = {"envFrom": [{"configMapRef": {"name": "ai-memory-config"}}]}
    reads_key = {
        "env": [
            {
                "name": "OLLAMA_URL",
                "valueFrom": {"configMapKeyRef": {"name": "ai-memory-config", "key": "OLLAMA_URL"}},
            }
        ]
    }
    # The consumer's own Ollama holds the GPU until it is decommissioned (risk R2).
    own_gpu = {"resources": {"limits": {"nvidia.com/gpu": "1"}}}
    for name, n, extra in (
        ("indexer", 2, reads_all),
        ("extractor", 1, reads_all),
        ("query", 1, reads_all),
        ("graph-builder", 1, reads_key),
        ("ollama", 1, own_gpu),
        ("neo4j", 1, None),
    ):
        cluster.add_deployment("jarvis-cortex", name, n, container_extra=extra)
    gpu = {"limits": {"nvidia.com/gpu": "1", "memory": "48Gi"}, "requests": {"nvidia.com/gpu": "1"}}
    cluster.add_deployment("llm-infra", "ollama", 1)
    cluster.add_deployment("llm-infra", "vllm-inference", 1, resources=gpu)
    cluster.add_deployment("llm-infra", "synapse", 2, resources={"limits": {"memory": "512Mi"}})

    def backends_follow_replicas(ns: str, name: str, replicas: int) -> None:
        if (ns, name) == ("llm-infra", "vllm-inference"):
            vllm.up = replicas > 0
        if (ns, name) == ("jarvis-cortex", "ollama"):  # decommissioned: nothing answers
            if replicas:
                cluster.services[(ns, name, 11434)] = consumer_url
            else:
                cluster.services.pop((ns, name, 11434), None)

    cluster.on_scale.append(backends_follow_replicas)
    cluster.put(
        "secrets",
        {
            "metadata": {"name": "synapse-master-key", "namespace": "llm-infra"},
            "data": {"master-key": base64.b64encode(MASTER_KEY.encode()).decode()},
        },
    )
    return Stack(cluster, consumer, synapse_ollama, vllm, gateways, state, prometheus)


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    """Run `synapse ARGV`; return the exit code and what it printed."""
    from synapse.cli import main

    capsys.readouterr()
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out + out.err


def cli_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    code, out = cli(capsys, *argv, "--json")
    return code, json.loads(out)


def checks_by_name(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in doc["checks"]}
