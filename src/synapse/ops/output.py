"""Shared pieces of the ops commands: check results, errors, exit codes, rich / JSON rendering.

Every ops command prints the same way: a rich table for people, one JSON document with
`--json` for scripts, and an exit code that says whether anything failed.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

# Exit codes shared by every ops command (argparse already uses 2 for usage errors).
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_UNREACHABLE = 3

PASS = "pass"
FAIL = "fail"
WARN = "warn"
SKIP = "skip"

_STYLE = {PASS: "green", FAIL: "bold red", WARN: "yellow", SKIP: "dim"}


class OpsError(Exception):
    """A failure the operator must see as one clear sentence (no traceback)."""

    exit_code = EXIT_FAILED


class Unreachable(OpsError):
    """A service or the Kubernetes API could not be reached at all."""

    exit_code = EXIT_UNREACHABLE


@dataclass
class Check:
    """One line of a report: what was checked, the verdict and the value measured."""

    name: str
    status: str
    value: str = ""
    detail: str = ""
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return self.status == FAIL


def passed(name: str, value: str = "", detail: str = "", **data: Any) -> Check:
    return Check(name, PASS, value, detail, data)


def failed(name: str, value: str = "", detail: str = "", **data: Any) -> Check:
    return Check(name, FAIL, value, detail, data)


def verdict(name: str, ok: bool, value: str = "", detail: str = "", **data: Any) -> Check:
    return Check(name, PASS if ok else FAIL, value, detail, data)


def guarded(name: str, fn: Callable[[], Check | list[Check]]) -> list[Check]:
    """Run one check; an OpsError becomes a failed line instead of aborting the report."""
    try:
        result = fn()
    except OpsError as exc:
        return [failed(name, "error", str(exc))]
    return result if isinstance(result, list) else [result]


def add_common_args(parser: argparse.ArgumentParser, *, kube: bool = True) -> None:
    """--json everywhere; --kubeconfig/--context where the command talks to a cluster."""
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    if kube:
        parser.add_argument(
            "--kubeconfig",
            help="kubeconfig file (default: $KUBECONFIG, in-cluster account, ~/.kube/config)",
        )
        parser.add_argument("--context", help="kubeconfig context to use (default: current)")


def console(stderr: bool = False) -> Any:
    from rich.console import Console

    return Console(stderr=stderr, highlight=False)


def exit_code(checks: Iterable[Check]) -> int:
    return EXIT_FAILED if any(c.failed for c in checks) else EXIT_OK


def render_checks(
    title: str,
    checks: Sequence[Check],
    *,
    as_json: bool,
    extra: dict[str, Any] | None = None,
) -> int:
    """Print a check table (or JSON) and return the exit code it implies."""
    code = exit_code(checks)
    if as_json:
        doc: dict[str, Any] = {"title": title, "ok": code == EXIT_OK}
        doc.update(extra or {})
        doc["checks"] = [asdict(c) for c in checks]
        print_json(doc)
        return code
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    table.add_column("check")
    table.add_column("result")
    table.add_column("measured")
    table.add_column("detail", overflow="fold")
    for c in checks:
        style = _STYLE.get(c.status, "")
        table.add_row(c.name, f"[{style}]{c.status.upper()}[/]", c.value, c.detail)
    out = console()
    out.print(table)
    counts = {s: sum(1 for c in checks if c.status == s) for s in (PASS, FAIL, WARN, SKIP)}
    summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    out.print(f"[{'bold red' if code else 'green'}]{summary}[/]")
    return code


def print_json(doc: Any) -> None:
    sys.stdout.write(json.dumps(doc, indent=2, default=str) + "\n")


def report_error(exc: OpsError, *, as_json: bool) -> int:
    """Print an OpsError the way the command prints everything else; return its exit code."""
    if as_json:
        print_json({"ok": False, "error": str(exc)})
    else:
        console(stderr=True).print(f"[bold red]error:[/] {exc}")
    return exc.exit_code


def run_command(args: argparse.Namespace, body: Callable[[argparse.Namespace], int]) -> int:
    """Run a command body, turning OpsError and Ctrl-C into a message and an exit code."""
    try:
        return body(args)
    except OpsError as exc:
        return report_error(exc, as_json=getattr(args, "json", False))
    except KeyboardInterrupt:
        console(stderr=True).print("[yellow]interrupted[/]")
        return 130


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"
