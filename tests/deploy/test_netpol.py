"""Who can reach what once the NetworkPolicies are applied (manifests/phases/final)."""

from __future__ import annotations

import pytest

from tests.deploy.helpers import (
    NAMESPACE,
    Doc,
    find,
    label_selector_matches,
    pod_template,
    workloads,
)
from tests.deploy.netpol import Pod, allowed

# Pods outside llm-infra, labelled as they are in the cluster.
TRAEFIK = Pod("kube-system", {"app.kubernetes.io/name": "traefik"}, "traefik")
COREDNS = Pod("kube-system", {"k8s-app": "kube-dns"}, "coredns")
PROMETHEUS = Pod("monitoring", {"app.kubernetes.io/name": "prometheus"}, "prometheus")
CONSUMER = Pod("jarvis-cortex", {"app": "indexer"}, "indexer")
STRANGER = Pod("default", {"app": "curl"}, "curl")
INTERNET = None


def _pods(docs: list[Doc]) -> dict[str, Pod]:
    """The pod of each workload, with the labels its template gives it."""
    return {
        w["metadata"]["name"]: Pod(
            NAMESPACE, pod_template(w)["metadata"]["labels"], w["metadata"]["name"]
        )
        for w in workloads(docs)
    }


def _policies(docs: list[Doc]) -> list[Doc]:
    return [d for d in docs if d["kind"] == "NetworkPolicy"]


def _matrix(pods: dict[str, Pod]) -> list[tuple[Pod | None, Pod | None, int, str, bool]]:
    gw, ollama, vllm = pods["synapse"], pods["ollama"], pods["vllm-inference"]
    stt, tts = pods["speaches-stt"], pods["piper-tts"]
    return [
        # the keyed API: from anywhere (it checks the key), Traefik and Prometheus included
        (CONSUMER, gw, 8000, "TCP", True),
        (STRANGER, gw, 8000, "TCP", True),
        (TRAEFIK, gw, 8000, "TCP", True),
        (PROMETHEUS, gw, 8000, "TCP", True),
        # /metrics on its own port: Prometheus only (issue 15.11)
        (PROMETHEUS, gw, 9090, "TCP", True),
        (CONSUMER, gw, 9090, "TCP", False),
        (STRANGER, gw, 9090, "TCP", False),
        (TRAEFIK, gw, 9090, "TCP", False),
        # the keyless Ollama port: listed consumer namespaces only
        (CONSUMER, gw, 11434, "TCP", True),
        (STRANGER, gw, 11434, "TCP", False),
        (TRAEFIK, gw, 11434, "TCP", False),
        # backends: only from the gateway (and Prometheus for vLLM's /metrics)
        (gw, ollama, 11434, "TCP", True),
        (gw, vllm, 8000, "TCP", True),
        (gw, stt, 8000, "TCP", True),
        (gw, tts, 8000, "TCP", True),
        (PROMETHEUS, vllm, 8000, "TCP", True),
        (PROMETHEUS, ollama, 11434, "TCP", False),
        (CONSUMER, ollama, 11434, "TCP", False),
        (CONSUMER, vllm, 8000, "TCP", False),
        (STRANGER, stt, 8000, "TCP", False),
        (TRAEFIK, ollama, 11434, "TCP", False),
        (ollama, vllm, 8000, "TCP", False),
        (vllm, stt, 8000, "TCP", False),
        # the gateway's egress: DNS and its backends, nothing else
        (gw, COREDNS, 53, "UDP", True),
        (gw, COREDNS, 53, "TCP", True),
        (gw, INTERNET, 443, "TCP", False),
        (gw, STRANGER, 8000, "TCP", False),
        (gw, ollama, 22, "TCP", False),
        # backends may still download weights (Ollama pulls, Hugging Face)
        (ollama, INTERNET, 443, "TCP", True),
        (vllm, INTERNET, 443, "TCP", True),
    ]


def _describe(pod: Pod | None) -> str:
    return "internet" if pod is None else f"{pod.namespace}/{pod.name}"


def test_traffic_matrix(final: list[Doc]) -> None:
    policies = _policies(final)
    wrong = [
        f"{_describe(src)} → {_describe(dst)}:{port}/{proto} expected {'open' if want else 'closed'}"
        for src, dst, port, proto, want in _matrix(_pods(final))
        if allowed(policies, src, dst, port, proto) != want
    ]
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("target", ["phase4", "phase5", "litellm"])
def test_nothing_is_blocked_before_the_gated_policies(
    target: str, rendered: dict[str, list[Doc]]
) -> None:
    """No phase and not the LiteLLM variant carries a policy: consumers keep reaching Ollama
    directly until `make deploy-networkpolicies` finds them migrated (risk R8)."""
    assert not _policies(rendered[target])
    assert allowed([], CONSUMER, _pods(rendered["phase4"])["ollama"], 11434)


def test_every_pod_is_under_default_deny(everything: list[Doc]) -> None:
    deny = find(everything, "NetworkPolicy", "default-deny-ingress")
    assert deny["spec"]["podSelector"] == {}
    assert deny["spec"]["policyTypes"] == ["Ingress"]
    assert "ingress" not in deny["spec"]


def test_policy_ports_are_ports_the_selected_pods_listen_on(everything: list[Doc]) -> None:
    """NetworkPolicies see container ports, never Service ports (vLLM: 8000, not 8001)."""
    pods = [pod_template(w) for w in workloads(everything)]
    for policy in _policies(everything):
        selected = [
            p
            for p in pods
            if label_selector_matches(policy["spec"]["podSelector"], p["metadata"]["labels"])
        ]
        listening = {
            port["containerPort"]
            for pod in selected
            for container in pod["spec"]["containers"]
            for port in container.get("ports", [])
        }
        for rule in policy["spec"].get("ingress") or []:
            for entry in rule.get("ports") or []:
                assert entry["port"] in listening, (policy["metadata"]["name"], entry)


@pytest.mark.parametrize("src", [CONSUMER, STRANGER])
def test_litellm_component_is_reachable_and_reaches_backends(
    src: Pod, everything: list[Doc]
) -> None:
    pods = _pods(everything)
    policies = _policies(everything)
    assert allowed(policies, src, pods["litellm-proxy"], 4000)
    for backend, port in (("ollama", 11434), ("vllm-inference", 8000), ("speaches-stt", 8000)):
        assert allowed(policies, pods["litellm-proxy"], pods[backend], port)
        assert not allowed(policies, src, pods[backend], port)


def _policy(name: str, selector: Doc, **spec: object) -> Doc:
    return {
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"podSelector": selector, **spec},
    }


def test_evaluator_semantics() -> None:
    """The evaluator itself: the cases the matrix relies on, on hand-written policies."""
    web = Pod(NAMESPACE, {"app": "web"}, "web")
    same_ns = Pod(NAMESPACE, {"app": "client"}, "client")
    other_ns = Pod("other", {"app": "client"}, "client")
    deny = _policy("deny", {}, policyTypes=["Ingress"])
    assert allowed([], other_ns, web, 80)
    assert not allowed([deny], other_ns, web, 80)
    # a podSelector-only peer means "in the policy's namespace"
    by_pod = _policy(
        "pod",
        {"matchLabels": {"app": "web"}},
        ingress=[{"from": [{"podSelector": {"matchLabels": {"app": "client"}}}]}],
    )
    assert allowed([deny, by_pod], same_ns, web, 80)
    assert not allowed([deny, by_pod], other_ns, web, 80)
    # an empty rule opens every source and port (the plan's original "allow LiteLLM from any")
    assert allowed([deny, _policy("open", {}, ingress=[{}])], other_ns, web, 1234)
    # ports restrict; protocols matter
    tcp80 = _policy("tcp80", {}, ingress=[{"ports": [{"port": 80}]}])
    assert allowed([tcp80], other_ns, web, 80)
    assert not allowed([tcp80], other_ns, web, 81)
    assert not allowed([tcp80], other_ns, web, 80, "UDP")
    # egress policies: a policy with only egress rules defaults to both types
    egress = _policy(
        "egress", {"matchLabels": {"app": "client"}}, egress=[{"to": [{"podSelector": {}}]}]
    )
    assert allowed([egress], same_ns, web, 80)
    assert not allowed([egress], same_ns, None, 443)
    assert not allowed([egress], same_ns, Pod("other", {}, "x"), 80)
