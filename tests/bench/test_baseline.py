"""The baseline path: names, the `git archive` export, and the report's reproduce line."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

baseline = pytest.importorskip("baseline")
run_bench = pytest.importorskip("run_bench")


def test_path_names_round_trip() -> None:
    assert baseline.path_name("17c0e46") == "synapse@17c0e46"
    assert baseline.rev_of("synapse@17c0e46") == "17c0e46"
    assert baseline.rev_of("synapse@") is None
    assert baseline.rev_of("synapse") is None and baseline.rev_of("litellm") is None


def test_default_paths_put_the_baseline_after_today_and_skip_it_when_empty() -> None:
    assert baseline.default_paths("abc") == ["direct", "synapse", "synapse@abc", "litellm"]
    assert baseline.default_paths("") == ["direct", "synapse", "litellm"]


def test_export_command_archives_only_src_of_that_commit(tmp_path: Path) -> None:
    git, tar = baseline.export_cmds(Path("/repo"), "17c0e46", tmp_path)
    assert git == ["git", "-C", "/repo", "archive", "--format=tar", "17c0e46^{commit}", "src"]
    assert tar == ["tar", "-x", "-C", str(tmp_path)]


def git(repo: Path, *argv: str) -> None:
    subprocess.run(["git", "-C", str(repo), *argv], check=True, capture_output=True)


def test_export_unpacks_the_old_tree_not_todays(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "src" / "synapse").mkdir(parents=True)
    init = repo / "src" / "synapse" / "__init__.py"
    git(repo, "init", "-q")
    init.write_text("VERSION = 'old'\n")
    git(repo, "add", ".")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "old data path")
    git(repo, "tag", "old")
    init.write_text("VERSION = 'new'\n")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "new")
    src = baseline.export(repo, "old", tmp_path / "out")
    assert src == tmp_path / "out" / "src"
    assert (src / "synapse" / "__init__.py").read_text() == "VERSION = 'old'\n"
    assert baseline.describe(repo, "old").endswith(" old data path")
    with pytest.raises(RuntimeError, match="cannot export 'nope'"):
        baseline.export(repo, "nope", tmp_path / "bad")


def test_bench_args_drop_the_makefiles_bin() -> None:
    argv = ["--bin", "../.venv/bin", "--duration", "3", "--bin=x", "--paths", "direct,synapse"]
    assert run_bench.bench_args(argv) == ["--duration", "3", "--paths", "direct,synapse"]


def test_synapse_revisions_take_turns_in_one_group_at_the_first_ones_place() -> None:
    paths = ["direct", "synapse", "synapse@abc", "litellm"]
    assert run_bench.groups(paths) == [["direct"], ["synapse", "synapse@abc"], ["litellm"]]
    assert run_bench.groups(paths, interleave=False) == [[p] for p in paths]
    assert run_bench.groups(["synapse@abc", "direct", "synapse"]) == [
        ["synapse@abc", "synapse"],
        ["direct"],
    ]
    assert run_bench.groups(["direct", "synapse"]) == [["direct"], ["synapse"]]
