"""`synapse pull-models`: pull models into Ollama through `/api/pull`, with live progress.

Replaces the build plan's scripts/pull-models.sh. Defaults come from the routing config
(every `ollama/` and `ollama_chat/` model, pulled into the Ollama its api_base names).
Models already present are skipped (`--force` pulls anyway, which updates them).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from synapse.ops.output import EXIT_FAILED, EXIT_OK, OpsError, add_common_args, run_command

if TYPE_CHECKING:
    from synapse.ops.endpoints import Endpoint

HELP = "pull models into Ollama (/api/pull) with progress bars"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("pull-models", help=HELP, description=__doc__)
    p.add_argument("models", nargs="*", metavar="MODEL", help="models to pull (default: config)")
    p.add_argument(
        "--config", help="routing config for the defaults (default: config/litellm-config.yaml)"
    )
    p.add_argument(
        "--ollama-url",
        help="Ollama to pull into; a cluster Service URL goes through the API server's proxy "
        "(default: the config's Ollama api_base, else ollama.llm-infra:11434)",
    )
    p.add_argument("--force", action="store_true", help="pull models that are already present")
    p.add_argument(
        "--idle-timeout",
        type=float,
        default=600.0,
        help="fail a pull when Ollama sends nothing for this many seconds (default 600)",
    )
    add_common_args(p)
    p.set_defaults(func=lambda args: run_command(args, run))


class PullFailed(OpsError):
    """Ollama reported an error for one model, or its stream ended early."""


@dataclass
class PullResult:
    model: str
    ollama: str
    status: str  # present | pulled | failed
    detail: str = ""
    bytes_total: int = 0


def plan_targets(
    models: list[str], ollama_url: str | None, config_path: str | None
) -> dict[str, list[str]]:
    """Which models go to which Ollama URL."""
    from synapse.ops.models import DEFAULT_OLLAMA_URL, DEFAULT_PULL_MODELS, routing_or_none

    routing = routing_or_none(config_path)
    from_config = routing.ollama_models() if routing else {}
    if ollama_url:
        if models:
            return {ollama_url: list(models)}
        everything = [m for ms in from_config.values() for m in ms] or list(DEFAULT_PULL_MODELS)
        return {ollama_url: list(dict.fromkeys(everything))}
    if models:
        return {next(iter(from_config), DEFAULT_OLLAMA_URL): list(models)}
    return from_config or {DEFAULT_OLLAMA_URL: list(DEFAULT_PULL_MODELS)}


def follow_pull(lines: Iterable[str], on_event: Callable[[dict[str, Any]], None]) -> None:
    """Read Ollama's /api/pull NDJSON stream; raise PullFailed unless it ends in success."""
    for raw in lines:
        if not raw.strip():
            continue
        try:
            event = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise PullFailed(f"not an NDJSON progress line: {raw[:120]!r}") from exc
        if not isinstance(event, dict):
            raise PullFailed(f"unexpected progress line: {raw[:120]!r}")
        if event.get("error"):
            raise PullFailed(str(event["error"]))
        on_event(event)
        if event.get("status") == "success":
            return
    raise PullFailed("the pull stream ended before Ollama reported success")


class ProgressView:
    """Rich progress bars: one per layer digest, plus a status line per model."""

    def __init__(self, progress: Any | None) -> None:
        self.progress = progress
        self.tasks: dict[str, Any] = {}
        self.totals: dict[str, int] = {}

    def start(self, model: str) -> Callable[[dict[str, Any]], None]:
        status_task = None
        if self.progress is not None:
            status_task = self.progress.add_task(f"{model}: starting", total=None)

        def on_event(ev: dict[str, Any]) -> None:
            digest, total = ev.get("digest"), ev.get("total")
            if digest and total:
                self.totals[digest] = int(total)
                if self.progress is not None:
                    if digest not in self.tasks:
                        short = str(digest).removeprefix("sha256:")[:12]
                        self.tasks[digest] = self.progress.add_task(
                            f"  {model} {short}", total=int(total)
                        )
                    self.progress.update(
                        self.tasks[digest], total=int(total), completed=int(ev.get("completed", 0))
                    )
            elif self.progress is not None and status_task is not None:
                done = ev.get("status") == "success"
                self.progress.update(
                    status_task,
                    description=f"{model}: {ev.get('status', '')}",
                    total=1 if done else None,
                    completed=1 if done else 0,
                )

        return on_event


def pull_one(ep: Endpoint, model: str, view: ProgressView, idle_timeout: float) -> int:
    """Pull one model; return the bytes of the layers Ollama reported."""
    import httpx2

    view.totals.clear()
    timeout = httpx2.Timeout(30.0, read=idle_timeout)
    with ep.stream("POST", "/api/pull", json_body={"model": model}, timeout=timeout) as resp:
        if resp.status_code >= 400:
            from synapse.ops.endpoints import error_text

            raise PullFailed(f"HTTP {resp.status_code}: {error_text(resp)}")
        follow_pull(resp.iter_lines(), view.start(model))
    return sum(view.totals.values())


def run(args: argparse.Namespace) -> int:
    from synapse.ops.endpoints import Endpoints
    from synapse.ops.kube import Kube
    from synapse.ops.models import missing, tag_names
    from synapse.ops.output import Unreachable, console, human_bytes, print_json

    targets = plan_targets(args.models, args.ollama_url, args.config)
    results: list[PullResult] = []
    with Endpoints(lambda: Kube.connect(args.kubeconfig, args.context)) as eps:
        for url, models in targets.items():
            ep = eps.for_url(url)
            try:
                have = tag_names(ep.get_json("/api/tags"))
            except Unreachable as exc:
                raise Unreachable(f"cannot reach Ollama: {exc}") from exc
            todo = list(models) if args.force else missing(models, have)
            results += [PullResult(m, ep.label, "present") for m in models if m not in todo]
            results += _pull_all(ep, todo, args)
            if todo:
                now = tag_names(ep.get_json("/api/tags"))
                for r in results:
                    if r.ollama == ep.label and r.status == "pulled" and missing([r.model], now):
                        r.status, r.detail = "failed", "pull reported success but not in /api/tags"

    code = EXIT_FAILED if any(r.status == "failed" for r in results) else EXIT_OK
    if args.json:
        print_json({"ok": code == EXIT_OK, "models": [asdict(r) for r in results]})
        return code
    from rich.table import Table

    table = Table(title="pull-models", title_justify="left")
    for col in ("model", "ollama", "result", "size", "detail"):
        table.add_column(col)
    style = {"present": "green", "pulled": "green", "failed": "bold red"}
    for r in results:
        size = human_bytes(r.bytes_total) if r.bytes_total else ""
        table.add_row(r.model, r.ollama, f"[{style[r.status]}]{r.status}[/]", size, r.detail)
    console().print(table)
    return code


def _pull_all(ep: Endpoint, models: list[str], args: argparse.Namespace) -> list[PullResult]:
    from synapse.ops.output import Unreachable, console

    if not models:
        return []
    results = []
    progress = None
    if not args.json:
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=console(),
        )
        progress.start()
    view = ProgressView(progress)
    try:
        for model in models:
            try:
                size = pull_one(ep, model, view, args.idle_timeout)
                results.append(PullResult(model, ep.label, "pulled", bytes_total=size))
            except Unreachable as exc:
                raise Unreachable(f"cannot reach Ollama: {exc}") from exc
            except PullFailed as exc:
                results.append(PullResult(model, ep.label, "failed", str(exc)))
    finally:
        if progress is not None:
            progress.stop()
    return results
