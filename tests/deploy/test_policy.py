"""Project rules for the rendered workloads: pinned images, resources, hardening, and what the
issue asks of each app (the gateway's drain, vLLM's GPU settings, Ollama's CPU mode, …)."""

from __future__ import annotations

import json
import re
import tomllib

import pytest
import yaml

from tests.deploy.helpers import CONFIG, REPO, Doc, containers, find, pod_template, workloads

# Third-party images whose own user or start-up writes rule out part of the hardening; each
# exception is also a justified checkov skip (manifests/checkov/).
WRITABLE_ROOT = {"litellm-proxy"}  # LiteLLM writes into its image at start-up (as nobody)
TOKEN_NEEDED = {"litellm-restart"}  # kubectl rollout restart talks to the API server


def _version(tag: str) -> tuple[int, ...]:
    match = re.match(r"v?(\d+)\.(\d+)(?:\.(\d+))?", tag)
    assert match, f"tag {tag!r} is not a version"
    return tuple(int(p or 0) for p in match.groups())


def _images(docs: list[Doc]) -> dict[str, str]:
    """container image → workload name, for every container."""
    return {c["image"]: w["metadata"]["name"] for w in workloads(docs) for c in containers(w)}


def _env(container: Doc) -> dict[str, Doc]:
    return {e["name"]: e for e in container.get("env") or []}


def test_every_image_is_pinned(everything: list[Doc]) -> None:
    for image, owner in _images(everything).items():
        name, _, digest = image.partition("@")
        repository, _, tag = name.rpartition(":")
        assert repository and "/" not in tag, f"{owner}: {image} has no tag"
        assert tag != "latest" and "latest" not in tag, f"{owner}: {image}"
        _version(tag)  # an exact version, not a moving name such as "stable" or "main"
        assert not digest or re.fullmatch(r"sha256:[0-9a-f]{64}", digest), image


def test_litellm_release_is_safe(everything: list[Doc]) -> None:
    images = [
        i for i in _images(everything) if i.split(":")[0].startswith("ghcr.io/berriai/litellm")
    ]
    assert len(images) == 1
    version = _version(images[0].rsplit(":", 1)[1])
    assert version >= (1, 83, 7), "needs the CVE-2026-42208 fix"
    assert version not in {(1, 82, 7), (1, 82, 8)}, "compromised release"


def test_vllm_is_recent_enough_for_blackwell(everything: list[Doc]) -> None:
    images = [i for i in _images(everything) if i.startswith("vllm/vllm-openai:")]
    assert len(images) == 1
    assert _version(images[0].split(":")[1]) >= (0, 9, 2)  # first release supporting sm_120


def test_kubectl_image_is_the_official_one(everything: list[Doc]) -> None:
    cron = find(everything, "CronJob", "litellm-restart")
    (image,) = [c["image"] for c in containers(cron)]
    assert image.startswith("registry.k8s.io/kubectl:v")


def test_every_container_has_requests_and_limits(everything: list[Doc]) -> None:
    for workload in workloads(everything):
        for container in containers(workload):
            resources = container.get("resources") or {}
            for section in ("requests", "limits"):
                for resource in ("cpu", "memory"):
                    assert resource in (resources.get(section) or {}), (
                        f"{workload['metadata']['name']}/{container['name']}: no {section}.{resource}"
                    )


def test_pods_are_hardened(everything: list[Doc]) -> None:
    for workload in workloads(everything):
        name = workload["metadata"]["name"]
        spec = pod_template(workload)["spec"]
        pod_security = spec.get("securityContext") or {}
        assert not spec.get("hostNetwork") and not spec.get("hostPID") and not spec.get("hostIPC")
        assert not any("hostPath" in v for v in spec.get("volumes") or []), name
        assert spec.get("automountServiceAccountToken") is (name in TOKEN_NEEDED), name
        for container in containers(workload):
            security = container.get("securityContext") or {}
            seccomp = security.get("seccompProfile") or pod_security.get("seccompProfile") or {}
            assert seccomp.get("type") == "RuntimeDefault", name
            assert security.get("allowPrivilegeEscalation") is False, name
            assert not security.get("privileged"), name
            assert security.get("capabilities", {}).get("drop") == ["ALL"], name
            assert not security.get("capabilities", {}).get("add"), name
            non_root = security.get("runAsNonRoot", pod_security.get("runAsNonRoot"))
            uid = security.get("runAsUser", pod_security.get("runAsUser"))
            assert non_root is True and uid, f"{name}: must run as a non-root UID"
            if name not in WRITABLE_ROOT:
                assert security.get("readOnlyRootFilesystem") is True, name


def test_long_running_containers_have_probes(everything: list[Doc]) -> None:
    for workload in workloads(everything):
        if workload["kind"] != "Deployment":
            continue
        for container in containers(workload, init=False):
            for probe in ("livenessProbe", "readinessProbe"):
                assert "httpGet" in container.get(probe, {}), (
                    f"{workload['metadata']['name']}: {probe} must be an HTTP probe"
                )


# --- the gateway -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gateway(phase5: list[Doc]) -> Doc:
    return find(phase5, "Deployment", "synapse")


def test_gateway_rollout_keeps_two_pods_serving(gateway: Doc, phase5: list[Doc]) -> None:
    spec = gateway["spec"]
    assert spec["replicas"] == 2
    assert spec["strategy"]["type"] == "RollingUpdate"
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    pdb = find(phase5, "PodDisruptionBudget", "synapse")
    assert pdb["spec"]["selector"] == spec["selector"]
    assert 1 <= pdb["spec"]["minAvailable"] < spec["replicas"]  # a drain can still proceed


def test_gateway_probes_use_the_health_paths(gateway: Doc) -> None:
    (container,) = containers(gateway)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": 8000, "ollama": 11434, "metrics": 9090}
    assert container["readinessProbe"]["httpGet"]["path"] == "/health/readiness"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health/liveliness"
    assert container["startupProbe"]["httpGet"]["path"] == "/health/liveliness"
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["port"] in ("http", 8000)  # the keyed port serves them


def test_gateway_grace_period_covers_the_drain(gateway: Doc) -> None:
    """preStop + drain_delay + shutdown_grace must end before Kubernetes sends SIGKILL."""
    settings = yaml.safe_load(CONFIG.read_text()).get("synapse_settings") or {}
    drain = float(settings.get("drain_delay", 5))
    grace = float(settings.get("shutdown_grace", 25))
    (container,) = containers(gateway)
    pre_stop = 0.0
    hook = container.get("lifecycle", {}).get("preStop")
    if hook:
        if "sleep" in hook:
            pre_stop = float(hook["sleep"]["seconds"])
        else:
            command = hook["exec"]["command"]
            assert command[0] == "sleep", command
            pre_stop = float(command[1])
    total = pod_template(gateway)["spec"]["terminationGracePeriodSeconds"]
    assert total >= pre_stop + drain + grace + 5, (total, pre_stop, drain, grace)
    assert total <= pre_stop + drain + grace + 30  # not so long that a stuck pod lingers


def test_gateway_runs_the_image_version_with_the_config(gateway: Doc) -> None:
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    (container,) = containers(gateway)
    assert container["image"] == f"synapse:{version}"
    assert container["imagePullPolicy"] in ("IfNotPresent", "Never")  # a locally imported image
    command = [*container.get("command", []), *container["args"]]
    assert "serve" in command
    assert "--config=/etc/synapse/config.yaml" in command
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts["/etc/synapse"]["readOnly"] is True
    assert "subPath" not in mounts["/etc/synapse"]  # subPath mounts never see ConfigMap updates
    (config_volume,) = [
        v
        for v in pod_template(gateway)["spec"]["volumes"]
        if v["name"] == mounts["/etc/synapse"]["name"]
    ]
    assert config_volume["configMap"]["items"] == [{"key": "config.yaml", "path": "config.yaml"}]


def test_gateway_master_key_comes_from_the_secret(gateway: Doc) -> None:
    config = yaml.safe_load(CONFIG.read_text())
    assert config["general_settings"]["master_key"] == "os.environ/SYNAPSE_MASTER_KEY"
    (container,) = containers(gateway)
    ref = _env(container)["SYNAPSE_MASTER_KEY"]["valueFrom"]["secretKeyRef"]
    assert (ref["name"], ref["key"]) == ("synapse-master-key", "master-key")
    assert not ref.get("optional"), "the gateway must not start without its key"
    settings = config.get("synapse_settings") or {}
    assert settings.get("ollama_port", 11434) == 11434


# --- backends --------------------------------------------------------------------------------


def test_ollama_is_cpu_only_and_sized_as_planned(phase5: list[Doc]) -> None:
    ollama = find(phase5, "Deployment", "ollama")
    assert ollama["spec"]["strategy"]["type"] == "Recreate"
    (container,) = containers(ollama)
    env = {k: v.get("value") for k, v in _env(container).items()}
    assert env["CUDA_VISIBLE_DEVICES"] == "-1"
    assert env["NVIDIA_VISIBLE_DEVICES"] == "void"
    assert env["OLLAMA_MAX_LOADED_MODELS"] == "2"  # fallback LLM + embeddings (issue 16.8)
    keep_alive = env["OLLAMA_KEEP_ALIVE"]
    assert keep_alive.startswith("-") or re.fullmatch(r"\d+h", keep_alive), keep_alive
    assert container["resources"] == {
        "requests": {"cpu": "4", "memory": "16Gi"},
        "limits": {"cpu": "16", "memory": "64Gi"},
    }
    assert "nvidia.com/gpu" not in json.dumps(container["resources"])
    assert "runtimeClassName" not in pod_template(ollama)["spec"]


def test_vllm_settings(phase5: list[Doc]) -> None:
    vllm = find(phase5, "Deployment", "vllm-inference")
    spec = pod_template(vllm)["spec"]
    assert vllm["spec"]["strategy"]["type"] == "Recreate"  # one GPU: never two pods at once
    assert spec["runtimeClassName"] == "nvidia"
    assert spec["enableServiceLinks"] is False
    (container,) = containers(vllm)
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    args = [*container.get("command", []), *container["args"]]
    assert "--gpu-memory-utilization=0.85" in args
    assert "--max-model-len=8192" in args
    assert "--enforce-eager" not in args  # only a documented fallback (risk R1)
    # Consumers' tool calls: vLLM refuses tool_choice "auto" without these (issue 13.3).
    assert "--enable-auto-tool-choice" in args
    assert "--tool-call-parser=llama3_json" in args
    served = yaml.safe_load(CONFIG.read_text())["model_list"]
    hosted = [
        m["litellm_params"]["model"] for m in served if "vllm" in m["litellm_params"]["model"]
    ]
    assert [h.split("/", 1)[1] for h in hosted] == ["meta-llama/Meta-Llama-3.1-8B-Instruct"]
    assert "meta-llama/Meta-Llama-3.1-8B-Instruct" in args
    token = _env(container)["HF_TOKEN"]["valueFrom"]["secretKeyRef"]
    assert token["name"] == "hf-token" and token["optional"] is True
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 30 * 60
    shm = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}["/dev/shm"]
    (volume,) = [v for v in spec["volumes"] if v["name"] == shm]
    assert volume["emptyDir"]["medium"] == "Memory"


@pytest.mark.parametrize(
    ("workload", "model_group"),
    [("speaches-stt", "whisper-large-v3"), ("piper-tts", "piper-tts")],
)
def test_speaches_preloads_the_models_the_gateway_routes_to(
    workload: str, model_group: str, phase5: list[Doc]
) -> None:
    config = yaml.safe_load(CONFIG.read_text())
    (entry,) = [m for m in config["model_list"] if m["model_name"] == model_group]
    model = entry["litellm_params"]["model"].split("/", 1)[1]  # drop the "openai/" provider
    (container,) = containers(find(phase5, "Deployment", workload))
    assert container["image"].endswith("-cpu")  # CPU build: the GPU is vLLM's
    env = {k: v.get("value") for k, v in _env(container).items()}
    assert model in json.loads(env["PRELOAD_MODELS"])
    assert env["NVIDIA_VISIBLE_DEVICES"] == "void"


def test_speech_budget_matches_the_plan(phase5: list[Doc]) -> None:
    (stt,) = containers(find(phase5, "Deployment", "speaches-stt"))
    (tts,) = containers(find(phase5, "Deployment", "piper-tts"))
    assert stt["resources"] == {
        "requests": {"cpu": "4", "memory": "8Gi"},
        "limits": {"cpu": "8", "memory": "16Gi"},
    }
    assert tts["resources"]["requests"]["memory"] == "1Gi"
    assert tts["resources"]["limits"]["memory"] == "4Gi"


# --- ingress and the LiteLLM component ---------------------------------------------------------


def test_ingress_exposes_only_the_keyed_port(phase5: list[Doc]) -> None:
    ingresses = [d for d in phase5 if d["kind"] == "Ingress"]
    assert len(ingresses) == 1
    ingress = ingresses[0]
    annotations = ingress["metadata"]["annotations"]
    assert annotations["traefik.ingress.kubernetes.io/router.entrypoints"] == "websecure"
    assert annotations["traefik.ingress.kubernetes.io/router.tls"] == "true"
    assert ingress["spec"]["tls"] == [{"hosts": ["llm.arunlabs.com"], "secretName": "llm-tls-cert"}]
    backends = [
        path["backend"]["service"]
        for rule in ingress["spec"]["rules"]
        for path in rule["http"]["paths"]
    ]
    assert [rule["host"] for rule in ingress["spec"]["rules"]] == ["llm.arunlabs.com"]
    assert backends == [{"name": "synapse", "port": {"name": "http"}}]
    service = find(phase5, "Service", "synapse")
    (http,) = [p for p in service["spec"]["ports"] if p["name"] == "http"]
    assert http["port"] == 8000


def test_metrics_have_their_own_port_that_no_ingress_routes_to(phase5: list[Doc]) -> None:
    """Issue 15.11: /metrics is served only on metrics_port (9090), which the Ingress never
    reaches; the probes stay on the API port's /health/*."""
    (container,) = containers(find(phase5, "Deployment", "synapse"))
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": 8000, "ollama": 11434, "metrics": 9090}
    config = yaml.safe_load(CONFIG.read_text())
    assert (config.get("synapse_settings") or {}).get("metrics_port", 9090) == 9090
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["port"] == "http"
        assert container[probe]["httpGet"]["path"].startswith("/health/")
    routed = {
        path["backend"]["service"]["port"].get("name")
        for doc in phase5
        if doc["kind"] == "Ingress"
        for rule in doc["spec"]["rules"]
        for path in rule["http"]["paths"]
    }
    assert routed == {"http"}


def test_litellm_restart_job_can_do_exactly_its_job(everything: list[Doc]) -> None:
    cron = find(everything, "CronJob", "litellm-restart")
    assert cron["spec"]["schedule"] == "0 4 * * *"
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    spec = pod_template(cron)["spec"]
    (container,) = containers(cron)
    assert container["command"][-3:] == ["rollout", "restart", "deployment/litellm-proxy"]
    binding = find(everything, "RoleBinding", "litellm-restart-binding")
    assert binding["subjects"][0]["name"] == spec["serviceAccountName"]
    role = find(everything, "Role", binding["roleRef"]["name"])
    assert role["rules"] == [
        {
            "apiGroups": ["apps"],
            "resources": ["deployments"],
            "resourceNames": ["litellm-proxy"],
            "verbs": ["get", "patch"],
        }
    ]
    litellm = find(everything, "Deployment", "litellm-proxy")
    assert litellm["spec"]["replicas"] == 2
    assert litellm["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
