"""`python -m synapse.local [options]` is `synapse local-stack [options]`."""

import argparse
import sys

from synapse.local.command import register

parser = argparse.ArgumentParser(prog="python -m synapse.local")
register(parser.add_subparsers(dest="command"))
args = parser.parse_args(["local-stack", *sys.argv[1:]])
raise SystemExit(args.func(args))
