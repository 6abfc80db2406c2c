"""Image tier: the gateway image built from the Dockerfile, run as the Deployment runs it.

`make test-image` builds the image (on the pinned base, or a loudly announced substitute when
no registry has it), then runs these with SYNAPSE_IMAGE_TESTS=1; without it they are skipped,
so `make test` needs no docker.
"""

from __future__ import annotations

import os
import subprocess

import pytest

ENABLED = os.environ.get("SYNAPSE_IMAGE_TESTS") == "1"
IMAGE = os.environ.get("SYNAPSE_IMAGE_TAG", "synapse:image-test")
BASE = os.environ.get("SYNAPSE_IMAGE_BASE", "")
IMAGE_TEST_TIMEOUT = 300  # docker run and stop on a busy 2-core machine; no build here
FIGURES: dict[str, str] = {}  # measured along the way, printed in the closing summary


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/image/" not in item.nodeid:
            continue
        if ENABLED:
            item.add_marker(pytest.mark.timeout(IMAGE_TEST_TIMEOUT))
        else:
            item.add_marker(pytest.mark.skip(reason="image tier: `make test-image`"))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if FIGURES:
        terminalreporter.section("image tier")
        for name, value in FIGURES.items():
            terminalreporter.write_line(f"{name}: {value}")


def docker(*args: str, timeout: float = 120, check: bool = True) -> str:
    done = subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and done.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed ({done.returncode}): {done.stderr}")
    return done.stdout.strip()
