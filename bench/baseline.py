"""The gateway as of another git revision, unpacked beside today's, for ratios from one run.

`synapse@<rev>` in `--paths` runs that revision's `src/` (`git archive`, so the repository's
worktree list is left alone) with `PYTHONPATH` in front of the editable install: same venv,
same config, same pinning as `synapse`, so "req/s ≥ 5x the baseline" compares like with like.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

DEFAULT_REV = "17c0e46"  # the last commit whose data path is aiohttp (issue 17's "today")
PREFIX = "synapse@"


def path_name(rev: str) -> str:
    return f"{PREFIX}{rev}"


def rev_of(path: str) -> str | None:
    """The revision a path name asks for ("synapse@17c0e46" → "17c0e46"), else None."""
    if not path.startswith(PREFIX):
        return None
    return path.removeprefix(PREFIX) or None


def default_paths(baseline: str) -> list[str]:
    """direct, today's tree, the baseline (unless empty), LiteLLM — the report's column order."""
    return ["direct", "synapse", *([path_name(baseline)] if baseline else []), "litellm"]


def export_cmds(repo: Path, rev: str, dest: Path) -> tuple[list[str], list[str]]:
    """`git archive <rev> src | tar -x -C dest`: the two halves of the pipe."""
    return (
        ["git", "-C", str(repo), "archive", "--format=tar", f"{rev}^{{commit}}", "src"],
        ["tar", "-x", "-C", str(dest)],
    )


def export(repo: Path, rev: str, dest: Path) -> Path:
    """Unpack `rev`'s src/ under `dest`; returns the directory to put on PYTHONPATH."""
    dest.mkdir(parents=True, exist_ok=True)
    git_cmd, tar_cmd = export_cmds(repo, rev, dest)
    git = subprocess.Popen(git_cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    tar = subprocess.run(tar_cmd, stdin=git.stdout, capture_output=True, timeout=120)
    assert git.stdout is not None
    git.stdout.close()
    err = git.stderr.read().decode(errors="replace").strip() if git.stderr else ""
    if git.wait(timeout=120) != 0 or tar.returncode != 0:
        detail = err or tar.stderr.decode(errors="replace").strip()
        raise RuntimeError(f"cannot export {rev!r} from {repo} (shallow clone?): {detail}")
    src = dest / "src"
    if not (src / "synapse").is_dir():
        raise RuntimeError(f"{rev!r} has no src/synapse")
    return src


def describe(repo: Path, rev: str) -> str:
    """`<short hash> <subject>` of `rev`, for the report's setup section."""
    proc = subprocess.run(
        ["git", "-C", str(repo), "log", "-1", "--format=%h %s", f"{rev}^{{commit}}"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return proc.stdout.strip() if proc.returncode == 0 else f"{rev} (unknown here)"
