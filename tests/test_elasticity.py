"""SPEC RG elasticity metrics on small timelines computed by hand."""

import pytest

from controller.simulation.elasticity import (
    instability,
    metrics,
    over_accuracy,
    over_timeshare,
    under_accuracy,
    under_timeshare,
)


def test_a_ramp_followed_one_step_late():
    demand = [2, 2, 4, 4]
    supply = [2, 2, 3, 4]
    # step 3 misses 1 of 4: (1/4) / 4 steps = 6.25 %
    assert under_accuracy(demand, supply) == pytest.approx(6.25)
    assert over_accuracy(demand, supply) == 0.0
    assert under_timeshare(demand, supply) == pytest.approx(25.0)
    assert over_timeshare(demand, supply) == 0.0
    # changes: (d 0, s 0) alike; (d +, s +) alike; (d 0, s +) differ -> 1 of 3 steps
    assert instability(demand, supply) == pytest.approx(100 / 3)


def test_durations_weight_each_step():
    demand = [1, 0]
    supply = [0, 2]
    durations = [3.0, 1.0]
    # 3 s missing all of 1 slave; 1 s with 2 spare over a demand of 0 (floored at 1 slave)
    assert under_accuracy(demand, supply, durations) == pytest.approx(75.0)
    assert over_accuracy(demand, supply, durations) == pytest.approx(50.0)
    assert under_timeshare(demand, supply, durations) == pytest.approx(75.0)
    assert over_timeshare(demand, supply, durations) == pytest.approx(25.0)
    assert instability(demand, supply, durations) == pytest.approx(100.0)


def test_over_provisioning_relative_to_demand():
    demand = [4, 4]
    supply = [6, 4]
    assert over_accuracy(demand, supply) == pytest.approx((2 / 4) / 2 * 100)
    assert over_timeshare(demand, supply) == pytest.approx(50.0)


def test_supply_moving_against_demand_is_unstable():
    assert instability([1, 2, 1], [2, 1, 2]) == pytest.approx(100.0)


def test_a_perfect_follower_scores_zero_everywhere():
    demand = [0, 3, 5, 5, 2, 0]
    m = metrics(demand, list(demand))
    assert m.as_dict() == {
        "theta_u": 0.0,
        "theta_o": 0.0,
        "tau_u": 0.0,
        "tau_o": 0.0,
        "instability": 0.0,
    }


def test_mismatched_lengths_are_refused():
    with pytest.raises(ValueError):
        under_accuracy([1, 2], [1])
    with pytest.raises(ValueError):
        over_timeshare([1, 2], [1, 2], [1.0])
