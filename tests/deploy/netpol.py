"""A small NetworkPolicy evaluator (the Kubernetes semantics kube-router enforces).

A connection is allowed when the source's egress policies and the destination's ingress
policies both allow it; a pod selected by no policy of a direction is open in that direction.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tests.deploy.helpers import Doc, label_selector_matches


@dataclass(frozen=True)
class Pod:
    namespace: str
    labels: dict[str, str] = field(hash=False)
    name: str = ""


def namespace_labels(namespace: str) -> dict[str, str]:
    # The API server labels every namespace with its name.
    return {"kubernetes.io/metadata.name": namespace}


def _peer_matches(peer: Doc, policy_namespace: str, other: Pod | None) -> bool:
    if other is None:  # an address outside the cluster: only ipBlock peers could match
        return False
    if "ipBlock" in peer:
        return False  # no ipBlock rules are used here; treat as not matching pods
    ns_selector = peer.get("namespaceSelector")
    pod_selector = peer.get("podSelector")
    if ns_selector is None:
        if other.namespace != policy_namespace:
            return False
    elif not label_selector_matches(ns_selector, namespace_labels(other.namespace)):
        return False
    return pod_selector is None or label_selector_matches(pod_selector, other.labels)


def _port_matches(ports: list[Doc] | None, port: int, protocol: str) -> bool:
    if not ports:
        return True
    for entry in ports:
        if entry.get("protocol", "TCP") != protocol:
            continue
        if "port" not in entry:
            return True
        low = entry["port"]
        high = entry.get("endPort", low)
        if isinstance(low, int) and low <= port <= high:
            return True
    return False


def _policy_types(policy: Doc) -> list[str]:
    spec = policy["spec"]
    if "policyTypes" in spec:
        return spec["policyTypes"]
    return ["Ingress", *(["Egress"] if spec.get("egress") else [])]


def _direction_allows(
    policies: list[Doc],
    subject: Pod,
    direction: str,
    other: Pod | None,
    port: int,
    protocol: str,
) -> bool:
    selecting = [
        p
        for p in policies
        if p["metadata"].get("namespace") == subject.namespace
        and direction in _policy_types(p)
        and label_selector_matches(p["spec"].get("podSelector", {}), subject.labels)
    ]
    if not selecting:
        return True
    rules_key, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    for policy in selecting:
        for rule in policy["spec"].get(rules_key) or []:
            if not _port_matches(rule.get("ports"), port, protocol):
                continue
            peers = rule.get(peers_key)
            if not peers:
                return True
            if any(_peer_matches(peer, subject.namespace, other) for peer in peers):
                return True
    return False


def allowed(
    policies: list[Doc], src: Pod, dst: Pod | None, port: int, protocol: str = "TCP"
) -> bool:
    """Can `src` open a connection to `dst` (None = outside the cluster) on `port`?"""
    if not _direction_allows(policies, src, "Egress", dst, port, protocol):
        return False
    if dst is None:
        return True
    return _direction_allows(policies, dst, "Ingress", src, port, protocol)
