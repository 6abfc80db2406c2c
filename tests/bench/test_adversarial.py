"""bench/adversarial.py's readings of the lag histogram and its linearity ratio."""

from __future__ import annotations

import adversarial


def test_longest_stall_is_the_bucket_holding_the_latest_wake() -> None:
    before = {"0.1": 10, "0.5": 10, "2.5": 10, "10.0": 10, "+Inf": 10, "count": 10, "sum": 0.1}
    # three more wakes: two on time, one between 2.5 s and 10 s late
    after = {"0.1": 12, "0.5": 12, "2.5": 12, "10.0": 13, "+Inf": 13, "count": 13, "sum": 6.2}
    assert adversarial.longest(before, after) == "≤ 10 s"
    after_all_on_time = {**before, "0.1": 12, "0.5": 12, "2.5": 12, "10.0": 12, "count": 12}
    assert adversarial.longest(before, after_all_on_time) == "≤ 0.1 s"
    beyond = {**after, "10.0": 12}
    assert adversarial.longest(before, beyond) == "> 10 s"


def test_cpu_per_unit_ratio_is_flat_when_linear_and_grows_when_quadratic() -> None:
    linear = [{"size": s, "cpu_s": 0.01 * s} for s in (1, 2, 4, 8)]
    quadratic = [{"size": s, "cpu_s": 0.01 * s * s} for s in (1, 2, 4, 8)]
    assert adversarial.per_unit_ratio(linear) == [1.0, 1.0, 1.0, 1.0]
    assert adversarial.per_unit_ratio(quadratic) == [1.0, 2.0, 4.0, 8.0]
