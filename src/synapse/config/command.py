"""`synapse check-config PATH`: validate a config without starting anything."""

from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("check-config", help="validate a config file")
    parser.add_argument("path", help="LiteLLM-format config file")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from synapse.config import ConfigError, load_config

    try:
        config = load_config(args.path)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    for warning in config.warnings:
        print(f"{args.path}: warning: {warning}", file=sys.stderr)
    names = ", ".join(sorted(config.groups))
    print(f"{args.path}: OK — {len(config.deployments)} deployments in groups: {names}")
    return 0
