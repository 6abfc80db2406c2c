"""What the gateway really exports: sample names and label names from its exposition.

Labelled metrics show no sample until a child exists, so a child process imports
synapse.metrics, gives every metric one labelled sample and prints the exposition; the
registry of the test process (which other tests read) stays untouched.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import defaultdict

from .sources import ROOT

_EXERCISE = r"""
import json
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families
from synapse import metrics

for metric in vars(metrics).values():
    if not isinstance(metric, MetricWrapperBase):
        continue
    child = metric.labels(*["x"] * len(metric._labelnames)) if metric._labelnames else metric
    for method, arg in (("observe", 1.0), ("set", 1.0), ("inc", 1.0)):
        if hasattr(child, method):
            getattr(child, method)(arg)
            break
samples = [
    [s.name, sorted(s.labels)]
    for family in text_string_to_metric_families(metrics.exposition().decode())
    for s in family.samples
]
print(json.dumps(samples))
"""


def exported_series() -> dict[str, frozenset[str]]:
    """Sample name (synapse_requests_total, ..._bucket, process_...) -> its label names."""
    proc = subprocess.run(
        [sys.executable, "-c", _EXERCISE],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, f"exercising synapse.metrics failed:\n{proc.stderr}"
    labels: dict[str, set[str]] = defaultdict(set)
    for name, names in json.loads(proc.stdout):
        labels[name].update(names)
    return {name: frozenset(names) for name, names in labels.items()}
