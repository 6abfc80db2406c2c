"""Child processes that are started, watched, restarted when they die and stopped together.

The local stack is several servers; a newcomer should see one command that either works or
says which part failed and where its log is, and Ctrl-C must leave nothing running.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import queue
import resource
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

from synapse.local.engines import EngineSpec, engine_python, source_root

BACKOFF_MAX = 30.0
PROGRESS_EVERY = 15.0  # seconds between "vllm starting (45 s)…" lines while an engine loads
# vLLM raises its soft open-files limit to 65535 at start and warns when the hard limit is
# lower ("Found ulimit of 20000 and failed to automatically increase"); raised here first.
OPEN_FILES_WANTED = 65536


def free_port() -> int:
    """A port nothing listens on now (the OS picks it; another process could still race us)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def raise_open_files_limit(wanted: int = OPEN_FILES_WANTED) -> int:
    """Raise the soft RLIMIT_NOFILE to `wanted` (and the hard one where allowed: root), else
    to the hard limit; return the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= wanted:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, max(hard, wanted)))
    except (ValueError, OSError):  # not privileged: the hard limit is the ceiling
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def _die_with_parent() -> None:
    """Runs in the child before exec: SIGTERM it if the stack itself is killed (Linux); the
    engine gets the open-files limit vLLM asks for."""
    raise_open_files_limit()
    os.setpgrp()  # Ctrl-C reaches the stack only; the stack stops the children in order
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    """Signal the child's process group (it leads one, see _die_with_parent): vLLM's engine
    core and workers are its children and would outlive a signal to the API server alone."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _end_group(proc: subprocess.Popen[bytes], deadline: float) -> None:
    """Wait (until `deadline`) for a signalled child and the rest of its group, then SIGKILL
    whatever is left: vLLM's engine core outlives its API server by a few seconds."""
    try:
        proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        while _group_alive(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
    except subprocess.TimeoutExpired:
        pass
    if proc.poll() is None or _group_alive(proc.pid):
        _signal_group(proc, signal.SIGKILL)
        proc.wait(timeout=10)
        stop = time.monotonic() + 10
        while _group_alive(proc.pid) and time.monotonic() < stop:
            time.sleep(0.05)


@dataclass
class Child:
    """A running (or restarting) child process."""

    spec: EngineSpec
    port: int
    log: Path
    restart: bool
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    next_start: float = 0.0
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class StartError(RuntimeError):
    """A child exited or stayed unready during start; the message names its log."""


def write_model(venv: Path, module: str, out: Path, *args: str) -> Path:
    """Run a model writer (synapse.local.tiny*) in the venv that has its libraries, unless
    `out` is there already."""
    if out.exists():
        return out
    env = {**os.environ, "PYTHONPATH": str(source_root())}
    cmd = [str(engine_python(venv)), "-m", module, str(out), *args]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise StartError(f"could not write {out}:\n{done.stderr[-2000:]}")
    return out


class Supervisor:
    """Starts children, restarts the ones that die (with backoff), stops all on request.

    Every child is spawned by one long-lived thread, the watcher: Linux delivers a child's
    parent-death signal when the *thread* that forked it ends, so children started from a
    short-lived thread would be killed with it. The watcher ends only after the children.
    """

    def __init__(self, log_dir: Path, on_event: Callable[[str], None] | None = None) -> None:
        self.log_dir = log_dir
        self.children: dict[str, Child] = {}
        self._on_event = on_event or (lambda _msg: None)
        self._stopping = threading.Event()
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._requests: queue.Queue[tuple[Child, Future[None]]] = queue.Queue()
        self._watcher = threading.Thread(target=self._watch, name="supervisor", daemon=True)
        self._watcher.start()

    def _spawn(self, child: Child) -> None:
        """Runs on the watcher thread only."""
        argv = [a.replace("{port}", str(child.port)) for a in child.spec.argv]
        env = {**os.environ, **child.spec.env, **child.extra_env}
        child.log.parent.mkdir(parents=True, exist_ok=True)
        with child.log.open("ab") as log:
            log.write(f"\n--- {time.strftime('%H:%M:%S')} start: {' '.join(argv)}\n".encode())
            log.flush()
            child.proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                preexec_fn=_die_with_parent,
            )

    def start(
        self,
        spec: EngineSpec,
        port: int,
        *,
        restart: bool = True,
        env: dict[str, str] | None = None,
    ) -> Child:
        """Start a child (on the watcher thread) and return it once its process exists."""
        child = Child(spec, port, self.log_dir / f"{spec.name}.log", restart, extra_env=env or {})
        with self._lock:
            if self._stopping.is_set():
                raise StartError(f"not starting {spec.name}: the stack is stopping")
            self.children[spec.name] = child
        done: Future[None] = Future()
        self._requests.put((child, done))
        done.result(timeout=60)
        return child

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def wait_ready(self, child: Child, timeout: float | None = None) -> float:
        """Poll the child's health URL until it answers 200; return the seconds it took.

        A process that exits meanwhile fails the wait at once, restart policy or not: a crash
        while starting (missing package, busy port) would only repeat. A slow start (vLLM
        takes a minute) reports progress as "vllm starting (45 s)…": its log lines (command
        lines, warnings) mean nothing to a newcomer and are in the log named at its start."""
        started = time.monotonic()
        next_progress = started + PROGRESS_EVERY
        limit = timeout or child.spec.startup_timeout
        url = child.url + child.spec.health_path
        proc = child.proc
        while time.monotonic() < started + limit:
            if proc is None or proc.poll() is not None:
                code = proc.returncode if proc else None
                raise StartError(
                    f"{child.spec.name} exited with code {code}; log {child.log}:\n{child.tail()}"
                )
            with (
                contextlib.suppress(OSError, urllib.error.URLError),
                urllib.request.urlopen(url, timeout=2) as resp,
            ):
                if resp.status == 200:
                    return time.monotonic() - started
            if time.monotonic() >= next_progress:
                next_progress += PROGRESS_EVERY
                waited = time.monotonic() - started
                self._on_event(f"{child.spec.name} starting ({waited:.0f} s)…")
            time.sleep(0.2)
        raise StartError(
            f"{child.spec.name} not ready at {url} after {limit:.0f} s; "
            f"log {child.log}:\n{child.tail()}"
        )

    def _watch(self) -> None:
        while not self._closed.is_set():
            try:
                child, done = self._requests.get(timeout=0.3)
            except queue.Empty:
                pass
            else:
                with self._lock:  # so stop_all sees either no process or a started one
                    try:
                        if self._stopping.is_set():
                            raise StartError(f"not starting {child.spec.name}: stopping")
                        self._spawn(child)
                        done.set_result(None)
                    except Exception as exc:
                        done.set_exception(exc)
            if not self._stopping.is_set():
                with self._lock:
                    for child in self.children.values():
                        self._check(child)

    def _check(self, child: Child) -> None:
        if child.proc is None or child.proc.poll() is None or not child.restart:
            return
        now = time.monotonic()
        if child.next_start == 0.0:
            delay = min(BACKOFF_MAX, 2.0**child.restarts)
            child.next_start = now + delay
            self._on_event(
                f"{child.spec.name} exited (code {child.proc.returncode}); "
                f"restarting in {delay:.0f} s, log {child.log}"
            )
        elif now >= child.next_start:
            child.restarts += 1
            child.next_start = 0.0
            self._spawn(child)

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Signal one child and its own children (tests use this to make an engine die)."""
        child = self.children[name]
        if child.proc is not None and child.proc.poll() is None:
            _signal_group(child.proc, sig)
            child.proc.wait(timeout=30)

    def stop(self, name: str, grace: float = 15.0) -> None:
        """Stop one child for good: SIGTERM, then SIGKILL after `grace` seconds."""
        with self._lock:
            child = self.children[name]
            child.restart = False
        proc = child.proc
        if proc is None or proc.poll() is not None:
            return
        _signal_group(proc, signal.SIGTERM)
        _end_group(proc, time.monotonic() + grace)

    def stop_all(self, grace: float = 15.0) -> None:
        """Stop every child: the newest first (the gateway drains before its engines go),
        then all the others together."""
        with self._lock:
            self._stopping.set()
            names = list(self.children)
        if names:
            self._stop_in_order(names, grace)
        self._closed.set()
        self._watcher.join(timeout=5)

    def _stop_in_order(self, names: list[str], grace: float) -> None:
        self.stop(names[-1], grace)
        rest = [self.children[n] for n in names[:-1]]
        for child in rest:
            child.restart = False
            if child.running() and child.proc is not None:
                _signal_group(child.proc, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for child in rest:
            if child.proc is not None:
                _end_group(child.proc, deadline)
