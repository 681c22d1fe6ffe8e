"""The pure policies: GBrowse's band semantics, dwell, removal order, hold, budget, bounds."""

from __future__ import annotations

import dataclasses
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.config.schema import Config, LoadRow, LoadTableSection, ScalingSection
from controller.policy.band import (
    BandPolicy,
    Member,
    PolicyInput,
    band_for,
    held_count,
    scale_out_count,
)
from controller.policy.baselines import GBrowsePolicy, StarClusterPolicy
from controller.policy.factory import make_policy
from controller.policy.forecast_settings import ForecastSettings
from controller.policy.forecasting import ForecastPolicy
from controller.policy.surge_forecast import SurgeForecaster

SEED_ROWS = (  # the seed's default table
    LoadRow(rps=0.1, min_instances=0, max_instances=1),
    LoadRow(rps=0.5, min_instances=0, max_instances=2),
    LoadRow(rps=1.0, min_instances=1, max_instances=3),
    LoadRow(rps=2.0, min_instances=2, max_instances=4),
)


def config(rows=SEED_ROWS, **scaling) -> Config:
    return Config(
        load_table=LoadTableSection(rows=tuple(rows)),
        scaling=dataclasses.replace(ScalingSection(), **scaling),
    )


def member(iid: str, launched_at: float = 0.0, **kw) -> Member:
    return Member(instance_id=iid, launched_at=launched_at, ready=kw.pop("ready", True), **kw)


def snapshot(now: float, load: float | None, members=(), **kw) -> PolicyInput:
    return PolicyInput(now=now, load_rps=load, window_rps=load, members=tuple(members), **kw)


# the band


@pytest.mark.parametrize(
    ("rps", "band"),
    [
        (0.0, (0, 0)),  # below the lowest row: no slaves
        (0.09, (0, 0)),
        (0.1, (0, 1)),  # a row applies at its own rate
        (0.3, (0, 1)),
        (0.5, (0, 2)),
        (1.5, (1, 3)),  # "between 1.0 and 2.0, at least 1, no more than 3"
        (2.0, (2, 4)),
        (500.0, (2, 4)),  # above the top: the top row
    ],
)
def test_band_follows_the_seed(rps, band):
    assert band_for(SEED_ROWS, rps) == band


def test_band_of_an_empty_table_is_zero():
    assert band_for((), 10.0) == (0, 0)


def test_below_min_launches_all_missing_at_once():
    d = BandPolicy(config()).decide(snapshot(0, 2.5, [member("a")]))
    assert d.band == (2, 4)
    assert (d.desired, d.launch, d.remove) == (2, 1, ())


def test_inside_the_band_nothing_changes():
    d = BandPolicy(config()).decide(snapshot(0, 1.5, [member("a"), member("b")]))
    assert (d.launch, d.remove) == (0, ())
    assert "no change" in d.reason


def test_pending_requests_and_booting_count_but_draining_does_not():
    policy = BandPolicy(config())
    booting = member("b", 5, ready=False)
    d = policy.decide(snapshot(0, 2.5, [member("a"), booting]))
    assert d.launch == 0
    d = policy.decide(snapshot(30, 2.5, [member("a")], pending_requests=1))
    assert d.launch == 0
    d = policy.decide(snapshot(60, 2.5, [member("a"), member("b", draining=True)]))
    assert d.launch == 1


def test_a_lost_slave_inside_the_band_is_replaced():
    policy = BandPolicy(config())
    policy.decide(snapshot(0, 1.5, [member("a"), member("b"), member("c")]))
    d = policy.decide(snapshot(30, 1.5, [member("a"), member("b")]))
    assert d.launch == 1


# dwell and removal


@pytest.mark.parametrize("make", [BandPolicy, ForecastPolicy])
def test_no_scale_in_before_the_dwell_and_yes_after(make):
    policy = make(config(scale_in_after=300))
    fleet = [member("a", 0), member("b", 10), member("c", 20)]
    for now in (0, 30, 150, 299):
        d = policy.decide(snapshot(now, 0.05, fleet))  # band [0, 0]
        assert d.remove == (), now
    d = policy.decide(snapshot(300, 0.05, fleet))
    assert sorted(d.remove) == ["a", "b", "c"]


def test_a_load_bump_restarts_the_dwell():
    policy = BandPolicy(config(scale_in_after=300))
    fleet = [member("a"), member("b"), member("c")]
    policy.decide(snapshot(0, 0.3, fleet))  # band [0, 1]: one too many... three
    policy.decide(snapshot(200, 2.5, fleet))  # band [2, 4]: none too many
    assert policy.decide(snapshot(400, 0.3, fleet)).remove == ()
    assert policy.decide(snapshot(690, 0.3, fleet)).remove == ()
    assert len(policy.decide(snapshot(700, 0.3, fleet)).remove) == 2


def test_removal_takes_interrupted_first_then_the_youngest():
    policy = BandPolicy(config(scale_in_after=0))
    fleet = [
        member("old", 0),
        member("young", 50),
        member("warned", 10, interrupted=True),
        member("leaving", 60, draining=True),
        member("booting", 40, ready=False),
    ]
    d = policy.decide(snapshot(100, 0.3, fleet))  # band [0, 1]; held: 4 (not the draining one)
    assert d.remove == ("warned", "young", "booting")


def test_never_below_min_when_removing():
    policy = BandPolicy(config(scale_in_after=0))
    fleet = [member(f"i{k}", k) for k in range(6)]
    d = policy.decide(snapshot(0, 2.5, fleet))  # band [2, 4]
    assert len(d.remove) == 2
    assert d.remove == ("i5", "i4")


# sensor lost, budget


@pytest.mark.parametrize("make", [BandPolicy, ForecastPolicy])
def test_a_lost_sensor_holds(make):
    policy = make(config(scale_in_after=60))
    fleet = [member("a"), member("b"), member("c"), member("d")]
    d = policy.decide(snapshot(0, 2.5, fleet))
    desired = d.desired
    for now in range(30, 1000, 30):
        d = policy.decide(snapshot(now, None, fleet))
        assert d.remove == () and d.launch == 0
        assert "sensor lost" in d.reason
    # a slave goes away while blind: replaced up to the last desired count, never more
    d = policy.decide(snapshot(1000, None, fleet[: desired - 1]))
    assert d.launch == 1 and d.remove == ()


def test_the_dwell_restarts_after_a_sensor_outage():
    policy = BandPolicy(config(scale_in_after=300))
    fleet = [member("a"), member("b"), member("c")]
    policy.decide(snapshot(0, 0.05, fleet))
    policy.decide(snapshot(200, None, fleet))
    assert policy.decide(snapshot(400, 0.05, fleet)).remove == ()
    assert policy.decide(snapshot(690, 0.05, fleet)).remove == ()
    assert len(policy.decide(snapshot(700, 0.05, fleet)).remove) == 3


@pytest.mark.parametrize("make", [BandPolicy, ForecastPolicy])
def test_budget_caps_launches(make):
    rows = (LoadRow(rps=0.0, min_instances=4, max_instances=6),)
    policy = make(config(rows, max_cost_per_hour=0.1))
    d = policy.decide(
        snapshot(0, 1.0, [member("a")], cost_per_hour=0.035, price_per_instance=0.035)
    )
    assert d.launch == 1  # 0.035 + 1 * 0.035 <= 0.1 < 0.035 + 2 * 0.035 ... and 3 * 0.035
    assert "budget cap" in d.reason


def test_no_budget_no_cap():
    rows = (LoadRow(rps=0.0, min_instances=4, max_instances=6),)
    d = BandPolicy(config(rows)).decide(snapshot(0, 1.0, (), price_per_instance=10.0))
    assert d.launch == 4


# ours


def wide_config(capacity=2.0, **scaling) -> Config:
    rows = (LoadRow(rps=0.0, min_instances=0, max_instances=100),)
    cfg = config(rows, **scaling)
    return dataclasses.replace(
        cfg, scaling=dataclasses.replace(cfg.scaling, slave_capacity_rps=capacity)
    )


def test_ours_tracks_the_load_inside_the_band():
    policy = ForecastPolicy(wide_config())
    d = policy.decide(snapshot(0, 10.0, ()))
    assert d.desired >= 5  # ceil(10 / 2) plus headroom
    assert d.launch == d.desired


def test_ours_launches_ahead_of_a_rising_load():
    policy = ForecastPolicy(wide_config())
    desired = []
    for k in range(20):
        fleet = [member(f"i{j}") for j in range(desired[-1] if desired else 0)]
        d = policy.decide(snapshot(30 * k, 10.0 + 2.0 * k, fleet))
        desired.append(d.desired)
    # at the last poll the load is 48 rps (24 slaves); a boot later it will be ~56
    assert desired[-1] > 48 / 2


def test_ours_is_clamped_by_the_band():
    rows = (LoadRow(rps=0.0, min_instances=1, max_instances=3),)
    policy = ForecastPolicy(
        dataclasses.replace(wide_config(), load_table=LoadTableSection(rows=rows))
    )
    d = policy.decide(snapshot(0, 100.0, ()))
    assert (d.band, d.desired, d.launch) == ((1, 3), 3, 3)


# bounds, as a property


@st.composite
def tables(draw):
    n = draw(st.integers(1, 5))
    rates = sorted(draw(st.lists(st.floats(0, 50), min_size=n, max_size=n, unique=True)))
    rows = []
    for rate in rates:
        low = draw(st.integers(0, 6))
        rows.append(
            LoadRow(rps=rate, min_instances=low, max_instances=low + draw(st.integers(0, 6)))
        )
    return tuple(rows)


step = st.tuples(
    st.one_of(st.none(), st.floats(0, 80)),  # load
    st.integers(0, 12),  # members
    st.integers(0, 3),  # pending requests
    st.sets(st.integers(0, 11)),  # which members are draining
    st.sets(st.integers(0, 11)),  # which are interrupted
)


@settings(max_examples=150, deadline=None)
@given(
    rows=tables(),
    name=st.sampled_from(["ours", "table"]),
    steps=st.lists(step, min_size=1, max_size=25),
)
def test_never_above_max_nor_below_min(rows, name, steps):
    cfg = config(
        rows, scale_in_after=60, slave_capacity_rps=wide_config().scaling.slave_capacity_rps
    )
    policy = make_policy(name, cfg)
    for k, (load, n, pending, draining, warned) in enumerate(steps):
        fleet = [
            member(
                f"i{j}", j, draining=j in draining, interrupted=j in warned and j not in draining
            )
            for j in range(n)
        ]
        inp = snapshot(30.0 * k, load, fleet, pending_requests=pending)
        d = policy.decide(inp)
        low, high = d.band
        assert len(set(d.remove)) == len(d.remove)
        removable = {m.instance_id for m in fleet if not m.draining}
        assert set(d.remove) <= removable
        if load is None:
            assert d.remove == ()
            continue
        assert d.band == band_for(rows, load)
        assert low <= d.desired <= high
        if d.launch:
            assert scale_out_count(inp) + d.launch <= high  # launches never go above max
            warned_ids = {m.instance_id for m in fleet if m.interrupted}
            assert set(d.remove) <= warned_ids  # only slaves already going away leave then
        if d.remove:
            # removals never go below min
            assert held_count(inp) + d.launch - len(d.remove) >= low


# baselines


def test_gbrowse_has_no_dwell_and_drops_pending_ones_first():
    policy = GBrowsePolicy(config())
    fleet = [member("a"), member("b"), member("c", 9, ready=False)]
    d = policy.decide(snapshot(0, 0.3, fleet))  # band [0, 1]
    assert d.remove == ("c", "a")


def test_gbrowse_counts_open_requests_as_slaves():
    d = GBrowsePolicy(config()).decide(snapshot(0, 2.5, (), pending_requests=2))
    assert d.launch == 0


def test_gbrowse_lifetime_average_lags_the_load():
    policy = make_policy("gbrowse-lifetime", config())
    for k in range(100):
        policy.decide(snapshot(30 * k, 0.0, ()))
    d = policy.decide(snapshot(3000, 2.5, ()))  # the real load is 2.5 rps: band [2, 4]
    assert d.band == (0, 0)


def test_starcluster_adds_one_node_per_pass_after_the_wait():
    cfg = wide_config()
    policy = StarClusterPolicy(cfg)
    launches = [policy.decide(snapshot(30 * k, 10.0, ())).launch for k in range(18)]
    assert launches[:11] == [0] * 11  # the "oldest job" must wait more than 300 s
    assert launches[11:] == [1, 0, 0, 0, 0, 0, 1]  # one node, then 180 s of stabilisation


def test_unknown_policy_is_refused():
    with pytest.raises(ValueError, match="unknown policy"):
        make_policy("clairvoyant", config())


def test_ours_sheds_an_in_band_surplus_after_two_polls_not_the_band_dwell():
    # Changed with the seasonal forecast: the in-band dwell was one lead (120 s); a surplus the
    # forecast asked for and the load did not confirm now goes after two polls (60 s).
    policy = ForecastPolicy(  # band [0, 100]
        wide_config(scale_in_after=300), settings=ForecastSettings(warmup_samples=0)
    )
    fleet = [member(f"i{k}", k) for k in range(10)]
    for now in (0, 30):
        d = policy.decide(snapshot(now, 4.0, fleet))  # 2 slaves' worth, plus headroom
        assert d.remove == () and d.desired < 10, now
        assert "holding surplus" in d.reason or now == 0
    d = policy.decide(snapshot(60, 4.0, fleet))
    assert len(d.remove) == 7  # down to 3: the highest desired of the last 60 s (20 % headroom)
    assert d.remove[0] == "i9"  # the youngest first


def test_table_policy_keeps_one_dwell_for_both():
    policy = BandPolicy(config(scale_in_after=300))
    assert policy.shrink_after == 300


def test_ours_headroom_ignores_shortfalls_the_table_forbade():
    """A need above the band's max cannot be met by headroom: it must not raise the quantile."""
    capped = (LoadRow(rps=0.0, min_instances=0, max_instances=2),)
    wide = ForecastPolicy(wide_config(capacity=1.0))
    tight = ForecastPolicy(
        dataclasses.replace(wide_config(capacity=1.0), load_table=LoadTableSection(rows=capped))
    )
    for now in range(0, 600, 30):
        wide.decide(snapshot(now, 10.0, ()))  # nothing ready, 10 needed: short
        tight.decide(snapshot(now, 10.0, ()))
    assert wide.quantile > 0.9 + 10 * wide.settings.quantile_gain
    # only the first poll counted, before any band had been seen
    assert tight.quantile <= 0.9 + tight.settings.quantile_gain


# ours: the forecast


def replay(policy: ForecastPolicy, loads, start: float = 0.0) -> list[int]:
    """Feed one load per 30 s poll with a ready fleet of the last desired size; the desireds."""
    desired, size = [], 0
    for k, load in enumerate(loads):
        d = policy.decide(snapshot(start + 30.0 * k, load, [member(f"i{j}") for j in range(size)]))
        size = d.desired
        desired.append(d.desired)
    return desired


def hour_with_surge(surge: bool) -> list[float]:
    """120 polls at 10 rps; with a surge, 40 rps from minute 30 to 35."""
    return [40.0 if surge and 60 <= k < 70 else 10.0 for k in range(120)]


def test_ours_launches_ahead_of_a_surge_that_recurs_at_the_same_phase():
    """Seasonal profile: a surge seen at this phase in 2 of the last periods is launched for."""
    recurring = ForecastPolicy(
        wide_config(capacity=1.0),
        settings=ForecastSettings(season_seconds=(3600.0,), season_rank=2),
    )
    once = ForecastPolicy(
        wide_config(capacity=1.0),
        settings=ForecastSettings(season_seconds=(3600.0,), season_rank=2),
    )
    for hour, (a, b) in enumerate([(True, True), (True, False), (True, False)]):
        replay(recurring, hour_with_surge(a), start=3600.0 * hour)
        replay(once, hour_with_surge(b), start=3600.0 * hour)
    ahead = replay(recurring, hour_with_surge(False), start=3 * 3600.0)
    quiet = replay(once, hour_with_surge(False), start=3 * 3600.0)
    # a lead (boot 90 s + a poll) before minute 30 the fleet is already sized for the surge
    assert max(ahead[55:60]) >= 40
    assert max(quiet[55:60]) < 20  # one surge, three periods ago: not a pattern
    assert max(ahead[80:120]) < 20  # the rest of the hour stays near the load


def test_ours_headroom_ignores_shortfalls_no_headroom_would_have_covered():
    """A jump beyond every excess seen one lead ago must not push the global quantile up."""
    jumped = ForecastPolicy(wide_config(capacity=1.0), settings=ForecastSettings(season_seconds=()))
    starved = ForecastPolicy(
        wide_config(capacity=1.0), settings=ForecastSettings(season_seconds=())
    )
    for policy in (jumped, starved):
        replay(policy, [10.0] * 40)  # a steady load: every excess is 0
    before = jumped.quantile
    for now in (1200, 1230, 1260, 1290):  # within one lead of the jump
        jumped.decide(snapshot(now, 100.0, [member(f"i{j}") for j in range(12)]))
        starved.decide(snapshot(now, 10.0, [member(f"i{j}") for j in range(5)]))
    assert jumped.quantile <= before  # 100 needed, 10 forecast: no headroom could have helped
    assert starved.quantile > before  # 10 needed and forecast, 5 ready: a shortfall to fix


def test_ours_trend_is_off_by_default_and_extrapolates_when_set():
    ramp = [10.0 + 2.0 * k for k in range(8)]
    plain = ForecastPolicy(wide_config(capacity=1.0))
    trended = ForecastPolicy(
        wide_config(capacity=1.0), settings=ForecastSettings(trend_seconds=600.0)
    )
    replay(plain, ramp)
    replay(trended, ramp)
    inp = snapshot(240.0, 26.0, ())
    assert plain.level(inp) == 26.0
    assert trended.level(inp) > 26.0 + 2.0 * 3  # 2 rps per poll for a 120 s lead: about +8


def two_hours(surge: bool) -> list[float]:
    """240 polls at 10 rps; with a surge, 40 rps from minute 32 to 37 (Twitter's pattern)."""
    return [40.0 if surge and 64 <= k < 74 else 10.0 for k in range(240)]


def test_ours_launches_ahead_of_a_surge_at_its_learnt_phase_and_gap():
    """Surge phase: surges every 2 h at minute 32 are launched for one lead before they start."""
    learnt = ForecastPolicy(wide_config(capacity=1.0), settings=ForecastSettings(season_seconds=()))
    never = SurgeForecaster(poll=30.0, min_rise=3.0, share=2.0)  # no phase has 200 % of them
    off = ForecastPolicy(
        wide_config(capacity=1.0), settings=ForecastSettings(season_seconds=()), surges=never
    )
    for period in range(5):
        replay(learnt, two_hours(True), start=7200.0 * period)
        replay(off, two_hours(True), start=7200.0 * period)
    ahead = replay(learnt, two_hours(False), start=5 * 7200.0)
    late = replay(off, two_hours(False), start=5 * 7200.0)
    assert min(ahead[60:64]) >= 40  # a lead (boot 90 s + a poll) before minute 32
    assert max(ahead[:55]) < 20 and max(ahead[70:]) < 20  # nothing at other phases
    assert max(late[55:70]) < 20  # without it only the load tells, one boot too late


def test_ours_sheds_a_forecast_surge_that_did_not_come_at_once():
    """A false alarm's slaves go the poll after its phase, not after the in-band dwell."""

    def removals_after_false_alarm(policy: ForecastPolicy) -> list[int]:
        for period in range(5):
            replay(policy, two_hours(True), start=7200.0 * period)
        size, removed = 0, []
        for k, load in enumerate(two_hours(False)[:72]):
            fleet = [member(f"i{j}", j) for j in range(size)]
            d = policy.decide(snapshot(5 * 7200.0 + 30.0 * k, load, fleet))
            size += d.launch - len(d.remove)
            removed.append(len(d.remove))
        return removed

    shed = removals_after_false_alarm(
        ForecastPolicy(wide_config(capacity=1.0), settings=ForecastSettings(season_seconds=()))
    )
    kept = removals_after_false_alarm(
        ForecastPolicy(
            wide_config(capacity=1.0),
            settings=ForecastSettings(season_seconds=(), surge_shed=False),
        )
    )
    assert shed[65] >= 20  # the surge was due at poll 64 and did not come
    assert kept[65] == 0 and kept[66] == 0 and sum(kept[67:]) >= 20  # two polls later


def test_ours_starts_with_a_wide_headroom_until_it_has_seen_the_noise():
    policy = ForecastPolicy(
        wide_config(capacity=1.0), settings=ForecastSettings(warmup_samples=10, warmup_headroom=1.0)
    )
    assert policy.decide(snapshot(0, 10.0, ())).desired == 20  # 10 rps + 100 %
    for k in range(1, 20):  # a steady load: its errors are 0 once a lead has passed
        d = policy.decide(snapshot(30 * k, 10.0, ()))
    assert d.desired == 10


def noisy_run(policy: ForecastPolicy, polls: int = 400) -> list[int]:
    """5 or 15 rps at random each poll (mean 10): counting noise on a small site."""
    desired, rng = [], random.Random(7)
    for k in range(polls):
        load = rng.choice((5.0, 15.0))
        inp = PolicyInput(now=30.0 * k, load_rps=load, window_rps=load, members=())
        desired.append(policy.decide(inp).desired)
    return desired


def test_ours_tracks_the_mean_where_the_level_now_only_chases_noise():
    cfg = wide_config(capacity=1.0)
    plain = ForecastPolicy(
        cfg,
        settings=ForecastSettings(smooth_seconds=(), error_scales=("relative",), season_seconds=()),
    )
    smoothed = ForecastPolicy(cfg, settings=ForecastSettings(season_seconds=()))
    late_plain, late_smoothed = noisy_run(plain)[200:], noisy_run(smoothed)[200:]
    assert smoothed.estimator.startswith("mean 900s")
    assert plain.estimator == "now"
    # Both cover 15 rps; chasing the noise costs more (a 15 rps level plus headroom).
    assert min(late_smoothed) >= 15 and min(late_plain) >= 15
    assert sum(late_smoothed) < sum(late_plain)


def fleet_replay(policy: ForecastPolicy, loads) -> list[int]:
    """Feed one load per 30 s poll to a fleet that grows and shrinks as decided; its sizes."""
    size, sizes = 0, []
    for k, load in enumerate(loads):
        fleet = [member(f"i{j:03}", j) for j in range(size)]
        d = policy.decide(snapshot(30.0 * k, load, fleet))
        size += d.launch - len(d.remove)
        sizes.append(size)
    return sizes


def test_ours_follows_a_surge_down_without_waiting_the_dwell():
    surge = [10.0] * 150 + [40.0] * 6 + [34.0, 28.0, 22.0, 16.0, 10.0] + [10.0] * 10
    cfg = wide_config(capacity=1.0)
    quick = fleet_replay(ForecastPolicy(cfg, settings=ForecastSettings(season_seconds=())), surge)
    slow = fleet_replay(
        ForecastPolicy(
            cfg, settings=ForecastSettings(season_seconds=(), decline_polls=0, decay_seconds=0)
        ),
        surge,
    )
    assert quick[150:156] == slow[150:156] == [40] * 6
    # 40, 34, 28, 22: three falls in a row, so the surplus goes at once, down to the load as it
    # is (the window would still say 31); without the rule it waits two polls and the window
    assert quick[158] == 22 and slow[158] == 34
    assert sum(quick[156:166]) < sum(slow[156:166])
    assert quick[-1] == slow[-1] == 10
