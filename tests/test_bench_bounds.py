"""The known-rate bound the policy benchmark prints, on a trace small enough to work by hand."""

from __future__ import annotations

import math

import pytest

from controller.simulation.trace import Trace
from tests.bench_scripts import load_bench

bench = load_bench("policy")


def poisson_tail(mean: float, x: int) -> float:
    return 1.0 - sum(math.exp(-mean) * mean**k / math.factorial(k) for k in range(x + 1))


def steady(count: float, buckets: int = 100) -> Trace:
    return Trace(path="steady", start=0.0, bucket_seconds=60.0, rps=(count / 60.0,) * buckets)


def test_a_steady_rate_needs_the_poisson_quantile_mixed_to_the_short_budget():
    # 4 requests a minute, one slave serves 4 a minute: a count is Poisson(4) (the least spread
    # the model allows), and q slaves are short when it exceeds 4 q
    trace = steady(4.0)
    cfg = bench.bench_config(trace, peak=1, boot=90.0)
    two, three = poisson_tail(4, 8), poisson_tail(4, 12)
    assert three < 0.02 < two
    at_three = (two - 0.02) / (two - three)  # share of buckets at 3 slaves, the rest at 2
    slave_hours = 100 * (2 + at_three) / 60
    assert bench.known_rate_bound(trace, cfg, tau_u=2.0) == pytest.approx(
        slave_hours * cfg.simulate.spot_price, rel=1e-6
    )


def test_being_short_everywhere_costs_nothing_and_a_tighter_goal_costs_more():
    trace = steady(4.0)
    cfg = bench.bench_config(trace, peak=1, boot=90.0)
    assert bench.known_rate_bound(trace, cfg, tau_u=100.0) == pytest.approx(0.0, abs=1e-9)
    costs = [bench.known_rate_bound(trace, cfg, tau_u=t) for t in (10.0, 2.0, 0.5)]
    assert costs == sorted(costs) and costs[0] < costs[-1]


def test_a_noisier_trace_of_the_same_mean_needs_more():
    calm = steady(40.0, 60)
    noisy = Trace(
        path="noisy",
        start=0.0,
        bucket_seconds=60.0,
        rps=tuple((20.0 + 40.0 * (i % 2)) / 60 for i in range(60)),
    )
    cfg = bench.bench_config(noisy, peak=6, boot=90.0)  # the same capacity for both
    assert bench.known_rate_bound(noisy, cfg) > bench.known_rate_bound(calm, cfg)
