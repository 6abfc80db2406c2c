"""External tools the monitoring tests run: promtool (Debian `prometheus`) and kubectl."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

INSTALL_HINT = {
    "promtool": "run `make system-deps` (Debian package prometheus)",
    "kubectl": "install kubectl (it bundles kustomize)",
}


def require(tool: str) -> str:
    """Path of `tool`; a missing tool fails the test under CI=true and skips it elsewhere."""
    path = shutil.which(tool)
    if path:
        return path
    message = f"{tool} not found: {INSTALL_HINT.get(tool, 'install it')}"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(message)
    pytest.skip(message)


def run(
    args: list[str], cwd: Path | None = None, timeout: float = 60
) -> subprocess.CompletedProcess:
    """Run with stderr merged into stdout, in order (promtool splits its reports over both)."""
    return subprocess.run(
        args,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
        check=False,
    )


def run_split(
    args: list[str], files: list[str], cwd: Path, jobs: int = 2, timeout: float = 120
) -> str:
    """`args + files` run as `jobs` concurrent processes over slices of `files`; their
    merged outputs, concatenated."""
    slices = [files[i::jobs] for i in range(jobs) if files[i::jobs]]
    procs = [
        subprocess.Popen(
            [*args, *part], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        for part in slices
    ]
    return "".join(proc.communicate(timeout=timeout)[0] for proc in procs)


def output(proc: subprocess.CompletedProcess) -> str:
    return f"exit {proc.returncode}\n{proc.stdout}"
