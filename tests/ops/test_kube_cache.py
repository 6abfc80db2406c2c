"""Tests against the fake API server leave nothing in the user's ~/.kube: kubectl, which renders
the planned manifests for `verify --phase 1`, caches the server's answers under KUBECACHEDIR."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.ops.conftest import Stack, checks_by_name, cli_json


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl renders the manifests")
def test_kubectl_cache_stays_out_of_the_users_home(
    stack: Stack,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    home = tmp_path / "home"  # stands for the user's real HOME
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    _, doc = cli_json(capsys, "verify", "--phase", "1", "--samples", "1")
    assert checks_by_name(doc)["PVCs fit the disk"]["status"] == "pass"  # kubectl did run
    assert not (home / ".kube").exists(), sorted(str(p) for p in home.rglob("*"))
