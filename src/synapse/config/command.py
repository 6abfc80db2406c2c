"""`synapse check-config PATH`: validate a config without starting anything."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from synapse.config import Config


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("check-config", help="validate a config file")
    parser.add_argument("path", help="LiteLLM-format config file")
    parser.set_defaults(func=run)


def load_or_report(path: str) -> Config | None:
    """The config, or None after printing every problem (file: key path: expectation)."""
    from synapse.config import ConfigError, load_config

    try:
        return load_config(path)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return None


def run(args: argparse.Namespace) -> int:
    config = load_or_report(args.path)
    if config is None:
        return 1
    for warning in config.warnings:
        print(f"{args.path}: warning: {warning}", file=sys.stderr)
    names = ", ".join(sorted(config.groups))
    print(f"{args.path}: OK — {len(config.deployments)} deployments in groups: {names}")
    return 0
