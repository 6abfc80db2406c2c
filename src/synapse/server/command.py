"""`synapse serve`: start the gateway."""

from __future__ import annotations

import argparse
import asyncio


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("serve", help="run the gateway")
    parser.add_argument("--config", required=True, help="LiteLLM-format config file")
    parser.add_argument("--host", default="0.0.0.0", help="address to bind (default 0.0.0.0)")
    parser.add_argument("--port", type=int, default=8000, help="OpenAI API port (default 8000)")
    parser.add_argument(
        "--ollama-port",
        type=int,
        default=None,
        help="also serve the Ollama API here (overrides synapse_settings.ollama_port; 0 = off)",
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="serve /metrics here only (overrides synapse_settings.metrics_port, 9090; 0 = off)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from synapse import logs
    from synapse.config.command import load_or_report
    from synapse.gateway import Gateway
    from synapse.server.lifecycle import serve

    config = load_or_report(args.config)
    if config is None:
        return 1
    logs.setup(config.settings.log_level)
    settings = config.settings
    ollama_port = settings.ollama_port if args.ollama_port is None else args.ollama_port
    metrics_port = settings.metrics_port if args.metrics_port is None else args.metrics_port
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        runner = asyncio.run
    else:
        runner = uvloop.run
    runner(serve(Gateway(config), args.host, args.port, ollama_port or None, metrics_port or None))
    return 0
