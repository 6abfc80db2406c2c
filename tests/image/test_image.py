"""The built image, run the way manifests/apps/synapse/deployment.yaml runs it: its user, a
read-only root filesystem, every capability dropped, no privilege escalation, the config
mounted read-only at /etc/synapse and a tmpfs at /tmp only. The network stays on loopback
(`--network host`, stub backends on 127.0.0.1), so the Deployment's ports become free ones.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import ollama
import openai
import pytest
import yaml

from tests.conftest import MASTER_KEY, ROOT, Backend, free_port, routing_config
from tests.image.conftest import BASE, FIGURES, IMAGE, docker

DEPLOYMENT = ROOT / "manifests" / "apps" / "synapse" / "deployment.yaml"
LOOPBACK_ARGS = ("--host", "--port", "--ollama-port")  # replaced: host network, free ports


def _deployment() -> dict[str, Any]:
    return next(
        doc
        for doc in yaml.safe_load_all(DEPLOYMENT.read_text())
        if doc and doc.get("kind") == "Deployment"
    )


def deployment_run_flags(config_dir: Path) -> tuple[list[str], list[str], int]:
    """(docker run flags, the container's args, stop grace in s) from the Deployment; a
    setting the mapping does not know fails the test rather than being skipped silently."""
    pod = _deployment()["spec"]["template"]["spec"]
    (container,) = [c for c in pod["containers"] if c["name"] == "synapse"]
    pod_sec, sec = pod.get("securityContext", {}), container.get("securityContext", {})
    user, group = (
        sec.get("runAsUser", pod_sec["runAsUser"]),
        sec.get("runAsGroup", pod_sec["runAsGroup"]),
    )
    flags = ["--user", f"{user}:{group}"]
    if sec.get("readOnlyRootFilesystem"):
        flags.append("--read-only")
    for cap in sec.get("capabilities", {}).get("drop", []):
        flags += ["--cap-drop", cap]
    if sec.get("allowPrivilegeEscalation") is False:
        flags += ["--security-opt", "no-new-privileges"]
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for mount in container.get("volumeMounts", []):
        volume = volumes[mount["name"]]
        if "configMap" in volume:
            mode = "ro" if mount.get("readOnly") else "rw"
            flags += ["-v", f"{config_dir}:{mount['mountPath']}:{mode}"]
        elif "emptyDir" in volume:
            flags += ["--tmpfs", f"{mount['mountPath']}:uid={user},gid={group}"]
        else:
            raise AssertionError(f"volume {mount['name']}: no docker equivalent known here")
    args = [container["command"][0], *container["args"]]
    args = [a for a in args if not a.startswith(tuple(f"{f}=" for f in LOOPBACK_ARGS))]
    return flags, args, int(pod.get("terminationGracePeriodSeconds", 30))


class Container:
    def __init__(self, config: dict[str, Any], config_dir: Path) -> None:
        self.port, self.ollama_port = free_port(), free_port()
        self.metrics_port = config["synapse_settings"]["metrics_port"]
        self.url = f"http://127.0.0.1:{self.port}"
        self.ollama_url = f"http://127.0.0.1:{self.ollama_port}"
        (config_dir / "config.yaml").write_text(yaml.safe_dump(config))
        config_dir.chmod(0o755)
        (config_dir / "config.yaml").chmod(0o644)
        flags, args, self.grace = deployment_run_flags(config_dir)
        self.name = f"synapse-image-test-{self.port}"
        loopback = ["--host=127.0.0.1", f"--port={self.port}", f"--ollama-port={self.ollama_port}"]
        docker(
            "run", "-d", "--name", self.name, "--network", "host",
            "-e", f"SYNAPSE_MASTER_KEY={MASTER_KEY}", *flags,
            "--entrypoint", args[0], IMAGE, *args[1:], *loopback,
        )  # fmt: skip
        try:
            self.pid = int(docker("inspect", "-f", "{{.State.Pid}}", self.name))
            self._wait_ready()
        except BaseException:
            self.remove()
            raise

    def _wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if docker("inspect", "-f", "{{.State.Running}}", self.name) != "true":
                raise AssertionError(f"container exited:\n{self.logs()}")
            try:
                if httpx.get(self.url + "/health/readiness", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"not ready within {timeout} s:\n{self.logs()}")

    def logs(self) -> str:
        return docker("logs", "--tail", "40", self.name, check=False)

    def proc_status(self) -> dict[str, str]:
        """The gateway process's /proc status as the host kernel sees it."""
        lines = Path(f"/proc/{self.pid}/status").read_text().splitlines()
        return {k: v.strip() for k, _, v in (line.partition(":") for line in lines)}

    def remove(self) -> None:
        docker("rm", "-f", self.name, check=False)


@pytest.fixture(scope="module")
def container(
    openai_backend: Backend, ollama_backend: Backend, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Container]:
    config = routing_config(
        openai_backend, ollama_backend, metrics_port=free_port(), drain_delay=1, shutdown_grace=10
    )
    c = Container(config, tmp_path_factory.mktemp("etc-synapse"))
    FIGURES["image"] = f"{IMAGE} on base {BASE or '?'}, {_image_size()}"
    yield c
    c.remove()


def _image_size() -> str:
    size = int(docker("image", "inspect", "-f", "{{.Size}}", IMAGE))
    return f"{size / 1e6:.0f} MB"


def test_runs_as_the_deployments_user_without_privileges(container: Container) -> None:
    status = container.proc_status()
    assert status["Uid"].split() == ["10001"] * 4, status["Uid"]
    assert status["Gid"].split() == ["10001"] * 4, status["Gid"]
    assert int(status["CapEff"], 16) == 0 and int(status["CapPrm"], 16) == 0, status
    assert int(status["CapBnd"], 16) == 0, status["CapBnd"]  # cap-drop ALL
    assert status["NoNewPrivs"] == "1"


def test_root_filesystem_is_read_only_and_tmp_writable(container: Container) -> None:
    probe = "import pathlib, sys; pathlib.Path(sys.argv[1]).write_text('x'); print('wrote')"
    root = docker("exec", container.name, "python", "-c", probe, "/probe", check=False)
    assert "wrote" not in root
    assert docker("exec", container.name, "python", "-c", probe, "/tmp/probe") == "wrote"


def test_chat_through_the_image(container: Container, openai_backend: Backend) -> None:
    client = openai.OpenAI(base_url=container.url + "/v1", api_key=MASTER_KEY, max_retries=0)
    before = openai_backend.stats()["calls"]
    answer = client.chat.completions.create(
        model="llama-gpu", messages=[{"role": "user", "content": "hello"}]
    )
    assert answer.choices[0].message.content
    assert openai_backend.stats()["calls"] == before + 1  # it reached the stub


def test_api_embed_through_the_image(container: Container) -> None:
    client = ollama.Client(host=container.ollama_url)
    answer = client.embed(model="mxbai-embed-large", input=["hello", "world"])
    assert len(answer.embeddings) == 2 and all(answer.embeddings)


def test_metrics_on_the_metrics_port(container: Container) -> None:
    text = httpx.get(f"http://127.0.0.1:{container.metrics_port}/metrics", timeout=5).text
    assert "synapse_requests_total{" in text and 'model="llama-gpu"' in text  # the chat above
    # never on the API port, which the Ingress exposes
    assert httpx.get(container.url + "/metrics", timeout=5).status_code != 200
    FIGURES["gateway RSS after the calls"] = container.proc_status()["VmRSS"]


def test_nothing_written_outside_tmp(container: Container) -> None:
    assert docker("diff", container.name) == ""


def test_docker_stop_drains_and_exits_zero(container: Container, openai_backend: Backend) -> None:
    """A request in flight when `docker stop` sends SIGTERM still gets its answer; the
    process then exits 0 within the Deployment's grace period (no SIGKILL: that is 137)."""
    openai_backend.control(mode="slow", delay=2)
    client = openai.OpenAI(base_url=container.url + "/v1", api_key=MASTER_KEY, max_retries=0)
    answers: list[Any] = []

    def ask() -> None:
        try:
            answers.append(
                client.chat.completions.create(
                    model="llama-gpu", messages=[{"role": "user", "content": "slow"}], timeout=30
                )
            )
        except Exception as exc:  # reported by the assertion below
            answers.append(exc)

    before = openai_backend.stats()["calls"]
    asker = threading.Thread(target=ask)
    asker.start()
    deadline = time.monotonic() + 10
    while openai_backend.stats()["calls"] == before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert openai_backend.stats()["calls"] == before + 1, "the slow request never arrived"
    docker("stop", "-t", str(container.grace), container.name, timeout=container.grace + 30)
    asker.join(timeout=30)
    assert answers and not isinstance(answers[0], Exception), answers
    assert answers[0].choices[0].message.content
    state = docker("inspect", "-f", "{{.State.ExitCode}} {{.State.OOMKilled}}", container.name)
    assert state == "0 false", f"{state}\n{container.logs()}"
    assert docker("diff", container.name) == ""
