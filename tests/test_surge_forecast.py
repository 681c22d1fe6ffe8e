"""Surge forecasting: where surges start, and the chance of one given the time since the last."""

import pytest

from controller.policy.surge_forecast import SurgeForecaster

POLL = 30.0


def forecaster(**kw) -> SurgeForecaster:
    kw = {"poll": POLL, "min_rise": 5.0, "period": 1800.0, "history": 14 * 86400.0, **kw}
    return SurgeForecaster(**kw)


def feed(f: SurgeForecaster, loads: list[float], start: float = 0.0) -> None:
    for k, load in enumerate(loads):
        f.observe(start + POLL * k, load)


def test_a_surge_starts_at_a_several_fold_jump_and_its_peak_is_its_first_three_polls():
    f = forecaster()
    feed(f, [10, 10, 10, 30, 45, 40, 50, 10, 10, 10])
    assert f.last_start == 3 * POLL
    assert list(f._peaks) == [45]  # 30, 45, 40: the peak; 50 is a poll too late


@pytest.mark.parametrize(
    "loads",
    [
        [0, 0, 0, 40, 40],  # the load coming back from zero is no surge
        [10, 10, 10, 19, 19],  # less than twice the base
        [1, 1, 1, 4, 4],  # four-fold, but less than min_rise above the base
    ],
)
def test_what_is_not_a_surge(loads):
    f = forecaster()
    feed(f, loads)
    assert f.last_start is None


def test_a_surge_still_rising_is_the_same_surge():
    f = forecaster(refractory=600.0)
    feed(f, [10, 10, 10, 25, 10, 10, 10, 60, 10])  # a second jump 120 s after the first
    assert list(f._starts) == [3 * POLL]


def every_hour_at_minute_two(f: SurgeForecaster, hours: int) -> None:
    """Surges at minute 2 of every hour: the phase at minute 32 never sees one."""
    for hour in range(hours):
        loads = [10.0] * 120
        loads[4] = 40.0  # minute 2
        feed(f, loads, start=3600.0 * hour)


def test_the_chance_at_a_phase_depends_on_the_time_since_the_last_surge():
    f = forecaster()  # period 30 min: minute 2 and minute 32 are the same phase
    every_hour_at_minute_two(f, hours=48)
    now = 48 * 3600.0
    phase = f.phase(now + 4 * POLL)
    after_half_an_hour = f.chance(now, phase, 1800.0)
    after_an_hour = f.chance(now, phase, 3600.0)
    assert after_an_hour > 0.9
    assert after_half_an_hour < 0.1
    # so the surge is due at minute 2 (an hour after the last), not at minute 32
    assert f.due(now + 2 * POLL, lead=120.0) == 40.0
    feed(f, [10.0] * 4 + [40.0] + [10.0] * 50, start=now)  # it came; half an hour later:
    assert f.due(now + 1800.0 + 2 * POLL, lead=120.0) == 0.0


def test_no_surge_is_due_at_a_phase_that_rarely_saw_one():
    f = forecaster(period=3600.0, share=0.5)
    every_hour_at_minute_two(f, hours=48)
    now = 48 * 3600.0
    assert f.due(now + 2 * POLL, lead=120.0) == 40.0  # every surge was at this phase
    assert f.due(now + 600.0, lead=120.0) == 0.0  # minute 10: none ever came there


def test_nothing_is_due_before_a_few_surges_were_seen():
    f = forecaster()
    every_hour_at_minute_two(f, hours=3)
    assert f.due(3 * 3600.0 + 2 * POLL, lead=120.0) == 0.0
