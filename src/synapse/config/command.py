"""`synapse check-config PATH` (or `--config PATH`, as `serve` spells it): validate a config
without starting anything."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from synapse.config import Config


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("check-config", help="validate a config file")
    parser.add_argument("path", nargs="?", help="LiteLLM-format config file")
    parser.add_argument(
        "--config", dest="config_path", metavar="PATH", help="the same, spelled as for `serve`"
    )
    parser.set_defaults(func=run, check_config_parser=parser)


def _path(args: argparse.Namespace) -> str:
    """The one path given, positionally or with --config; two different ones are an error."""
    given = {p for p in (args.path, args.config_path) if p}
    if len(given) != 1:
        args.check_config_parser.error(
            "give the config file once: synapse check-config PATH (or --config PATH)"
        )
    return given.pop()


def load_or_report(path: str) -> Config | None:
    """The config, or None after printing every problem (file: key path: expectation)."""
    from synapse.config import ConfigError, load_config

    try:
        return load_config(path)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return None


def run(args: argparse.Namespace) -> int:
    args.path = _path(args)
    config = load_or_report(args.path)
    if config is None:
        return 1
    for warning in config.warnings:
        print(f"{args.path}: warning: {warning}", file=sys.stderr)
    names = ", ".join(sorted(config.groups))
    print(f"{args.path}: OK — {len(config.deployments)} deployments in groups: {names}")
    return 0
