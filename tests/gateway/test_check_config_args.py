"""`synapse check-config` takes the path as `serve` does (`--config X`) as well as positionally."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LOCAL = str(ROOT / "config" / "local.yaml")


def check(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "synapse", "check-config", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin", "SYNAPSE_MASTER_KEY": "x" * 32},
    )


@pytest.mark.parametrize("args", [[LOCAL], ["--config", LOCAL], [f"--config={LOCAL}"]])
def test_either_spelling_checks_the_file(args: list[str]) -> None:
    done = check(*args)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"{LOCAL}: OK")


@pytest.mark.parametrize("args", [[], [LOCAL, "--config", str(ROOT / "config" / "other.yaml")]])
def test_no_path_or_two_paths_is_a_usage_error(args: list[str]) -> None:
    done = check(*args)
    assert done.returncode == 2
    assert "give the config file once" in done.stderr
