"""Statistics and threshold logic of `synapse bench` (pure functions)."""

from __future__ import annotations

import pytest

from synapse.ops.bench import StreamResult, Threshold, evaluate, overhead, percentile, summarize


def test_percentile_interpolates_like_numpy_linear() -> None:
    data = [4.0, 1.0, 3.0, 2.0]  # unsorted on purpose
    assert percentile(data, 0) == 1.0
    assert percentile(data, 100) == 4.0
    assert percentile(data, 50) == pytest.approx(2.5)
    assert percentile(data, 90) == pytest.approx(3.7)  # numpy.percentile(..., 90) == 3.7
    assert percentile([7.0], 99) == 7.0


@pytest.mark.parametrize("q", [-1, 101])
def test_percentile_rejects_bad_q(q: float) -> None:
    with pytest.raises(ValueError):
        percentile([1.0], q)


def test_percentile_rejects_empty() -> None:
    with pytest.raises(ValueError):
        percentile([], 50)


def test_summarize_orders_and_counts() -> None:
    samples = [float(i) for i in range(1, 101)]
    s = summarize(samples)
    assert s["n"] == 100
    assert s["min"] == 1.0 and s["max"] == 100.0
    assert s["mean"] == pytest.approx(50.5)
    assert s["p50"] <= s["p95"] <= s["p99"] <= s["max"]
    assert s["p99"] == pytest.approx(99.01)
    assert summarize([]) == {"n": 0}


def test_threshold_directions_and_na() -> None:
    assert Threshold("x", 50.0, 100.0, "<", "ms").passed is True
    assert Threshold("x", 150.0, 100.0, "<", "ms").passed is False
    assert Threshold("x", 150.0, 100.0, ">", "tok/s").passed is True
    assert Threshold("x", 99.0, 100.0, ">", "tok/s").passed is False
    assert Threshold("x", None, 100.0, "<", "ms").passed is None
    assert Threshold("x", 1.0, 2.0, "<", "ms").as_dict()["pass"] is True


def test_evaluate_reads_results_and_marks_missing_na() -> None:
    results = {
        "embedding": {"gateway": {"latency_ms": {"p50": 42.0}}},
        "chat": {"gateway": {"tokens_per_s": {"p50": 80.0}}},
        "overhead_ms": 3.0,
    }
    by_name = {t.name: t for t in evaluate(results)}
    assert by_name["embedding latency p50 (gateway)"].passed is True
    assert by_name["chat tokens/s p50 (gateway)"].passed is False  # 80 < 100
    assert by_name["routing overhead p50"].passed is True
    empty = evaluate({})
    assert [t.passed for t in empty] == [None, None, None]
    strict = {t.name: t for t in evaluate(results, embed_limit_ms=10.0)}
    assert strict["embedding latency p50 (gateway)"].passed is False


def test_overhead_prefers_embeddings_then_ttft() -> None:
    both = {
        "embedding": {
            "gateway": {"latency_ms": {"p50": 12.0}},
            "direct": {"latency_ms": {"p50": 10.5}},
        },
        "chat": {"gateway": {"ttft_ms": {"p50": 30.0}}, "direct": {"ttft_ms": {"p50": 20.0}}},
    }
    assert overhead(both) == pytest.approx(1.5)
    chat_only = {"chat": both["chat"], "embedding": {"gateway": both["embedding"]["gateway"]}}
    assert overhead(chat_only) == pytest.approx(10.0)
    assert overhead({}) is None


def test_stream_result_rates() -> None:
    r = StreamResult(first_s=0.1, end_s=1.1, chunks=5, completion_tokens=101)
    assert r.tokens == 101
    assert r.decode_tokens_per_s == pytest.approx(100.0)
    no_usage = StreamResult(first_s=0.1, end_s=0.6, chunks=6, completion_tokens=None)
    assert no_usage.tokens == 6
    assert no_usage.decode_tokens_per_s == pytest.approx(10.0)
    assert StreamResult(None, 1.0, 0, None).decode_tokens_per_s is None
