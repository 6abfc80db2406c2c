"""Renders every phase once per session (kubectl kustomize, offline)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.deploy.helpers import MANIFESTS, PHASES, Doc, everything_kustomization, render


@pytest.fixture(scope="session")
def targets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Kustomization directories by name: phase1…phase5, final (phase 5 + NetworkPolicies),
    the LiteLLM variant, and everything (final + LiteLLM and its policies)."""
    found = {f"phase{n}": MANIFESTS / "phases" / f"phase{n}" for n in PHASES}
    found["final"] = MANIFESTS / "phases" / "final"
    found["litellm"] = MANIFESTS / "variants" / "litellm"
    found["everything"] = everything_kustomization(tmp_path_factory.mktemp("everything"))
    return found


@pytest.fixture(scope="session")
def rendered(targets: dict[str, Path]) -> dict[str, list[Doc]]:
    return {name: render(path) for name, path in targets.items()}


@pytest.fixture(scope="session")
def phase5(rendered: dict[str, list[Doc]]) -> list[Doc]:
    return rendered["phase5"]


@pytest.fixture(scope="session")
def final(rendered: dict[str, list[Doc]]) -> list[Doc]:
    """What forge runs at the end: phase 5 plus the gated NetworkPolicies."""
    return rendered["final"]


@pytest.fixture(scope="session")
def everything(rendered: dict[str, list[Doc]]) -> list[Doc]:
    """The end state plus the LiteLLM component: every object this repo can deploy."""
    return rendered["everything"]
