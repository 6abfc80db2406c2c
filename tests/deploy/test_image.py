"""The gateway image (no engine here to build it): what its Dockerfile promises, read statically,
and the make targets that build and deploy it."""

from __future__ import annotations

import re
import subprocess
import tomllib

import pytest

from tests.deploy.helpers import REPO, find, pod_template

DOCKERFILE = REPO / "Dockerfile"


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            found.append((word.upper(), rest.strip()))
    return found


def test_base_images_are_pinned_slim_python() -> None:
    bases = [args.split()[0] for word, args in _instructions() if word == "FROM"]
    assert bases, "no FROM"
    for base in bases:
        # an exact patch release (python:3.11.N-slim-bookworm) or a digest
        assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", base), base


def test_runs_as_a_numeric_non_root_user() -> None:
    users = [args for word, args in _instructions() if word == "USER"]
    assert users, "no USER: the image would run as root"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) >= 10000, users[-1]  # numeric, so runAsNonRoot can verify
    gateway = (REPO / "manifests" / "apps" / "synapse" / "deployment.yaml").read_text()
    assert f"runAsUser: {uid}" in gateway


def test_serves_the_mounted_config_on_its_ports() -> None:
    instructions = _instructions()
    exposed = {p for word, args in instructions if word == "EXPOSE" for p in args.split()}
    assert exposed == {"8000", "11434", "9090"}  # 9090: /metrics only (metrics_port)
    entry = " ".join(args for word, args in instructions if word in ("ENTRYPOINT", "CMD"))
    assert '"synapse"' in entry and '"serve"' in entry
    assert '"/etc/synapse/config.yaml"' in entry


def test_installs_the_project_itself() -> None:
    runs = " ".join(args for word, args in _instructions() if word == "RUN")
    assert re.search(r"pip install [^&]*\.(\s|$)", runs), "the image must `pip install .`"
    pins = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    assert all("==" in pin for pin in pins), "runtime dependencies must be pinned"


def test_dockerignore_keeps_secrets_and_venvs_out() -> None:
    rules = (REPO / ".dockerignore").read_text().splitlines()
    assert "*" in rules  # deny by default, then allow what the build copies
    allowed = {r[1:].rstrip("/") for r in rules if r.startswith("!")}
    copied = {
        part.rstrip("/")
        for word, args in _instructions()
        if word == "COPY" and "--from" not in args
        for part in args.split()[:-1]
    }
    assert copied <= allowed, copied - allowed


def _make_dry_run(*targets: str) -> str:
    done = subprocess.run(
        ["make", "-n", "--no-print-directory", *targets],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize("phase", [1, 2, 3, 4, 5])
def test_deploy_targets_apply_their_phase(phase: int) -> None:
    commands = _make_dry_run(f"deploy-phase{phase}", "KUBECTL=kubectl")
    assert f"kubectl apply -k manifests/phases/phase{phase}" in commands
    assert (REPO / "manifests" / "phases" / f"phase{phase}" / "kustomization.yaml").is_file()


def test_image_target_names_the_deployed_image(phase5: list) -> None:
    commands = _make_dry_run("image")
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert f"synapse:{version}" in commands
    assert "k3s ctr images import" in commands
    (container,) = pod_template(find(phase5, "Deployment", "synapse"))["spec"]["containers"]
    assert container["image"] == f"synapse:{version}"


def test_master_key_target_generates_the_key_at_run_time() -> None:
    commands = _make_dry_run("secret-master-key")
    assert "create secret generic synapse-master-key" in commands
    assert "--from-literal=master-key=" in commands
    assert "secrets.token_urlsafe" in commands  # generated at run time, not written in the repo
