"""The policy's incremental structures give exactly what computing from scratch gives.

The forecasting policy runs on every poll of a replay (a quarter of a million on the WorldCup
trace), so it keeps its books, seasonal excesses, bands and surge phases as data arrive. Each
test here feeds random sequences to the incremental structure and to a from-scratch model of
what it should hold, and asks for the same answers.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.config.schema import Config, LoadRow, LoadTableSection, MasterSection
from controller.policy.band import BandPolicy, Member, PolicyInput, band_for
from controller.policy.error_book import ErrorBook, ErrorBooks
from controller.policy.forecast_settings import ForecastSettings
from controller.policy.forecasting import ForecastPolicy
from controller.policy.pool_profile import PoolMember, SlaveProfile
from controller.policy.surge_forecast import SurgeForecaster

SCALES = ("relative", "sqrt", "relative", "sqrt")
# a site's rates, from 0.01 up: a running sum adding 1e-188 to 0.5 loses it (the recount does not)
rates = st.sampled_from([0.0, 0.5, 1.0, 2.0, 3.0]) | st.floats(0.01, 500.0)


def excess_of(rps: float, level: float, floor: float, scale: str) -> tuple[float, float]:
    """(excess, unit) as the module defines them."""
    base = max(level, floor)
    unit = base if scale == "relative" else math.sqrt(base * floor)
    return ((rps - level) / unit if unit > 0 else 0.0), unit


class FromScratch:
    """Every score ever made, kept or not; what a book holds is recomputed at each question."""

    def __init__(self, horizon: float, floor: float, scales: tuple[str, ...]):
        self.horizon, self.floor, self.scales = horizon, floor, scales
        self.pending: list[tuple[float, float, tuple[float, ...]]] = []
        self.rows: list[tuple[float, tuple[float, ...], tuple[float, ...], tuple[float, ...]]] = []
        self.now = -math.inf

    def add(self, made: float, due: float, levels: tuple[float, ...]) -> None:
        self.pending.append((made, due, levels))

    def score(self, now: float, rps: float) -> list[tuple[float, float]]:
        self.now, scored = now, []
        while self.pending and self.pending[0][1] <= now:  # in the order they were made
            made, _, levels = self.pending.pop(0)
            pairs = [
                excess_of(rps, lv, self.floor, s) for lv, s in zip(levels, self.scales, strict=True)
            ]
            self.rows.append((now, tuple(e for e, _ in pairs), levels, tuple(u for _, u in pairs)))
            scored.append((made, pairs[0][0]))
        return scored

    def kept(self, book: int) -> list[tuple[float, float, float]]:
        """(excess, level, unit) of the scores still within the horizon."""
        return [
            (e[book], lv[book], u[book])
            for at, e, lv, u in self.rows
            if at >= self.now - self.horizon
        ]

    def at(self, book: int, quantile: float) -> float | None:
        errs = sorted(e for e, _, _ in self.kept(book))
        return errs[min(len(errs) - 1, int(quantile * len(errs)))] if errs else None

    def cover_cost(self, book: int, quantile: float) -> float:
        kept = self.kept(book)
        if not kept:
            return math.inf
        headroom = max(0.0, self.at(book, quantile) or 0.0)
        return sum(lv + headroom * u for _, lv, u in kept) / len(kept)


polls = st.lists(
    st.tuples(
        st.integers(0, 3),  # polls since the last one (0: the same time again)
        st.integers(0, 4),  # the lead, in polls
        st.tuples(rates, rates, rates, rates),  # the four levels made
        rates,  # the load then
    ),
    max_size=40,
)


@settings(max_examples=120, deadline=None)
@given(
    steps=polls,
    horizon=st.sampled_from([0.0, 30.0, 90.0, 300.0]),
    floor=st.sampled_from([0.0, 1.0, 2.0]),
    quantile=st.sampled_from([0.0, 0.5, 0.9, 0.975, 1.0]),
)
def test_books_due_together_hold_what_each_book_alone_and_a_recount_hold(
    steps, horizon, floor, quantile
):
    shared = ErrorBooks(horizon=horizon, floor=floor, scales=SCALES)
    alone = [ErrorBook(horizon=horizon, floor=floor, scale=s) for s in SCALES]
    model = FromScratch(horizon, floor, SCALES)
    now = 0.0
    for gap, lead, levels, rps in steps:
        now += 30.0 * gap
        shared.add(now, now + 30.0 * lead, levels)
        model.add(now, now + 30.0 * lead, levels)
        for book, level in zip(alone, levels, strict=True):
            book.add(now, now + 30.0 * lead, level)
        scored = shared.score(now, rps)
        assert scored == model.score(now, rps)
        each = [book.score(now, rps) for book in alone]  # every book scores alone
        assert each[0] == scored
        for k, (book, single) in enumerate(zip(shared.books, alone, strict=True)):
            expected = model.at(k, quantile)
            assert len(book) == len(single) == len(model.kept(k))
            assert book.at(quantile, -9.0) == single.at(quantile, -9.0)
            assert book.at(quantile, -9.0) == (-9.0 if expected is None else expected)
            assert book.cover_cost(quantile) == single.cover_cost(quantile)
            assert book.cover_cost(quantile) == pytest.approx(
                model.cover_cost(k, quantile), rel=1e-6, abs=1e-6
            )


def seasonal_from_scratch(
    filed: list[tuple[float, float]], now: float, poll: float, s: ForecastSettings
) -> float:
    """The seasonal headroom from every excess ever filed: per phase slot, the worst excess of
    each period index, of the last `season_periods` indices that slot was filed at."""
    best = 0.0
    for period in s.season_seconds:
        slots = max(1, round(period / poll))
        by_slot: dict[int, dict[int, float]] = {}
        for made, excess in filed:
            worst = by_slot.setdefault(int((made % period) // poll), {})
            index = int(made // period)
            worst[index] = max(worst.get(index, excess), excess)
        index, slot = int(now // period), int((now % period) // poll)
        merged: dict[int, float] = {}
        for k in range(slot, slot + s.season_width + 1):
            worst = by_slot.get(k % slots, {})
            last = max(worst, default=0)
            for i, e in worst.items():
                if i > last - s.season_periods and i >= index - s.season_periods:
                    merged[i] = max(merged.get(i, e), e)
        if len(merged) >= s.season_rank:
            best = max(best, sorted(merged.values(), reverse=True)[s.season_rank - 1])
    return best


@settings(max_examples=200, deadline=None)
@given(
    filings=st.lists(
        st.tuples(st.integers(0, 4), st.floats(-2.0, 5.0), st.integers(0, 6)), max_size=80
    ),
    period=st.sampled_from([100.0, 300.0, 330.0]),  # 100 s: slots that do not divide it
    periods=st.integers(1, 4),
    width=st.integers(0, 2),
    rank=st.integers(1, 3),
)
def test_the_seasonal_headroom_is_what_the_filed_excesses_say(
    filings, period, periods, width, rank
):
    s = ForecastSettings(
        season_seconds=(period,), season_periods=periods, season_width=width, season_rank=rank
    )
    policy = ForecastPolicy(Config(master=MasterSection(poll_interval=30.0)), settings=s)
    filed: list[tuple[float, float]] = []
    made = 0.0
    for gap, excess, ahead in filings:
        made += 15.0 * gap  # half polls: two excesses may fall in one slot
        policy._file_seasonal(made, excess)
        filed.append((made, excess))
        now = made + 30.0 * ahead
        assert policy.seasonal_headroom(now) == seasonal_from_scratch(filed, now, 30.0, s)


@given(
    steps=st.lists(st.floats(0.0, 100.0), min_size=1, max_size=6, unique=True),
    rps=st.lists(st.floats(0.0, 120.0) | st.sampled_from([0.0, 1.0, 2.5, 10.0]), max_size=30),
    ascending=st.booleans(),
)
def test_the_band_by_bisection_is_band_for(steps, rps, ascending):
    rates_ = sorted(steps) if ascending else steps
    rows = tuple(LoadRow(rps=r, min_instances=k, max_instances=k + 2) for k, r in enumerate(rates_))
    policy = BandPolicy(Config(load_table=LoadTableSection(rows=rows)))
    for r in [*rps, *rates_]:
        assert policy._band(r) == band_for(rows, r)


@settings(max_examples=40, deadline=None)
@given(
    phases=st.sets(st.integers(0, 19), min_size=1, max_size=4),
    missed=st.lists(st.booleans(), min_size=300, max_size=300),
    history=st.sampled_from([3000.0, 14 * 86400.0]),
)
def test_surge_phases_kept_as_surges_come_are_the_phases_counted_again(phases, missed, history):
    """`due` keeps the phases that saw enough surges between surges; counting `_starts`
    afresh at each poll gives the same answer."""
    loads = [40.0 if k % 20 in phases and not miss else 5.0 for k, miss in enumerate(missed)]
    f = SurgeForecaster(poll=30.0, min_rise=5.0, period=600.0, history=history, refractory=60.0)
    for k, load in enumerate(loads):
        now = 30.0 * k
        f.observe(now, load)
        expected = 0.0
        if len(f._starts) >= 4 and f._peaks:
            need = max(2.0, f.share * len(f._starts))
            counts: dict[int, int] = {}
            for start in f._starts:
                counts[f.phase(start)] = counts.get(f.phase(start), 0) + 1
            for j in range(math.ceil(120.0 / 30.0) + 1):
                at = now + 30.0 * j
                phase = f.phase(at)
                if (
                    counts.get(phase, 0) >= need
                    and f.chance(now, phase, at - f._starts[-1]) >= f.chance_needed
                ):
                    expected = max(f._peaks)
                    break
        assert f.due(now, 120.0) == expected


def test_a_pool_view_is_turned_into_members_again_only_when_it_is_a_new_one():
    profile = SlaveProfile(Config())

    def view(*ready: bool) -> tuple[PoolMember, ...]:
        return tuple(
            PoolMember(
                instance_id=f"i-{k}",
                address=f"127.0.0.{k + 1}",
                hostname="",
                launched_at=float(k),
                ready=r,
                draining=False,
                interrupted=False,
            )
            for k, r in enumerate(ready)
        )

    def members(pool: tuple[PoolMember, ...] | list[PoolMember]) -> tuple[Member, ...]:
        inp = profile.policy_input(
            now=0.0,
            sample=None,
            members=pool,
            pending_requests=0,
            cost_per_hour=0.0,
            price_per_instance=0.0,
        )
        assert isinstance(inp, PolicyInput)
        return inp.members

    booting = view(False, True)
    first = members(booting)
    assert members(booting) is first  # the same view: the same members
    ready = members(view(True, True))  # a new view, one slave ready since
    assert [m.ready for m in first] == [False, True]
    assert [m.ready for m in ready] == [True, True]
    assert [m.instance_id for m in members([*booting])] == ["i-0", "i-1"]  # a list: turned again
