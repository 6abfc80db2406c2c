"""`synapse budget`: the real phases pass; small synthetic manifests break each rule."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
import yaml

from synapse import cli
from synapse.ops import budget
from tests.deploy.helpers import PHASES, REPO, Doc, containers, find

GI = 1024**3


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def _synapse(*args: str, stdin: str | None = None) -> Result:
    """`synapse budget ARGS` in this process (the CLI's own entry point, minus a fork)."""
    out, err = io.StringIO(), io.StringIO()
    saved = sys.stdin
    sys.stdin = io.StringIO(stdin or "")
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli.main(["budget", *args])
    finally:
        sys.stdin = saved
    return Result(code, out.getvalue(), err.getvalue())


def _deployment(
    name: str,
    memory_limit: str | None = "1Gi",
    replicas: int = 1,
    cpu_request: str = "1",
    memory_request: str = "1Gi",
    gpu: int = 0,
) -> Doc:
    limits: dict[str, Any] = {"cpu": "2"}
    if memory_limit:
        limits["memory"] = memory_limit
    requests: dict[str, Any] = {"cpu": cpu_request, "memory": memory_request}
    if gpu:
        limits["nvidia.com/gpu"] = requests["nvidia.com/gpu"] = str(gpu)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "llm-infra"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "containers": [
                        {
                            "name": name,
                            "image": f"{name}:1.0",
                            "resources": {"requests": requests, "limits": limits},
                        }
                    ]
                },
            },
        },
    }


def _kustomization(tmp_path: Path, docs: list[Doc]) -> Path:
    """A real kustomization directory, so the kubectl rendering path is the one exercised."""
    (tmp_path / "workloads.yaml").write_text(yaml.safe_dump_all(docs))
    (tmp_path / "kustomization.yaml").write_text("resources:\n  - workloads.yaml\n")
    return tmp_path


def _json(done: Result) -> dict[str, Any]:
    return json.loads(done.stdout)


# --- the real phases ---------------------------------------------------------------------------


def test_phase5_is_within_budget(phase5: list[Doc]) -> None:
    done = _synapse("--phase", "5", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    report = _json(done)
    assert report["ok"] and not report["violations"]
    totals = report["totals"]
    assert totals["memory_limit_bytes"] <= 157 * GI
    assert totals["gpu"] == 1
    by_name = {w["name"]: w for w in report["workloads"]}
    assert by_name["vllm-inference"]["phase"] == 2 and by_name["synapse"]["phase"] == 3
    # replicas counted: the gateway's total is twice one pod's limit
    (gateway,) = containers(find(phase5, "Deployment", "synapse"))
    one_pod = budget.parse_quantity(gateway["resources"]["limits"]["memory"])
    assert by_name["synapse"]["replicas"] == 2
    assert by_name["synapse"]["memory_limit_bytes"] == 2 * one_pod
    assert totals["memory_limit_bytes"] == sum(w["memory_limit_bytes"] for w in report["workloads"])


@pytest.mark.parametrize("phase", PHASES[:-1])
def test_earlier_phases_are_within_budget(phase: int) -> None:
    done = _synapse("--phase", str(phase), "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    assert {w["phase"] for w in _json(done)["workloads"]} <= set(range(1, phase + 1))


def test_command_prints_the_budget_table() -> None:
    """The installed command, as `make budget` runs it: a real process, exit status 0."""
    done = subprocess.run(
        [sys.executable, "-m", "synapse", "budget", "--phase", "5"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    for text in ("ollama", "vllm-inference", "synapse", "157Gi", "within budget"):
        assert text in done.stdout


def test_litellm_variant_is_within_budget() -> None:
    done = _synapse("--path", str(REPO / "manifests" / "variants" / "litellm"), "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    names = {w["name"] for w in _json(done)["workloads"]}
    assert {"litellm-proxy", "litellm-restart"} <= names


# --- rules broken on purpose -----------------------------------------------------------------


def test_limits_above_157gi_fail(tmp_path: Path) -> None:
    path = _kustomization(tmp_path, [_deployment("a", "80Gi"), _deployment("b", "78Gi")])
    done = _synapse("--path", str(path), "--json")
    assert done.returncode == 1
    report = _json(done)
    assert report["totals"]["memory_limit_bytes"] == 158 * GI
    assert any("exceed the 157Gi budget" in v for v in report["violations"])


def test_replicas_are_counted(tmp_path: Path) -> None:
    fits = _synapse(
        "--file", "-", "--json", stdin=yaml.safe_dump(_deployment("a", "60Gi", replicas=2))
    )
    assert fits.returncode == 0, fits.stdout
    over = _synapse(
        "--file", "-", "--json", stdin=yaml.safe_dump(_deployment("a", "60Gi", replicas=3))
    )
    assert over.returncode == 1
    assert _json(over)["totals"]["memory_limit_bytes"] == 180 * GI


def test_requests_above_the_node_fail(tmp_path: Path) -> None:
    cpu = _synapse(
        "--file", "-", "--json", stdin=yaml.safe_dump(_deployment("a", cpu_request="65"))
    )
    assert cpu.returncode == 1
    assert _json(cpu)["violations"] == ["CPU requests 65 exceed the node's 64 cores"]
    memory = _synapse(
        "--file",
        "-",
        "--json",
        stdin=yaml.safe_dump(_deployment("a", "200Gi", memory_request="197Gi")),
    )
    assert memory.returncode == 1
    assert any(
        "memory requests 197Gi exceed the node's 196Gi" in v for v in _json(memory)["violations"]
    )


def test_a_second_gpu_workload_fails(tmp_path: Path) -> None:
    docs = [_deployment("vllm", gpu=1), _deployment("ollama", gpu=1)]
    done = _synapse("--path", str(_kustomization(tmp_path, docs)), "--json")
    assert done.returncode == 1
    assert any("2 workloads ask for the GPU" in v for v in _json(done)["violations"])
    # two replicas of one GPU workload also need two GPUs
    twice = _synapse(
        "--file", "-", "--json", stdin=yaml.safe_dump(_deployment("vllm", gpu=1, replicas=2))
    )
    assert twice.returncode == 1
    assert any("2 GPUs requested" in v for v in _json(twice)["violations"])


def test_a_container_without_memory_limit_fails() -> None:
    done = _synapse(
        "--file", "-", "--json", stdin=yaml.safe_dump(_deployment("a", memory_limit=None))
    )
    assert done.returncode == 1
    report = _json(done)
    assert report["totals"]["memory_limit_bytes"] is None
    assert "Deployment/a container a has no memory limit" in report["violations"]


def test_render_errors_exit_2(tmp_path: Path) -> None:
    done = _synapse("--path", str(tmp_path))  # no kustomization.yaml here
    assert done.returncode == 2
    assert "kubectl kustomize" in done.stderr


def test_manifests_are_found_from_anywhere_in_the_checkout(tmp_path: Path) -> None:
    manifests = REPO / "manifests"
    assert budget.find_manifests(manifests / "apps" / "ollama") == manifests
    # outside any checkout, an editable install falls back to its own source tree
    assert budget.find_manifests(tmp_path) == manifests


# --- arithmetic ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("500m", Fraction(1, 2)),
        ("4", Fraction(4)),
        ("0.25", Fraction(1, 4)),
        ("16Gi", 16 * GI),
        ("1.5Gi", 3 * GI // 2),
        ("128Mi", 128 * 1024**2),
        ("1G", 10**9),
        ("1e3", Fraction(1000)),
        (2, Fraction(2)),
    ],
)
def test_quantities(text: str | int, value: Fraction) -> None:
    assert budget.parse_quantity(text) == value


@pytest.mark.parametrize("text", ["", "Gi", "lots", "1Zi"])
def test_bad_quantities_are_errors(text: str) -> None:
    with pytest.raises(ValueError):
        budget.parse_quantity(text)


def test_init_containers_count_at_their_peak_and_cronjobs_count() -> None:
    pod = _deployment("app", "10Gi")["spec"]["template"]["spec"]
    pod["initContainers"] = [
        {
            "name": "fetch",
            "resources": {"requests": {"memory": "1Gi"}, "limits": {"cpu": "1", "memory": "100Gi"}},
        },
        {
            "name": "proxy",
            "restartPolicy": "Always",
            "resources": {"limits": {"cpu": "1", "memory": "1Gi"}},
        },
    ]
    resources = budget.pod_resources(pod)
    assert resources.memory_limit == 100 * GI  # the big init container runs alone
    # requests: app (1Gi) + sidecar (1Gi: a missing request defaults to the limit) > init (1Gi)
    assert resources.memory_request == 2 * GI
    cron = {
        "kind": "CronJob",
        "metadata": {"name": "job"},
        "spec": {"jobTemplate": {"spec": {"template": {"spec": pod}}}},
    }
    (found,) = budget.workloads([cron])
    assert (found.kind, found.replicas, found.pod.memory_limit) == ("CronJob", 1, 100 * GI)
