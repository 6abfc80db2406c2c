"""What `make` tells a newcomer: `make help`'s words, no sub-make noise, `make test`'s order.

Dry runs (`make -n`) and a sub-make of `make help` only: nothing is installed or started.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _make(*args: str, cwd: Path = ROOT) -> str:
    done = subprocess.run(
        ["make", *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_help_shows_the_values_of_the_variables_it_names(tmp_path: Path) -> None:
    text = _make("help", f"WHEEL_CACHE={tmp_path}/wheels", "CONFIG=config/other.yaml")
    assert "$(" not in text, [line for line in text.splitlines() if "$(" in line]
    assert f"into {tmp_path}/wheels" in text
    assert "the gateway alone on config/other.yaml" in text


def test_sub_makes_print_no_entering_directory_lines(tmp_path: Path) -> None:
    """`make run` and `make test-engines` start sub-makes (`make -q`, the installs); each
    printed "make[1]: Entering directory …" before the first useful line."""
    extra = tmp_path / "sub.mk"
    extra.write_text(f"include {ROOT}/Makefile\nsub:\n\t@$(MAKE) -q help 2>/dev/null || true\n")
    done = subprocess.run(
        ["make", "-f", str(extra), "sub"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert "Entering directory" not in done.stdout + done.stderr


def test_make_test_lints_before_the_compatibility_tier() -> None:
    """`make help` says "ruff (check, format), the compatibility tier, then the whole suite":
    the order make runs them in."""
    commands = _make("-n", "test").splitlines()
    ruff = next(i for i, c in enumerate(commands) if re.search(r"ruff check src tests", c))
    compat = next(i for i, c in enumerate(commands) if re.search(r"pytest .*tests/compat", c))
    suite = next(i for i, c in enumerate(commands) if re.fullmatch(r"\S*bin/pytest\s*", c))
    assert ruff < compat < suite
    help_line = next(line for line in _make("help").splitlines() if line.startswith("  test "))
    assert "ruff (check, format), the compatibility tier, then the whole suite" in help_line


def test_quiet_steps_print_a_heartbeat_and_stop_it(tmp_path: Path) -> None:
    """The installs that sat silent (95 s in vLLM's "Installing collected packages", 8 min of
    llama.cpp compile in CI) print a line every HEARTBEAT_EVERY seconds (30 by default), and
    the line stops with the step."""
    extra = tmp_path / "beat.mk"
    extra.write_text(
        f"include {ROOT}/Makefile\n"
        "quiet:\n\t@$(call heartbeat,quiet step); sleep 3.5; echo step done\n"
    )
    done = subprocess.run(
        ["make", "-f", str(extra), "quiet", "HEARTBEAT_EVERY=1"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    lines = done.stdout.splitlines()
    assert done.returncode == 0, done.stderr
    assert lines[0] == "  … quiet step: 1 s", lines  # a wide margin: 3.5 s for one 1-s beat
    assert lines[-1] == "step done"  # and none after the step
