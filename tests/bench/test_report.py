"""The bench harness's report arithmetic (ratios, targets) and profile parsing, on fixed input."""

from __future__ import annotations

from pathlib import Path

import pytest

profile_gateway = pytest.importorskip("profile_gateway")
report = pytest.importorskip("report")
soak = pytest.importorskip("soak")


def wrk(rps: float, p50_us: int, p99_us: int) -> dict:
    return {
        "rps": rps,
        "p50_us": p50_us,
        "p99_us": p99_us,
        "errors": 0,
        "requests": int(rps),
        "cpu_ms_per_req": 0.5,
        "cpu_util": 0.9,
        "foreign_util": 0.05,
    }


def results() -> dict:
    def path(c1: dict, c64: dict) -> dict:
        return {"cases": {"embeddings": {"runs": {"1": c1, "64": c64}}}}

    return {
        "date": "2026-01-02",
        "meta": {
            "cases": {"embeddings": "/v1/embeddings"},
            "concurrency": [1, 64],
            "duration_s": 5,
            "ttft_n": 0,
            "gateway_cpus": "1",
            "loadgen_cpus": "0",
            "embed_dim": 8,
            "versions": {
                k: "x"
                for k in ("synapse", "litellm", "nginx", "wrk", "python", "cpu", "cores", "commit")
            },
        },
        "paths": {
            "direct": path(wrk(10000, 100, 300), wrk(20000, 3000, 6000)),
            "synapse": {
                **path(wrk(2000, 400, 900), wrk(12000, 5000, 9000)),
                "rss_idle": 40 * report.MB,
                "rss_after": 90 * report.MB,
            },
            "litellm": path(wrk(40, 25000, 40000), wrk(500, 120000, 300000)),
        },
    }


def test_ratios_and_added_latency() -> None:
    r = results()
    assert report.added(r, "synapse", "embeddings", "p50_us") == pytest.approx(0.3)
    assert report.added(r, "litellm", "embeddings", "p99_us") == pytest.approx(39.7)
    assert report.rps(r, "synapse", "embeddings", "64") == 12000
    assert report.ratio(12000, 20000) == pytest.approx(0.6)
    assert report.ratio(1, 0) is None and report.ratio(None, 3) is None


def test_targets_verdicts() -> None:
    soak_summary = {
        "samples": [1],
        "requests": 100_000,
        "growth_mb": 6.0,
        "peak_mb": 70.0,
        "date": "2026-01-02",
    }
    rows = {t[0]: t for t in report.targets(results(), soak_summary)}
    assert rows["added latency p50 ≤ 0.5 ms (embeddings)"][3] is True  # +0.3 ms
    assert rows["Synapse ≥ 50 % of direct req/s at c=64 (embeddings)"][3] is True  # 60 %
    assert rows["Synapse ≥ 20x LiteLLM req/s at c=64 (embeddings)"][1] == "24.0x"
    assert rows["RSS ≤ 80 MB (idle)"][3] is True
    assert rows["RSS ≤ 80 MB (after the bench)"][3] is False  # 90 MB
    growth = next(v for k, v in rows.items() if k.startswith("RSS growth"))
    assert growth[3] is False  # +6 MB


def test_write_report_tables(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    md = report.write_report(results(), tmp_path)
    text = md.read_text()
    assert "| /v1/embeddings | 64 | 20,000 | 12,000 | 500 | 60.0 % | 24.0x | 0/0/0 |" in text
    assert "+0.300 / +0.600" in text
    assert (tmp_path / "2026-01-02.png").stat().st_size > 1000


def test_soak_summary_growth_from_warm_sample() -> None:
    samples = [{"rss_mb": 40.0}, {"rss_mb": 50.0}, {"rss_mb": 55.0}, {"rss_mb": 52.0}]
    s = soak.summarize(samples, total=15_000, errors=2)
    assert s["idle_mb"] == 40.0 and s["start_mb"] == 50.0 and s["end_mb"] == 52.0
    assert s["peak_mb"] == 55.0
    assert s["growth_mb"] == pytest.approx(2.0)
    assert s["growth_from_idle_mb"] == pytest.approx(12.0)


def test_profile_summary_from_collapsed_stacks() -> None:
    raw = "\n".join(
        [
            "main (synapse/cli.py:33);handle (synapse/api/openai.py:40);"
            "write (aiohttp/http_writer.py:80) 6",
            "main (synapse/cli.py:33);handle (synapse/api/openai.py:41) 3",
            "main (synapse/cli.py:33);run_once (asyncio/base_events.py:1900) 1",
            "garbage line without count",
        ]
    )
    stacks = profile_gateway.parse_collapsed(raw)
    assert len(stacks) == 3
    s = profile_gateway.summarize(stacks)
    assert s["samples"] == 10
    assert s["self"][0] == ("write (aiohttp/http_writer.py)", pytest.approx(60.0))
    cats = dict(s["categories"])
    assert cats["aiohttp (server+client)"] == pytest.approx(60.0)
    assert cats["synapse"] == pytest.approx(30.0)
    assert cats["asyncio/uvloop"] == pytest.approx(10.0)
    incl = dict(s["synapse_inclusive"])
    assert incl["handle (synapse/api/openai.py)"] == pytest.approx(90.0)
    assert incl["main (synapse/cli.py)"] == pytest.approx(100.0)
