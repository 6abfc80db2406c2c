"""The bench harness's report arithmetic (ratios, targets) and profile parsing, on fixed input."""

from __future__ import annotations

from pathlib import Path

import pytest

profile_gateway = pytest.importorskip("profile_gateway")
report = pytest.importorskip("report")
soak = pytest.importorskip("soak")


def wrk(rps: float, p50_us: int, p99_us: int, cpu_ms: float = 0.5) -> dict:
    return {
        "rps": rps,
        "p50_us": p50_us,
        "p99_us": p99_us,
        "errors": 0,
        "requests": int(rps),
        "cpu_ms_per_req": cpu_ms,
        "cpu_util": 0.9,
        "foreign_util": 0.05,
    }


def path(
    c1: dict,
    c64: dict,
    sse_p50_us: int | None = None,
    paced_us: list[float] | None = None,
    **extra: object,
) -> dict:
    out: dict = {"cases": {"embeddings": {"runs": {"1": c1, "64": c64}}}, **extra}
    if sse_p50_us is not None:
        out["sse_long"] = {"events": 256, "run": wrk(100, sse_p50_us, sse_p50_us + 500)}
    if paced_us is not None:
        out["paced"] = {"latency_us": paced_us, "errors": 0, "streams": 1}
    return out


def results() -> dict:
    return {
        "date": "2026-01-02",
        "meta": {
            "cases": {"embeddings": "/v1/embeddings"},
            "concurrency": [1, 64],
            "paths": ["direct", "synapse", "synapse@abc1234", "litellm"],
            "baselines": {"synapse@abc1234": "abc1234 the aiohttp data path"},
            "argv": ["--duration", "3"],
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
            "direct": path(
                wrk(10000, 100, 300),
                wrk(20000, 3000, 6000),
                sse_p50_us=200,
                paced_us=[90, 100, 5000],
            ),
            "synapse": path(
                wrk(2000, 250, 900, cpu_ms=0.12),
                wrk(12000, 5000, 9000, cpu_ms=0.1),
                sse_p50_us=200 + 256 * 40,  # +0.04 ms per event
                paced_us=[150, 130, 140],  # median 140 µs: +0.04 ms
                rss_idle=40 * report.MB,
                rss_after=90 * report.MB,
                imports="/work/src/synapse/__init__.py",
            ),
            "synapse@abc1234": path(
                wrk(900, 800, 5000, cpu_ms=0.9),
                wrk(2000, 30000, 60000, cpu_ms=0.7),
                sse_p50_us=200 + 256 * 760,
                paced_us=[400, 420, 9000],  # median 420 µs: +0.32 ms
                rss_idle=55 * report.MB,
                rss_after=60 * report.MB,
                imports="/tmp/x/baseline-abc1234/src/synapse/__init__.py",
            ),
            "litellm": path(wrk(40, 25000, 40000), wrk(500, 120000, 300000)),
        },
    }


def test_ratios_added_latency_and_per_event_delay() -> None:
    r = results()
    assert report.added(r, "synapse", "embeddings", "p50_us") == pytest.approx(0.15)
    assert report.added(r, "litellm", "embeddings", "p99_us") == pytest.approx(39.7)
    assert report.rps(r, "synapse", "embeddings", "64") == 12000
    assert report.ratio(12000, 20000) == pytest.approx(0.6)
    assert report.ratio(1, 0) is None and report.ratio(None, 3) is None
    assert report.per_event_ms(r, "synapse") == pytest.approx(0.04)
    assert report.per_event_ms(r, "synapse@abc1234") == pytest.approx(0.76)
    assert report.paced_added_ms(r, "synapse") == pytest.approx(0.04)
    assert report.paced_added_ms(r, "synapse@abc1234") == pytest.approx(0.32)
    assert report.paced_added_ms(r, "litellm") is None
    assert report.gateways(r) == ["synapse", "synapse@abc1234", "litellm"]
    assert report.baseline_path(r) == "synapse@abc1234"


def test_issue17_targets_met_and_not_met() -> None:
    soak_summary = {"samples": [1], "requests": 100_000, "growth_mb": 6.0, "date": "2026-01-02"}
    rows = {t.name: t for t in report.targets(results(), soak_summary)}
    assert rows["added latency p50 at c=1 ≤ 0.2 ms"].met is True  # +0.15 ms
    assert rows["added latency p99 at c=1 ≤ 1 ms"].measured == "0.600 ms"
    cpu = rows["CPU per request ≤ 0.15 ms (chat, embeddings; c=1 and c=64)"]
    assert cpu.met is True and cpu.measured == "0.120 ms (embeddings c=1)"  # chat not run
    assert rows["added delay per SSE event ≤ 0.05 ms (256 events, c=1)"].met is True
    paced = rows["added delay per SSE event ≤ 0.05 ms (paced: one event per write, c=1)"]
    assert (paced.measured, paced.met) == ("0.040 ms", True)
    base = rows["req/s at c=64 ≥ 5x synapse@abc1234"]
    assert base.measured == "6.0x" and base.met is True  # 12000 / 2000
    by_cpu = rows[
        "(the same from CPU per request at c=64: synapse@abc1234 ÷ synapse; "
        "little moved by other load on the core)"
    ]
    assert (by_cpu.measured, by_cpu.met) == ("7.0x", True)  # 0.7 / 0.1 ms
    direct = rows["req/s at c=64 ≥ 30 % of direct (nginx)"]
    assert direct.measured == "60.0 %" and direct.met is True
    assert rows["RSS ≤ 80 MB idle after start"].met is True
    assert rows["RSS ≤ 80 MB after the run"].met is False  # 90 MB
    assert rows["RSS flat over the soak (growth < 5 MB)"].met is False  # +6 MB
    lite = rows["req/s ≥ 20x LiteLLM (every case and c)"]
    # c=1: 2000/40 = 50x, c=64: 12000/500 = 24x: the worst decides.
    assert lite.measured == "24.0x (embeddings c=64)" and lite.met is True


def test_the_baseline_misses_what_today_meets() -> None:
    rows = {t.name: t for t in report.targets(results(), None, "synapse@abc1234")}
    assert rows["added delay per SSE event ≤ 0.05 ms (256 events, c=1)"].met is False
    assert (
        rows["added delay per SSE event ≤ 0.05 ms (paced: one event per write, c=1)"].met is False
    )
    assert rows["req/s at c=64 ≥ 5x synapse@abc1234"].measured == "1.0x"
    assert rows["RSS flat over the soak (growth < 5 MB)"].met is None


def test_without_a_baseline_the_ratio_target_is_not_applicable() -> None:
    r = results()
    del r["paths"]["synapse@abc1234"]
    r["meta"]["paths"].remove("synapse@abc1234")
    rows = {t.name: t for t in report.targets(r, None)}
    row = rows["req/s at c=64 ≥ 5x the baseline (not run)"]
    assert (row.measured, row.met) == ("n/a", None)


def test_evaluate_takes_the_worst_case_in_the_targets_direction() -> None:
    low = report.evaluate("t", {"a": 1.0, "b": 3.0, "c": None}, 2.0, "ms")
    assert (low.measured, low.met) == ("3.000 ms (b)", False)
    assert low.detail == "a 1.000 ms · b 3.000 ms"
    high = report.evaluate("t", {"a": 6.0, "b": 5.5}, 5.0, "x", at_least=True)
    assert (high.measured, high.met) == ("5.5x (b)", True)
    assert report.evaluate("t", {"a": None}, 1.0, "ms").met is None


def test_write_report_targets_first_then_every_path_side_by_side(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    md = report.write_report(results(), tmp_path)
    text = md.read_text()
    assert text.index("## Issue 17's targets") < text.index("## Setup")
    head = (
        "| target | synapse (worst case) | met? | synapse@abc1234 (worst case) | synapse per case |"
    )
    assert head in text
    assert "| req/s at c=64 ≥ 5x synapse@abc1234 | 6.0x | met | 1.0x |" in text
    # req/s per path, then synapse as a ratio of each other path.
    assert (
        "| /v1/embeddings | 64 | 20,000 | 12,000 | 2,000 | 500 | 60.0 % | 6.00x | 24.00x |" in text
    )
    assert "+0.150 / +0.600" in text
    assert "| synapse@abc1234 | 256 | 194.760 / 195.260 | 0.7600 |" in text
    assert "| synapse@abc1234 | 3 | 0.420 / 8.828 | 3.273 | 0.3200 | 0 |" in text
    assert "`/tmp/x/baseline-abc1234/src/synapse/__init__.py`" in text
    assert "abc1234 the aiohttp data path" in text
    assert "make bench BENCH_ARGS='--duration 3'" in text
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
