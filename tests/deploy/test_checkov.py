"""Policy lint: checkov on the rendered manifests, with the skips of manifests/checkov/*.yaml.

Workloads are linted with the config of their group: most with base.yaml, the Speaches and
LiteLLM ones with a config that adds the skips their third-party images force. Every other object
(Services, NetworkPolicies, …) goes into each run, so checkov's graph checks see them.
checkov lives in .venv-checkov (`make deploy-tools`, a prerequisite of `make test`); the fixture
installs it the same way when pytest runs alone.
"""

from __future__ import annotations

import json
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.helpers import POD_KINDS, REPO, Doc

CHECKOV = REPO / ".venv-checkov" / "bin" / "checkov"
CONFIGS = REPO / "manifests" / "checkov"
# The first test may install checkov (~2 minutes) when `make deploy-tools` has not run.
pytestmark = pytest.mark.timeout(900)

GROUPS = {  # config file → the workloads it lints (base.yaml: all the others)
    "speaches.yaml": {"speaches-stt", "piper-tts"},
    "litellm.yaml": {"litellm-proxy", "litellm-restart"},
}


@pytest.fixture(scope="module")
def checkov() -> Path:
    if not CHECKOV.exists():
        done = subprocess.run(
            ["make", "-s", "deploy-tools"], cwd=REPO, capture_output=True, text=True, timeout=900
        )
        assert done.returncode == 0, f"make deploy-tools failed:\n{done.stdout}\n{done.stderr}"
    return CHECKOV


def _skips(config: str) -> list[str]:
    return yaml.safe_load((CONFIGS / config).read_text())["skip-check"]


def _run(checkov: Path, docs: list[Doc], workdir: Path, config: str | None) -> dict[str, Any]:
    target = workdir / f"{config or 'none'}-manifests.yaml"
    target.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    command = [str(checkov), "-f", str(target), "-o", "json", "--framework", "kubernetes"]
    if config:
        command += ["--config-file", str(CONFIGS / config)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=workdir)
    assert done.returncode in (0, 1), done.stderr
    report = json.loads(done.stdout)
    return report[0] if isinstance(report, list) else report


def _group_docs(everything: list[Doc]) -> dict[str, list[Doc]]:
    shared = [d for d in everything if d["kind"] not in POD_KINDS]
    grouped = {name for names in GROUPS.values() for name in names}
    groups = {
        config: shared
        + [d for d in everything if d["metadata"]["name"] in names and d["kind"] in POD_KINDS]
        for config, names in GROUPS.items()
    }
    groups["base.yaml"] = shared + [
        d for d in everything if d["kind"] in POD_KINDS and d["metadata"]["name"] not in grouped
    ]
    return groups


@pytest.fixture(scope="module")
def reports(
    checkov: Path, everything: list[Doc], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """One checkov run per config, plus one run of everything without skips; in parallel."""
    workdir = tmp_path_factory.mktemp("checkov")
    jobs = {config: docs for config, docs in _group_docs(everything).items()}
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = {c: pool.submit(_run, checkov, d, workdir, c) for c, d in jobs.items()}
        futures["unskipped"] = pool.submit(_run, checkov, everything, workdir, None)
        return {name: future.result() for name, future in futures.items()}


@pytest.mark.parametrize("config", ["base.yaml", *GROUPS])
def test_checkov_passes(config: str, reports: dict[str, Any]) -> None:
    report = reports[config]
    failed = [
        f"{c['check_id']} {c['check_name']}: {c['resource']}"
        for c in report["results"]["failed_checks"]
    ]
    assert not failed, "\n".join(failed)
    assert report["summary"]["passed"] > 50, "checkov checked almost nothing"


def test_every_workload_was_linted(reports: dict[str, Any], everything: list[Doc]) -> None:
    seen = {
        check["resource"]
        for config in ("base.yaml", *GROUPS)
        for check in reports[config]["results"]["passed_checks"]
    }
    for doc in everything:
        if doc["kind"] in POD_KINDS:
            assert f"{doc['kind']}.{doc['metadata']['namespace']}.{doc['metadata']['name']}" in seen


def test_every_skip_is_needed_and_justified(reports: dict[str, Any]) -> None:
    """A skip must fail without it (else it is stale) and sit under a comment saying why."""
    failing: dict[str, set[str]] = {}
    for check in reports["unskipped"]["results"]["failed_checks"]:
        failing.setdefault(check["check_id"], set()).add(check["resource"].rsplit(".", 1)[-1])
    base = set(_skips("base.yaml"))
    for check_id in base:
        assert check_id in failing, f"base.yaml skips {check_id}, which nothing fails"
    for config, names in GROUPS.items():
        extra = set(_skips(config)) - base
        assert base <= set(_skips(config)), f"{config} must keep base.yaml's skips"
        for check_id in extra:
            assert failing.get(check_id, set()) & names, f"{config}: {check_id} is stale"
    for config in ("base.yaml", *GROUPS):
        lines = (CONFIGS / config).read_text().splitlines()
        for number, line in enumerate(lines):
            if line.strip().startswith("- CKV"):
                previous = lines[number - 1].strip()
                assert previous.startswith(("#", "- CKV")), f"{config}:{number + 1} has no reason"
