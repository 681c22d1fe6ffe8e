"""The forecasting policy (`ours`): target tracking inside the load table's band on a forecast of
the load one boot ahead, with a headroom learnt from its own errors (see ForecastPolicy); its
tuning values are controller.policy.forecast_settings.ForecastSettings.

It is a BandPolicy (controller.policy.band): the band, the dwell, the hold on a lost sensor and the
budget cap are the table policy's; only `target()`, the number of slaves wanted, is its own.
"""

from __future__ import annotations

import itertools
import math
from collections import deque

from controller.config.schema import Config
from controller.policy.band import BandPolicy, PolicyInput
from controller.policy.error_book import ErrorBook, ErrorBooks
from controller.policy.forecast_settings import ForecastSettings
from controller.policy.surge_forecast import SurgeForecaster


class ForecastPolicy(BandPolicy):
    """Target tracking inside the band on a forecast of the load one boot ahead.

    Names in backticks are ForecastSettings fields, but for `slave_capacity_rps` and
    `scale_in_after` ([scaling] keys) and `surges` (the constructor's argument).

    The wanted count is `ceil((level + headroom * max(level, capacity)) / slave_capacity_rps)`:

    - level: the highest of the last poll's rate, the windowed rate and the highest rate of the
      last `hold_seconds` (0 by default: the learnt headroom already covers a dip), and, with
      `trend_seconds` > 0, the linear trend of that span extrapolated over the lead (off by
      default: on the shared traces a sudden jump fits as a steep slope and over-launches);
    - lead: the time until a slave launched now is serving, i.e. the next boot (learnt from the
      slaves' own launch-to-ready times) plus one poll;
    - headroom: learnt, not configured. Every level is later compared with the load one lead
      after it; the headroom is the larger of two quantiles of those relative excesses:
      - global: a quantile over `error_seconds`, steered by the service goal: the policy counts
        the polls at which fewer slaves were ready than the load needed, and raises the
        quantile while that share is above `under_target`, lowers it while below (within
        [quantile_min, quantile_max]). A shortfall that even `quantile_max` (or the table's
        max) could not have covered one lead earlier is not counted: it is a surge no global
        headroom fixes, and chasing it would over-provision every hour;
      - seasonal: for each period of `season_seconds` (a day by default), the excesses are also
        filed under the phase (one poll wide) they were forecast at. At a phase where an excess
        recurred, the `season_rank`-th largest of the last `season_periods` periods over this
        phase and the next `season_width` ones applies: a surge that comes back at the same
        time of day is launched for one lead before it arrives, and a phase where it came once
        costs nothing.
    - other forecasters: the same lead-ahead comparison is kept for the level now with errors
      scaled by the square root of the level (counting noise: a small site's minutes), and for
      an exponential mean of the load over `smooth_seconds` (15 min) with either scale. Where one
      of them would have covered as many leads for `switch_margin` (10 %) less provision over
      `error_seconds` (a noisy small site, where the level now chases noise and its headroom
      compounds it), it sets the target instead; where a seasonal excess applies, the level now
      does. For the first `warmup_samples` errors (an hour of polls) the headroom is at least
      `warmup_headroom`: too few errors say nothing yet of the noise.
    - surges (`surges`, a `controller.policy.surge_forecast.SurgeForecaster`): loads that jump
      several-fold at a few fixed minutes of the hour. Where a phase of the 2-hour period often
      saw one start, and the chance of one there given the time since the last (counted over
      two weeks) is at least 30 %, the slaves the largest recent surge needed are launched one
      lead ahead, so that they are ready when it starts.

    Scale-out is immediate. Scale-in is asymmetric: a fleet above the band's max waits the
    band's `scale_in_after` (the seed's semantics); a surplus inside the band goes after
    `shrink_after`, by default two polls: surges on the shared traces end as abruptly as they
    start, and a slave the forecast asked for and the load did not confirm should not wait a
    whole boot. It goes at once
    - when a forecast surge did not come by the time its phase has passed: a false alarm costs
      one lead of slaves, not a dwell more;
    - when the load fell at each of the last `decline_polls` polls (a surge's decay).
    Within `decay_seconds` of a surge's start, a falling load is the level as it is, without
    the window (which would hold the surge's past for another window).
    """

    name = "ours"

    def __init__(
        self,
        config: Config,
        *,
        settings: ForecastSettings | None = None,
        surges: SurgeForecaster | None = None,
    ):
        """`settings`: the tuning values (ForecastSettings' defaults when None); `surges`: the
        surge forecaster (one for this poll and capacity when None)."""
        s = self.settings = settings or ForecastSettings()
        poll = config.master.poll_interval
        shrink_after = 2 * poll if s.shrink_after is None else s.shrink_after
        super().__init__(config, shrink_after=shrink_after)
        self.capacity = config.scaling.slave_capacity_rps
        self.poll = poll
        self.boot = config.scaling.boot_seconds  # until the slaves' own boots are timed
        self.quantile = s.quantile  # steered by the share of shortfalls
        self.headroom = s.initial_headroom  # until the first errors are known
        self._samples: deque[tuple[float, float]] = deque()  # (now, load_rps)
        # the smoothed levels: time constant -> its mean so far (None before the first sample)
        self._means: dict[float, float | None] = dict.fromkeys(s.smooth_seconds)
        # the other forecasters: (time constant or 0 for the level now, scale of its errors)
        others = [
            (tau, scale)
            for tau in (0.0, *s.smooth_seconds)
            for scale in s.error_scales
            if (tau, scale) != (0.0, "relative")
        ]
        # the books, the level now with relative errors first, all due together
        self._books = ErrorBooks(
            horizon=s.error_seconds,
            floor=self.capacity,
            scales=("relative", *(scale for _, scale in others)),
        )
        self._book = self._books.books[0]
        # each other forecaster: (its time constant or 0, its error book)
        self._others = [
            (tau, book) for (tau, _), book in zip(others, self._books.books[1:], strict=True)
        ]
        self._other_taus = tuple(tau for tau, _ in others)
        self._last_seen: float | None = None
        self.estimator = "now"  # which level the target used last: "now" or "mean Ns"
        self._seen_booting: dict[str, float] = {}
        # (now, the most slaves any headroom or the band allowed then), back to one lead ago
        self._reach: deque[tuple[float, int]] = deque()
        # (period, phase slot) -> {period index: worst excess} of the last season_periods
        # periods, oldest first
        self._season: dict[tuple[float, int], dict[int, float]] = {}
        if surges is None:
            surges = SurgeForecaster(poll=poll, min_rise=s.surge_min_rise * self.capacity)
        self._surge = surges
        self._forecast_since: float | None = None  # a surge forecast is on since
        self._shed = False  # a forecast surge did not come: shed its slaves now
        # (period, its slots of one poll) for the seasonal headroom
        self._season_slots = [(p, max(1, round(p / poll))) for p in s.season_seconds]
        # the samples kept: enough for the trend, the hold and the decline
        self._keep_seconds = max(s.trend_seconds, s.hold_seconds, poll * max(2, s.decline_polls))

    # learning

    def observe(self, inp: PolicyInput) -> None:
        self._learn_boot(inp)
        rps = inp.load_rps
        if rps is None:
            return
        now, samples = inp.now, self._samples
        samples.append((now, rps))
        horizon = now - self._keep_seconds
        while samples and samples[0][0] < horizon:
            samples.popleft()
        self._steer_quantile(inp)
        self._score(now, rps)
        self._surge.observe(now, rps)

    def in_band_dwell(self) -> float:
        return 0.0 if self._shed or self._declining() else self.shrink_after

    def _declining(self) -> bool:
        """The load fell at each of the last `decline_polls` polls: a surplus need not wait."""
        n, samples = self.settings.decline_polls, self._samples
        if n <= 0 or len(samples) < n + 1:
            return False
        loads = [r for _, r in samples][-n - 1 :]
        return all(b < a for a, b in itertools.pairwise(loads))

    def _decaying(self, now: float) -> bool:
        """Falling within `decay_seconds` of a surge's start, once its first polls are past."""
        start = self._surge.last_start
        if start is None or not 2 * self.poll < now - start < self.settings.decay_seconds:
            return False
        return len(self._samples) >= 2 and self._samples[-1][1] < self._samples[-2][1]

    def surge_forecast(self, now: float) -> float:
        """The peak of a surge due within one lead from now, or 0 if none is due."""
        return self._surge.due(now, self.lead_seconds())

    def _learn_boot(self, inp: PolicyInput) -> None:
        """Boot time = launch to first seen ready (less half a poll of probe delay), averaged."""
        seen = self._seen_booting
        for m in inp.members:
            if not m.ready:
                seen.setdefault(m.instance_id, m.launched_at)
            elif seen and m.instance_id in seen:
                took = inp.now - seen.pop(m.instance_id) - self.poll / 2
                self.boot = max(0.0, 0.8 * self.boot + 0.2 * took)
        if len(seen) > 4 * len(inp.members) + 16:
            live = {m.instance_id for m in inp.members}
            self._seen_booting = {k: v for k, v in seen.items() if k in live}

    def _steer_quantile(self, inp: PolicyInput) -> None:
        """Integral control of the global headroom quantile on the share of avoidable shortfalls.

        A poll counts as short when fewer slaves are ready than the load needs, unless the need
        exceeds what one lead ago either the band's max or the headroom at `quantile_max`
        allowed: no global headroom could have launched those slaves in time.
        """
        assert inp.load_rps is not None
        reach, since = self._reach, inp.now - self.lead_seconds()
        while len(reach) > 1 and reach[1][0] <= since:
            reach.popleft()
        if self.capacity <= 0:
            return
        needed = math.ceil(round(inp.load_rps / self.capacity, 9))  # self._slaves, inline
        ready = 0
        for m in inp.members:
            if m.ready and not m.draining and not m.interrupted:
                ready += 1
        under = 1.0 if ready < needed and (not reach or needed <= reach[0][1]) else 0.0
        s = self.settings
        q = self.quantile + s.quantile_gain * (under - s.under_target)
        self.quantile = min(s.quantile_max, max(s.quantile_min, q))

    def _score(self, now: float, rps: float) -> None:
        """Compare the levels that fell due with the load now; set the headroom."""
        book = self._book
        for made, excess in self._books.score(now, rps):  # every book, this one first
            self._file_seasonal(made, excess)
        if len(book):
            self.headroom = max(0.0, book.at(self.quantile, self.headroom))
        dt = 0.0 if self._last_seen is None else now - self._last_seen
        self._last_seen = now
        means = self._means
        for tau, mean in means.items():
            pull = 1 - math.exp(-dt / tau)
            means[tau] = rps if mean is None else mean + pull * (rps - mean)

    def _file_seasonal(self, made: float, excess: float) -> None:
        """File an excess under the phase its level was made at, once per period (the worst)."""
        poll, season, periods = self.poll, self._season, self.settings.season_periods
        for period in self.settings.season_seconds:
            index, slot = int(made // period), int((made % period) // poll)
            past = season.get((period, slot))
            if past is None:
                past = season[period, slot] = {}
            worst = past.get(index)
            past[index] = excess if worst is None else max(worst, excess)
            while past:
                first = next(iter(past))  # the oldest: levels are made, so filed, in order
                if first > index - periods:
                    break
                del past[first]

    def seasonal_headroom(self, now: float) -> float:
        """The excess that recurs from this phase on (0 where it did not recur)."""
        best, poll, season = 0.0, self.poll, self._season
        rank, width = self.settings.season_rank, self.settings.season_width
        for period, slots in self._season_slots:
            index, slot = int(now // period), int((now % period) // poll)
            oldest = index - self.settings.season_periods
            phases = [season.get((period, s % slots)) for s in range(slot, slot + width + 1)]
            first = phases[0]
            if (
                first
                and next(iter(first)) >= oldest
                and all(p is not None and p.keys() == first.keys() for p in phases)
            ):
                # the common case, phases filed in the same periods: the worst of each period
                if len(phases) == 1:
                    excesses = list(first.values())
                else:
                    excesses = list(map(max, *(p.values() for p in phases)))
            else:
                worst: dict[int, float] = {}  # period index -> its worst excess over the slots
                for past in phases:
                    for i, e in (past or {}).items():
                        if i >= oldest and (i not in worst or e > worst[i]):
                            worst[i] = e
                excesses = list(worst.values())
            if len(excesses) >= rank:
                best = max(best, sorted(excesses, reverse=True)[rank - 1])
        return best

    def scale_out_hint(self, load_rps: float) -> int:
        """Slaves this load surely calls for: what it needs now, with no headroom, in the band."""
        low, high = self._band(load_rps)
        if self.capacity <= 0:
            return low
        n = self._slaves(load_rps)
        n = n if n < high else high  # clamp(n, (low, high)), inline: called on every sample
        return n if n > low else low

    # forecasting

    def lead_seconds(self) -> float:
        return self.boot + self.poll

    def level(self, inp: PolicyInput) -> float:
        """The rate to provision for until a slave launched now would be serving."""
        rps, now = inp.load_rps, inp.now
        assert rps is not None
        if self._decaying(now):
            return rps  # the window would hold the surge's past for another window
        level = max(rps, inp.window_rps or 0.0)
        since = now - self.settings.hold_seconds
        for t, r in reversed(self._samples):
            if t < since:
                break
            level = max(level, r)
        if self.settings.trend_seconds > 0:
            slope = self._trend(now)
            if slope > 0:
                level = max(level, rps + slope * self.lead_seconds())
        return level

    def _trend(self, now: float) -> float:
        """Least-squares slope (rps per second) of the samples of the last trend_seconds."""
        if self.settings.trend_seconds <= 0:
            return 0.0
        pts = [(t, r) for t, r in self._samples if t >= now - self.settings.trend_seconds]
        n = len(pts)
        if n < 3:
            return 0.0
        mt = sum(t for t, _ in pts) / n
        mr = sum(r for _, r in pts) / n
        var = sum((t - mt) ** 2 for t, _ in pts)
        if var <= 0:
            return 0.0
        return sum((t - mt) * (r - mr) for t, r in pts) / var

    def _slaves(self, rate: float) -> int:
        """Slaves that serve this rate (rounded so that 6.0000000001 slaves is 6)."""
        return math.ceil(round(rate / self.capacity, 9))

    def _cheaper_forecaster(self) -> tuple[float, ErrorBook] | None:
        """The other forecaster that would have covered as many leads as "now" for less, if any.

        Each is judged on its own book: the mean provision its levels plus its headroom at the
        current quantile asked for over `error_seconds`. Books with fewer than
        `warmup_samples` errors are not judged yet.
        """
        q, warm = self.quantile, self.settings.warmup_samples
        best, choice = self._book.cover_cost(q) * (1 - self.settings.switch_margin), None
        for tau, book in self._others:
            if len(book) >= warm:
                cost = book.cover_cost(q)
                if cost < best:
                    best, choice = cost, (tau, book)
        return choice

    def target(self, inp: PolicyInput, band: tuple[int, int]) -> tuple[int, str]:
        if self.capacity <= 0:
            return band[0], "no slave capacity set: the band's min"
        s, now, book, means = self.settings, inp.now, self._book, self._means
        now_level = level = self.level(inp)
        lead = self.lead_seconds()
        due = now + lead
        self._books.add(
            now, due, (level, *[means[tau] if tau else level for tau in self._other_taus])
        )
        season = self.seasonal_headroom(now)
        headroom = max(self.headroom, season)
        if len(book) < s.warmup_samples:
            headroom = max(headroom, s.warmup_headroom)  # too few errors to know the noise
        want = level + headroom * max(level, self.capacity)
        top = book.provision(level, s.quantile_max, self.headroom)
        self.estimator = "now"
        cheaper = self._cheaper_forecaster() if season <= 0 else None  # recurring: keep "now"
        if cheaper is not None:
            tau, other = cheaper
            level = means[tau] if tau else now_level
            self.estimator = (f"mean {tau:.0f}s" if tau else "now") + f", {other.scale} errors"
            want = other.provision(level, self.quantile)
            top = other.provision(level, s.quantile_max)
        self._reach.append((now, min(band[1], self._slaves(top))))
        n = self._slaves(want)
        note = f"level {level:.2f} rps ({self.estimator}), provision {want:.2f}"
        surge = self._surge.due(now, lead)
        self._shed = False
        if surge > 0 and self._forecast_since is None:
            self._forecast_since = now
        elif surge <= 0 and self._forecast_since is not None:
            last = self._surge.last_start
            came = last is not None and last >= self._forecast_since
            self._shed = s.surge_shed and not came
            self._forecast_since = None
        if surge > 0 and self._slaves(surge) > n:
            n = self._slaves(surge)
            note += f", surge of {surge:.2f} rps due"
        if season > self.headroom:
            note += " (recurs at this phase)"
        return n, f"{note} -> {n}"
