"""Renders every phase once per session (kubectl kustomize, offline)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.deploy.helpers import (
    MANIFESTS,
    PHASES,
    Doc,
    monitoring_ready,
    render,
    without_monitoring,
)


@pytest.fixture(scope="session")
def targets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Kustomization directories by name: phase1…phase5 and the LiteLLM variant.

    Until monitoring/ has its kustomization.yaml, phase 5 and the variant are rendered from
    copies without that one entry (tests that need monitoring/ skip and say so).
    """
    found = {f"phase{n}": MANIFESTS / "phases" / f"phase{n}" for n in PHASES}
    found["litellm"] = MANIFESTS / "variants" / "litellm"
    if not monitoring_ready():
        found["phase5"], found["litellm"] = without_monitoring(tmp_path_factory.mktemp("render"))
    return found


@pytest.fixture(scope="session")
def rendered(targets: dict[str, Path]) -> dict[str, list[Doc]]:
    return {name: render(path) for name, path in targets.items()}


@pytest.fixture(scope="session")
def phase5(rendered: dict[str, list[Doc]]) -> list[Doc]:
    return rendered["phase5"]


@pytest.fixture(scope="session")
def everything(rendered: dict[str, list[Doc]]) -> list[Doc]:
    """Phase 5 plus the LiteLLM component: every object this repo can deploy."""
    return rendered["litellm"]
