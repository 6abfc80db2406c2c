"""A tiny real run of `synapse bench` against two local stub servers (no performance asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


def bench(stubs: dict[str, str], *extra: str) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        "-m",
        "synapse",
        "bench",
        "--url",
        stubs["gateway"].removesuffix("/v1"),
        "--key",
        "sk-test",
        "--direct-embed-url",
        stubs["direct"],
        "--direct-chat-url",
        stubs["direct"],
        "-n",
        "12",
        "--warmup",
        "1",
        "--batches",
        "4",
        "--batch-size",
        "3",
        "--concurrency",
        "2",
        "--chat-requests",
        "3",
        "--timeout",
        "20",
        "--json",
        *extra,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def test_measures_everything_and_passes_loose_limits(stubs: dict[str, str], tmp_path: Path) -> None:
    png = tmp_path / "bench.png"
    plot = ["--plot", str(png)]
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        plot = []  # the plot needs the bench extras; the rest is still checked
    proc = bench(
        stubs,
        "--embed-limit-ms",
        "1e9",
        "--min-tokens-per-s",
        "0",
        "--max-overhead-ms",
        "1e9",
        *plot,
    )
    assert proc.returncode == 0, proc.stderr + proc.stdout
    out = json.loads(proc.stdout)
    emb = out["embedding"]
    assert emb["gateway"]["latency_ms"]["n"] == 12
    assert emb["direct"]["latency_ms"]["n"] == 12
    assert emb["gateway"]["errors"] == 0 and emb["direct"]["errors"] == 0
    assert emb["batch"]["errors"] == 0 and emb["batch"]["texts_per_s"] > 0
    chat = out["chat"]
    assert chat["gateway"]["ttft_ms"]["n"] == 3
    # The stub streams 12 tokens and reports them in its usage chunk.
    assert chat["gateway"]["tokens"]["p50"] == 12
    assert chat["gateway"]["tokens_per_s"]["n"] == 3
    g, d = emb["gateway"]["latency_ms"]["p50"], emb["direct"]["latency_ms"]["p50"]
    assert out["overhead_ms"] == pytest.approx(g - d)
    assert [t["pass"] for t in out["thresholds"]] == [True, True, True]
    assert "samples_ms" not in json.dumps(out)  # raw samples only with --samples
    if plot:
        assert png.stat().st_size > 1000
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_failing_threshold_exits_non_zero(stubs: dict[str, str]) -> None:
    proc = bench(stubs, "--skip-embed", "--min-tokens-per-s", "1e12")
    assert proc.returncode == 1
    out = json.loads(proc.stdout)
    tokens = next(t for t in out["thresholds"] if t["name"].startswith("chat tokens/s"))
    assert tokens["pass"] is False
    assert out["ok"] is False
    # Only chat was measured, so the overhead falls back to time to first token.
    assert out["overhead_ms"] is not None and "embedding" not in out


def test_wrong_key_counts_errors_and_fails(stubs: dict[str, str]) -> None:
    cmd = [
        sys.executable,
        "-m",
        "synapse",
        "bench",
        "--url",
        stubs["gateway"],
        "--key",
        "nope",
        "--skip-chat",
        "-n",
        "3",
        "--warmup",
        "0",
        "--batches",
        "1",
        "--json",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    out = json.loads(proc.stdout)
    assert out["embedding"]["gateway"]["errors"] == 3
    assert out["embedding"]["gateway"]["first_error"].startswith("401")
    assert out["thresholds"][0]["pass"] is None  # nothing measured → n/a, not a pass


def test_human_output_renders_tables(stubs: dict[str, str]) -> None:
    cmd = [
        sys.executable,
        "-m",
        "synapse",
        "bench",
        "--url",
        stubs["gateway"],
        "--key",
        "sk-test",
        "--skip-chat",
        "-n",
        "3",
        "--batches",
        "1",
        "--embed-limit-ms",
        "1e9",
    ]
    proc = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=60,
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr
    assert "embedding latency (ms)" in proc.stdout
    assert "PASS" in proc.stdout
