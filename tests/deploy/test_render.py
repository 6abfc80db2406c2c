"""Every phase renders, phases are cumulative, and names, labels and references line up."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from tests.deploy.helpers import (
    CONFIG,
    CONFIG_MIRROR,
    MANIFESTS,
    MONITORING,
    NAMESPACE,
    PHASES,
    Doc,
    containers,
    find,
    key,
    pod_template,
    render,
    selector_matches,
    workloads,
)

# What each phase adds, by workload name (the contract's names).
NEW_WORKLOADS = {
    1: {"ollama"},
    2: {"vllm-inference"},
    3: {"synapse"},
    4: {"speaches-stt", "piper-tts"},
    5: set(),
}
SERVICE_PORTS = {  # Service → {port: container port}
    "ollama": {11434: 11434},
    "vllm-inference": {8001: 8000},
    "synapse": {8000: 8000, 11434: 11434, 9090: 9090},
    "speaches-stt": {8000: 8000},
    "piper-tts": {8000: 8000},
    "litellm-proxy": {4000: 4000},
}
CREATED_BY_HAND = {"synapse-master-key", "hf-token", "llm-tls-cert"}


@pytest.mark.parametrize("phase", PHASES)
def test_phase_renders_its_workloads(phase: int, targets: dict[str, Path]) -> None:
    docs = render(targets[f"phase{phase}"])
    names = {w["metadata"]["name"] for w in workloads(docs)}
    expected = set().union(*(NEW_WORKLOADS[n] for n in range(1, phase + 1)))
    assert names == expected


@pytest.mark.parametrize("phase", PHASES[1:])
def test_each_phase_keeps_the_previous_one_unchanged(
    phase: int, rendered: dict[str, list[Doc]]
) -> None:
    before = {key(d): d for d in rendered[f"phase{phase - 1}"]}
    after = {key(d): d for d in rendered[f"phase{phase}"]}
    missing = set(before) - set(after)
    assert not missing, f"phase {phase} drops {sorted(missing)}"
    changed = [k for k in before if before[k] != after[k]]
    assert not changed, f"phase {phase} changes {changed}"


def test_phase5_adds_ingress_and_monitoring_but_no_policy(rendered: dict[str, list[Doc]]) -> None:
    """Policies come last and only through their gated target (risk R8, issue 16.2); nothing in
    phase 5 reconfigures the cluster's Traefik (issue 16.6)."""
    added = {key(d) for d in rendered["phase5"]} - {key(d) for d in rendered["phase4"]}
    kinds = {k[0] for k in added}
    assert {"Ingress", "ServersTransport", "PrometheusRule"} <= kinds
    assert "NetworkPolicy" not in {d["kind"] for d in rendered["phase5"]}
    assert not any(d["kind"] == "HelmChartConfig" for d in rendered["everything"])
    assert all(key(d)[1] == NAMESPACE for d in rendered["everything"] if d["kind"] != "Namespace")


def test_final_is_phase5_plus_the_policies_only(rendered: dict[str, list[Doc]]) -> None:
    phase5 = {key(d): d for d in rendered["phase5"]}
    final = {key(d): d for d in rendered["final"]}
    added = set(final) - set(phase5)
    assert added and {k[0] for k in added} == {"NetworkPolicy"}
    assert all(final[k] == phase5[k] for k in phase5)


def test_litellm_variant_selects_only_litellm(rendered: dict[str, list[Doc]]) -> None:
    """`make deploy-litellm` applies the variant filtered by its label: LiteLLM's objects and
    the ConfigMap they mount, never the gateway, policies, ingress or Traefik (issue 16.3)."""
    selector = "synapse.arunlabs.com/variant=litellm"
    recipe = _make_dry_run("deploy-litellm")
    assert f"apply -k manifests/variants/litellm -l {selector}" in recipe
    label, value = selector.split("=")
    picked = [d for d in rendered["litellm"] if d["metadata"].get("labels", {}).get(label) == value]
    names = {
        (
            d["kind"],
            d["metadata"]["name"].rsplit("-", 1)[0]
            if d["kind"] == "ConfigMap"
            else d["metadata"]["name"],
        )
        for d in picked
    }
    assert names == {
        ("ConfigMap", "synapse-config"),
        ("Deployment", "litellm-proxy"),
        ("Service", "litellm-proxy"),
        ("PodDisruptionBudget", "litellm-proxy"),
        ("CronJob", "litellm-restart"),
        ("ServiceAccount", "litellm-restart-sa"),
        ("Role", "litellm-restart-role"),
        ("RoleBinding", "litellm-restart-binding"),
    }
    mounted = {
        v["configMap"]["name"]
        for v in pod_template(find(picked, "Deployment", "litellm-proxy"))["spec"]["volumes"]
        if "configMap" in v
    }
    assert mounted == {d["metadata"]["name"] for d in picked if d["kind"] == "ConfigMap"}


def test_deploy_phase5_applies_policies_last_through_the_gate() -> None:
    """Issue 16.2: phase 5 is applied open, then the policies only after the consumer check."""
    lines = _make_dry_run("deploy-phase5").splitlines()

    def first(text: str) -> int:
        return next(i for i, line in enumerate(lines) if text in line)

    opened = first("apply -k manifests/phases/phase5")
    gate = first("migrate-consumer verify --phase 3")
    policies = first("apply -k manifests/infra/networkpolicies")
    assert opened < gate < policies
    assert "exit 1" in " ".join(lines[gate:policies])  # a failed check stops the recipe


def _make_dry_run(target: str, *args: str) -> str:
    import subprocess

    from tests.deploy.helpers import REPO

    done = subprocess.run(
        ["make", "-s", "-n", target, "KUBECTL=kubectl", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_phase5_includes_monitoring(rendered: dict[str, list[Doc]]) -> None:
    spec = yaml.safe_load((MANIFESTS / "phases" / "phase5" / "kustomization.yaml").read_text())
    phase5_dir = MANIFESTS / "phases" / "phase5"
    assert MONITORING.resolve() in {(phase5_dir / r).resolve() for r in spec["resources"]}
    phase5 = {key(d) for d in rendered["phase5"]}
    monitoring = {key(d) for d in render(MONITORING)}
    assert monitoring, "monitoring/ renders nothing"
    assert monitoring <= phase5


def test_namespaces_and_contract_labels(everything: list[Doc]) -> None:
    for doc in everything:
        kind, namespace, name = key(doc)
        if kind in ("Namespace",):
            continue
        assert namespace == NAMESPACE, f"{kind}/{name} is in {namespace!r}"
    for doc in workloads(everything):
        name = doc["metadata"]["name"]
        for labels in (doc["metadata"]["labels"], pod_template(doc)["metadata"]["labels"]):
            assert labels.get("app.kubernetes.io/part-of") == "synapse", name
            assert labels.get("app") == labels.get("app.kubernetes.io/name"), name
            assert labels.get("app"), name
        if doc["kind"] == "Deployment":
            assert pod_template(doc)["metadata"]["labels"]["app"] == name


def test_services_match_the_contract(everything: list[Doc]) -> None:
    services = {d["metadata"]["name"]: d for d in everything if d["kind"] == "Service"}
    # A Service named "vllm" injects VLLM_PORT into pods, which vLLM misreads and crashes on.
    assert "vllm" not in services
    assert set(services) == set(SERVICE_PORTS)
    pods = [pod_template(w) for w in workloads(everything)]
    for name, service in services.items():
        matched = [
            p
            for p in pods
            if selector_matches(service["spec"]["selector"], p["metadata"]["labels"])
        ]
        assert len(matched) == 1, f"Service {name} selects {len(matched)} workloads"
        ports = {
            port["name"]: port["containerPort"]
            for c in matched[0]["spec"]["containers"]
            for port in c.get("ports", [])
        }
        resolved = {}
        for port in service["spec"]["ports"]:
            target = port["targetPort"]
            resolved[port["port"]] = ports[target] if isinstance(target, str) else target
        assert resolved == SERVICE_PORTS[name]


def test_volumes_refer_to_rendered_or_documented_objects(everything: list[Doc]) -> None:
    rendered_names = {(d["kind"], d["metadata"]["name"]) for d in everything}
    assert not any(d["kind"] == "Secret" for d in everything), "secrets are never committed"
    for doc in workloads(everything):
        spec = pod_template(doc)["spec"]
        for volume in spec.get("volumes") or []:
            if "persistentVolumeClaim" in volume:
                claim = volume["persistentVolumeClaim"]["claimName"]
                assert ("PersistentVolumeClaim", claim) in rendered_names, claim
            if "configMap" in volume:
                assert ("ConfigMap", volume["configMap"]["name"]) in rendered_names
        for container in containers(doc):
            for env in container.get("env") or []:
                ref = (env.get("valueFrom") or {}).get("secretKeyRef")
                if ref:
                    assert ref["name"] in CREATED_BY_HAND, ref


def test_pvcs_match_the_plan(phase5: list[Doc]) -> None:
    sizes = {
        d["metadata"]["name"]: d["spec"]["resources"]["requests"]["storage"]
        for d in phase5
        if d["kind"] == "PersistentVolumeClaim"
    }
    assert sizes["ollama-models"] == "200Gi"
    assert sizes["vllm-model-cache"] == "100Gi"
    for doc in phase5:
        if doc["kind"] == "PersistentVolumeClaim":
            assert doc["spec"]["storageClassName"] == "local-path"


def test_config_mirror_is_in_sync() -> None:
    assert CONFIG_MIRROR.read_bytes() == CONFIG.read_bytes(), (
        f"{CONFIG_MIRROR.relative_to(CONFIG.parents[1])} differs from config/litellm-config.yaml:"
        " run `make sync-config`"
    )


def test_gateway_configmap_carries_the_config_file(phase5: list[Doc]) -> None:
    maps = [
        d
        for d in phase5
        if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("synapse-config-")
    ]
    assert len(maps) == 1
    assert maps[0]["data"]["config.yaml"] == CONFIG_MIRROR.read_text()
    volumes = pod_template(find(phase5, "Deployment", "synapse"))["spec"]["volumes"]
    names = {v["configMap"]["name"] for v in volumes if "configMap" in v}
    assert names == {maps[0]["metadata"]["name"]}


def test_litellm_component_uses_the_same_configmap(everything: list[Doc]) -> None:
    def config_maps(name: str) -> set[str]:
        spec = pod_template(find(everything, "Deployment", name))["spec"]
        return {v["configMap"]["name"] for v in spec["volumes"] if "configMap" in v}

    assert config_maps("litellm-proxy") == config_maps("synapse")


def test_config_backends_are_services_of_the_manifests(phase5: list[Doc]) -> None:
    """Every api_base in config/litellm-config.yaml names a Service and port deployed here."""
    config = yaml.safe_load(CONFIG.read_text())
    services = {
        (d["metadata"]["name"], p["port"])
        for d in phase5
        if d["kind"] == "Service"
        for p in d["spec"]["ports"]
    }
    for entry in config["model_list"]:
        url = urlsplit(entry["litellm_params"]["api_base"])
        host = url.hostname or ""
        name, _, rest = host.partition(".")
        assert rest == f"{NAMESPACE}.svc.cluster.local", host
        assert (name, url.port) in services, f"{entry['model_name']}: {host}:{url.port}"
