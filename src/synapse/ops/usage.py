"""`synapse usage`: requests, errors, tokens, audio and latency per consumer and model.

From Prometheus (`--prometheus URL`: increase over `--window`, across every gateway pod and
restart) or from one gateway's own metrics port (`--metrics-url`: totals since that process
started). Both read the same series, labelled `consumer` by the request middleware.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING
from urllib.parse import quote, urlsplit

from synapse.ops.output import add_common_args, run_command

if TYPE_CHECKING:
    from synapse.ops.endpoints import Endpoint

# Series names as exposed (counters carry `_total`); Prometheus is asked for the same names.
REQUESTS = "synapse_requests_total"
PROMPT = "synapse_prompt_tokens_total"
COMPLETION = "synapse_completion_tokens_total"
AUDIO = "synapse_audio_bytes_total"
LATENCY_SUM = "synapse_request_duration_seconds_sum"
LATENCY_COUNT = "synapse_request_duration_seconds_count"
SERIES = (REQUESTS, PROMPT, COMPLETION, AUDIO, LATENCY_SUM, LATENCY_COUNT)

Sample = tuple[str, dict[str, str], float]
_DURATION = re.compile(r"[1-9][0-9]*[smhdwy]")


@dataclass
class Row:
    consumer: str
    model: str
    requests: float = 0
    errors_4xx: float = 0
    errors_5xx: float = 0
    prompt_tokens: float = 0
    completion_tokens: float = 0
    audio_bytes: float = 0
    latency_sum: float = 0
    latency_count: float = 0

    @property
    def mean_latency(self) -> float | None:
        return self.latency_sum / self.latency_count if self.latency_count else None


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "usage",
        help="requests, tokens and audio per consumer and model",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    source = p.add_mutually_exclusive_group()
    source.add_argument(
        "--prometheus",
        help="Prometheus base URL, or a Service as http://NAME.NAMESPACE:PORT (through the "
        "API server's proxy)",
    )
    source.add_argument(
        "--metrics-url",
        default="http://127.0.0.1:9090/metrics",
        help="a gateway's /metrics on its metrics port (default: %(default)s)",
    )
    p.add_argument("--window", default="24h", help="Prometheus range, e.g. 1h, 7d (default 24h)")
    add_common_args(p)
    p.set_defaults(func=lambda args: run_command(args, run))


def run(args: argparse.Namespace) -> int:
    from synapse.ops.endpoints import Endpoints
    from synapse.ops.kube import Kube
    from synapse.ops.output import OpsError, print_json

    if not _DURATION.fullmatch(args.window):
        raise OpsError(
            f"--window: expected a Prometheus duration such as 1h or 7d; got {args.window!r}"
        )
    with Endpoints(lambda: Kube.connect(args.kubeconfig, args.context)) as eps:
        if args.prometheus:
            samples = from_prometheus(eps.for_url(args.prometheus), args.window)
            source = f"{args.prometheus}, last {args.window}"
        else:
            parts = urlsplit(args.metrics_url)
            ep = eps.for_url(f"{parts.scheme}://{parts.netloc}")
            samples = from_exposition(ep.request("GET", parts.path or "/metrics").text)
            source = f"{args.metrics_url}, since the gateway started"
    rows = tabulate(samples)
    if args.json:
        print_json({"source": source, "rows": [asdict(r) for r in rows]})
    else:
        print_table(rows, source)
    return 0


def from_exposition(text: str) -> list[Sample]:
    from prometheus_client.parser import text_string_to_metric_families

    return [
        (s.name, s.labels, s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name in SERIES
    ]


def from_prometheus(ep: Endpoint, window: str) -> list[Sample]:
    from synapse.ops.output import OpsError

    samples: list[Sample] = []
    for name in SERIES:
        query = f"sum by (consumer, model, status) (increase({name}[{window}]))"
        doc = ep.get_json(f"/api/v1/query?query={quote(query, safe='')}")
        if not isinstance(doc, dict) or doc.get("status") != "success":
            raise OpsError(f"{ep.label}: Prometheus refused {query!r}: {str(doc)[:200]}")
        for item in (doc.get("data") or {}).get("result") or []:
            samples.append((name, item.get("metric") or {}, float(item["value"][1])))
    return samples


def tabulate(samples: Iterable[Sample]) -> list[Row]:
    rows: dict[tuple[str, str], Row] = {}
    for name, labels, value in samples:
        key = (labels.get("consumer", ""), labels.get("model", ""))
        row = rows.setdefault(key, Row(*key))
        if name == REQUESTS:
            row.requests += value
            status = labels.get("status", "")
            if status.startswith("4"):
                row.errors_4xx += value
            elif status.startswith("5"):
                row.errors_5xx += value
        elif name == PROMPT:
            row.prompt_tokens += value
        elif name == COMPLETION:
            row.completion_tokens += value
        elif name == AUDIO:
            row.audio_bytes += value
        elif name == LATENCY_SUM:
            row.latency_sum += value
        elif name == LATENCY_COUNT:
            row.latency_count += value
    return sorted(rows.values(), key=lambda r: (r.consumer, r.model))


def print_table(rows: list[Row], source: str) -> None:
    from rich.table import Table

    from synapse.ops.output import console, human_bytes

    table = Table(title=f"usage per consumer and model ({source})", title_justify="left")
    for column in ("consumer", "model", "requests", "4xx", "5xx", "tokens in", "tokens out"):
        table.add_column(column, justify="left" if column in ("consumer", "model") else "right")
    table.add_column("audio", justify="right")
    table.add_column("mean latency", justify="right")
    for r in rows:
        latency = r.mean_latency
        table.add_row(
            r.consumer or "(none)",
            r.model or "(no model)",
            *(f"{v:.0f}" for v in (r.requests, r.errors_4xx, r.errors_5xx)),
            *(f"{v:.0f}" for v in (r.prompt_tokens, r.completion_tokens)),
            human_bytes(r.audio_bytes) if r.audio_bytes else "",
            f"{latency:.3f}s" if latency is not None else "",
        )
    console().print(table)
