"""The `synapse` command: one sub-command per module, imported lazily so `serve` starts fast."""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Sequence

# Each module exposes `register(subparsers)`; the parser it adds sets `func(args) -> int`.
# Modules must keep heavy imports inside `func`, not at module level.
COMMANDS: tuple[str, ...] = (
    "synapse.server.command",
    "synapse.config.command",
    "synapse.ops.bench",
    "synapse.ops.budget",
    "synapse.ops.pull",
    "synapse.ops.migrate",
    "synapse.ops.health",
    "synapse.ops.verify",
    "synapse.ops.usage",
    "synapse.local.command",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="synapse", description=__doc__)
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)
