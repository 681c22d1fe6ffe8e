"""Pure scaling decisions: the load table band, dwell, which slave goes, and the forecast.

SpotPool (the daemon), `run --dry-run` and `simulate` all call the same `Policy.decide` with a
full snapshot of what they observed (`PolicyInput`) and get back what to do (`PolicyDecision`).
Nothing here does I/O or reads a clock: `now` comes in with the snapshot, so a policy runs as
well in loop time as in the simulator's virtual time. A policy object may keep private state
between calls (the dwell timer, the rate history of the forecast).

The load table keeps GBrowse's meaning (seed 000_0157c7cef1b54989, `slaves_wanted` of its
AWS_Balancer.pm): a row applies at or above its requests/sec; below the first row the band is
[0, 0]; above the last, the last row's. Every policy built here honours it:

- a fleet below the band's min is brought up to min at once;
- a fleet above the band's max is cut down to max, but only after the band (and the policy's own
  target) has asked for fewer slaves continuously for `[scaling] scale_in_after` seconds; inside
  the band a policy may shed its own surplus after its own (shorter) dwell;
- launches never take the fleet above max, removals never take it below min;
- a lost load sensor (`load_rps is None`) holds: no removals, and launches only to get back to
  the last desired count (replacing slaves that went away);
- with `[scaling] max_cost_per_hour` set, launches stop where the fleet would cost more.

Counting: open launch requests and booting instances count toward the fleet for scale-out (so a
slow boot never causes a second launch); draining instances never count; an instance under a
spot interruption warning counts as gone for scale-out (its replacement is launched at once) but
still counts as held for scale-in, and it is the first one removed.
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from controller.config import Config, LoadRow
from controller.forecast_errors import ErrorBook
from controller.surge_forecast import SurgeForecaster

POLICY_NAMES = ("ours", "table", "gbrowse", "gbrowse-lifetime", "starcluster")


@dataclass(frozen=True, slots=True, kw_only=True)
class Member:
    instance_id: str
    launched_at: float  # same clock as `now` (loop / virtual seconds)
    ready: bool  # passed the readiness probe
    draining: bool = False  # being removed (not counted as capacity)
    interrupted: bool = False  # got a spot interruption warning (counted as going away)


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicyInput:
    now: float
    load_rps: float | None  # rate over the last poll; None = sensor lost -> hold
    window_rps: float | None  # smoothed rate over [master] window_seconds
    members: tuple[Member, ...]  # running or pending instances of the fleet
    pending_requests: int = 0  # launches asked for that are not instances yet
    cost_per_hour: float = 0.0  # current fleet cost
    price_per_instance: float = 0.0  # for the budget cap


@dataclass(frozen=True, slots=True, kw_only=True)
class PolicyDecision:
    band: tuple[int, int]  # the load table's [min, max] for this load
    desired: int
    launch: int  # how many to launch now
    remove: tuple[str, ...]  # instance ids to drain and terminate now
    reason: str  # one line, human readable, logged and shown in /status


class Policy(Protocol):
    name: str

    def decide(self, inp: PolicyInput) -> PolicyDecision: ...


def band_for(rows: Sequence[LoadRow], rps: float) -> tuple[int, int]:
    """The [min, max] slaves of the last row whose requests/sec the load reaches; (0, 0) below."""
    band = (0, 0)
    for row in rows:
        if rps >= row.rps:
            band = (row.min_instances, row.max_instances)
        else:
            break
    return band


# ---- counting and choosing, shared by every policy ---------------------------------------------


def scale_out_count(inp: PolicyInput) -> int:
    """Slaves that will serve: not draining, not warned of interruption, plus open requests."""
    alive = sum(1 for m in inp.members if not m.draining and not m.interrupted)
    return alive + inp.pending_requests


def held_count(inp: PolicyInput) -> int:
    """Slaves the fleet holds and could still remove: everything not already draining."""
    return sum(1 for m in inp.members if not m.draining) + inp.pending_requests


def removal_order(members: Sequence[Member]) -> list[Member]:
    """Candidates for removal, first to go first: interrupted ones, then the youngest.

    Draining members are already leaving and are not candidates. The youngest is usually still
    booting, so removing it loses no serving capacity.
    """
    candidates = [m for m in members if not m.draining]
    candidates.sort(key=lambda m: (not m.interrupted, -m.launched_at, m.instance_id))
    return candidates


def budget_allows(inp: PolicyInput, launch: int, max_cost_per_hour: float | None) -> int:
    """How many of `launch` fit under the budget cap (all of them when there is no cap)."""
    if max_cost_per_hour is None or launch <= 0 or inp.price_per_instance <= 0:
        return launch
    room = math.floor((max_cost_per_hour - inp.cost_per_hour) / inp.price_per_instance + 1e-9)
    return max(0, min(launch, room))


def clamp(n: int, band: tuple[int, int]) -> int:
    return max(band[0], min(band[1], n))


# ---- the table policy core: band, dwell, hold, budget --------------------------------------------


class BandPolicy:
    """The load table with the seed's semantics plus a scale-in dwell; subclasses pick a target.

    `target()` says how many slaves the policy wants inside the band; this class clamps it to
    the band, launches the shortfall at once, and removes a surplus only after the fleet has
    held more than the desired count for `shrink_after` seconds without a break, and, while
    the fleet is above the band's max, for `scale_in_after` seconds above it. Then it removes
    down to the highest desired count of the last `shrink_after` (a stabilisation window, as
    the Kubernetes HPA scales down), so a brief dip never costs a slave that is needed again
    soon. The table policy uses one dwell for both (`shrink_after = scale_in_after`).
    A subclass may shorten the in-band dwell for one poll through `in_band_dwell()`.
    """

    name = "table"

    def __init__(self, config: Config, *, shrink_after: float | None = None):
        self.rows = config.load_table.rows
        self.scale_in_after = config.scaling.scale_in_after
        self.max_cost_per_hour = config.scaling.max_cost_per_hour
        self.shrink_after = self.scale_in_after if shrink_after is None else shrink_after
        self._fewer_since: float | None = None  # held > desired since
        self._above_since: float | None = None  # held > the band's max since
        self._recent: deque[tuple[float, int]] = deque()  # (now, desired) within the dwells
        self._last_desired: int | None = None
        self._last_band: tuple[int, int] = (0, 0)

    def target(self, inp: PolicyInput, band: tuple[int, int]) -> tuple[int, str]:
        """Slaves wanted before the band clamps it, and a short note for the reason.

        The table alone keeps what it has (min <= current <= max: do nothing), and what it had
        decided before: a slave that went away is replaced.
        """
        keep = max(scale_out_count(inp), self._last_desired or 0)
        return keep, f"table keeps {keep}"

    def observe(self, inp: PolicyInput) -> None:
        """Called with every snapshot, including sensor-lost ones (for history keeping)."""

    def decide(self, inp: PolicyInput) -> PolicyDecision:
        self.observe(inp)
        if inp.load_rps is None:
            return self._hold(inp)
        band = band_for(self.rows, inp.load_rps)
        wanted, note = self.target(inp, band)
        desired = clamp(wanted, band)
        self._last_desired, self._last_band = desired, band
        self._remember(inp.now, desired)

        up = scale_out_count(inp)
        launch = max(0, desired - up)
        parts = [f"load {inp.load_rps:.2f} rps, band [{band[0]},{band[1]}], {note}"]
        launch, capped = self._cap(inp, launch)
        if launch:
            parts.append(f"launch {launch} ({up} -> {up + launch})")
        if capped:
            parts.append("budget cap")

        remove = self._scale_in(inp, band, desired, launch)
        if remove:
            parts.append(f"remove {len(remove)} after {self._dwell(band, inp):.0f}s over")
        elif not launch and held_count(inp) > desired and self._fewer_since is not None:
            waited = inp.now - self._fewer_since
            parts.append(f"holding surplus ({waited:.0f}/{self._dwell(band, inp):.0f}s)")
        elif not launch and not capped:
            parts.append("no change")
        return PolicyDecision(
            band=band, desired=desired, launch=launch, remove=remove, reason="; ".join(parts)
        )

    def _dwell(self, band: tuple[int, int], inp: PolicyInput) -> float:
        """The dwell that applies now: the band's when the fleet is above its max, else ours."""
        above = held_count(inp) > band[1]
        return self.scale_in_after if above else self.in_band_dwell()

    def in_band_dwell(self) -> float:
        """How long a surplus inside the band waits before it goes (the policy's own dwell)."""
        return self.shrink_after

    def _remember(self, now: float, desired: int) -> None:
        self._recent.append((now, desired))
        horizon = now - max(self.scale_in_after, self.shrink_after)
        while self._recent and self._recent[0][0] < horizon:
            self._recent.popleft()

    def _cap(self, inp: PolicyInput, launch: int) -> tuple[int, bool]:
        allowed = budget_allows(inp, launch, self.max_cost_per_hour)
        return allowed, allowed < launch

    def _scale_in(
        self, inp: PolicyInput, band: tuple[int, int], desired: int, launch: int
    ) -> tuple[str, ...]:
        held = held_count(inp) + launch
        if held <= desired:
            self._fewer_since = self._above_since = None
            return ()
        if self._fewer_since is None:
            self._fewer_since = inp.now
        if held <= band[1]:
            self._above_since = None
        elif self._above_since is None:
            self._above_since = inp.now
        if self._above_since is not None and inp.now - self._above_since < self.scale_in_after:
            return ()  # leaving the band waits for the band's own dwell (the seed's semantics)
        dwell = self.in_band_dwell()
        if inp.now - self._fewer_since < dwell:
            # Inside the band the policy's own dwell applies; above it, the band's dwell has
            # passed, so the fleet comes down to the band's max now.
            over_max = held - band[1]
            return tuple(m.instance_id for m in removal_order(inp.members)[: max(0, over_max)])
        since = inp.now - dwell
        keep = max(band[0], max(d for t, d in self._recent if t >= since))
        surplus = held - keep
        if surplus <= 0:
            return ()
        return tuple(m.instance_id for m in removal_order(inp.members)[:surplus])

    def _hold(self, inp: PolicyInput) -> PolicyDecision:
        """Sensor lost: never remove; launch only back up to the last desired count."""
        self._fewer_since = self._above_since = None  # missing data never counts toward a dwell
        self._recent.clear()
        up = scale_out_count(inp)
        desired = self._last_desired if self._last_desired is not None else up
        launch, capped = self._cap(inp, max(0, desired - up))
        reason = f"load sensor lost: holding at {desired}"
        if launch:
            reason += f"; launch {launch} to replace lost slaves"
        if capped:
            reason += "; budget cap"
        return PolicyDecision(
            band=self._last_band, desired=desired, launch=launch, remove=(), reason=reason
        )


# ---- ours: target tracking with a forecast of the next boot --------------------------------------


class OursPolicy(BandPolicy):
    """Target tracking inside the band on a forecast of the load one boot ahead.

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
      does. For the
      first `warmup_samples` errors (an hour of polls) the headroom is at least
      `warmup_headroom`: too few errors say nothing yet of the noise.
    - surges (`surges`, a `controller.surge_forecast.SurgeForecaster`): loads that jump
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
        hold_seconds: float = 0.0,
        trend_seconds: float = 0.0,
        error_seconds: float = 24 * 3600.0,
        under_target: float = 0.0037,
        quantile: float = 0.9,
        quantile_min: float = 0.5,
        quantile_max: float = 0.975,
        quantile_gain: float = 0.002,
        shrink_after: float | None = None,
        season_seconds: tuple[float, ...] = (86400.0,),
        season_periods: int = 7,
        season_rank: int = 3,
        season_width: int = 1,
        surges: SurgeForecaster | None = None,
        surge_shed: bool = True,
        decline_polls: int = 3,
        decay_seconds: float = 1200.0,
        smooth_seconds: tuple[float, ...] = (900.0,),
        error_scales: tuple[str, ...] = ("relative", "sqrt"),
        warmup_samples: int = 120,
        warmup_headroom: float = 1.0,
        switch_margin: float = 0.1,
    ):
        poll = config.master.poll_interval
        super().__init__(config, shrink_after=2 * poll if shrink_after is None else shrink_after)
        self.capacity = config.simulate.slave_capacity_rps
        self.poll = poll
        self.boot = config.simulate.boot_seconds
        self.hold_seconds = hold_seconds
        self.trend_seconds = trend_seconds
        self.error_seconds = error_seconds
        self.under_target = under_target
        self.quantile = quantile
        self.quantile_min = quantile_min
        self.quantile_max = quantile_max
        self.quantile_gain = quantile_gain
        self.season_seconds = season_seconds
        self.season_periods = season_periods
        self.season_rank = season_rank
        self.season_width = season_width
        self.headroom = 0.2  # until the first errors are known
        self._samples: deque[tuple[float, float]] = deque()  # (now, load_rps)
        self._book = ErrorBook(horizon=error_seconds, floor=self.capacity)
        # the smoothed levels: time constant -> its mean so far (None before the first sample)
        self._means: dict[float, float | None] = dict.fromkeys(smooth_seconds)
        # the other forecasters, each (time constant or 0 for the level now, its error book)
        self._others = [
            (tau, ErrorBook(horizon=error_seconds, floor=self.capacity, scale=scale))
            for tau in (0.0, *smooth_seconds)
            for scale in error_scales
            if (tau, scale) != (0.0, "relative")
        ]
        self._last_seen: float | None = None
        self.estimator = "now"  # which level the target used last: "now" or "mean Ns"
        self._seen_booting: dict[str, float] = {}
        # (now, the most slaves any headroom or the band allowed then), back to one lead ago
        self._reach: deque[tuple[float, int]] = deque()
        # (period, phase slot) -> (period index, excess) of the last season_periods periods
        self._season: dict[tuple[float, int], deque[tuple[int, float]]] = {}
        # a surge is a jump of at least three slaves' worth (see SurgeForecaster for the rest)
        if surges is None:
            surges = SurgeForecaster(poll=poll, min_rise=3.0 * self.capacity)
        self._surge = surges
        self.surge_shed = surge_shed
        self.decline_polls = decline_polls
        self.decay_seconds = decay_seconds
        self.warmup_samples = warmup_samples
        self.warmup_headroom = warmup_headroom
        self.switch_margin = switch_margin
        self._forecast_since: float | None = None  # a surge forecast is on since
        self._shed = False  # a forecast surge did not come: shed its slaves now

    # -- learning ------------------------------------------------------------------------------

    def observe(self, inp: PolicyInput) -> None:
        self._learn_boot(inp)
        if inp.load_rps is None:
            return
        now, rps = inp.now, inp.load_rps
        self._samples.append((now, rps))
        kept = self.poll * max(2, self.decline_polls)
        horizon = now - max(self.trend_seconds, self.hold_seconds, kept)
        while self._samples and self._samples[0][0] < horizon:
            self._samples.popleft()
        self._steer_quantile(inp)
        self._score(now, rps)
        self._surge.observe(now, rps)

    def in_band_dwell(self) -> float:
        return 0.0 if self._shed or self._declining() else self.shrink_after

    def _declining(self) -> bool:
        """The load fell at each of the last `decline_polls` polls: a surplus need not wait."""
        n = self.decline_polls
        loads = [r for _, r in self._samples][-n - 1 :]
        return n > 0 and len(loads) == n + 1 and all(b < a for a, b in itertools.pairwise(loads))

    def _decaying(self, now: float) -> bool:
        """Falling within `decay_seconds` of a surge's start, once its first polls are past."""
        start = self._surge.last_start
        if start is None or not 2 * self.poll < now - start < self.decay_seconds:
            return False
        return len(self._samples) >= 2 and self._samples[-1][1] < self._samples[-2][1]

    def surge_forecast(self, now: float) -> float:
        """The peak of a surge due within one lead from now, or 0 if none is due."""
        return self._surge.due(now, self.lead_seconds())

    def _learn_boot(self, inp: PolicyInput) -> None:
        """Boot time = launch to first seen ready (less half a poll of probe delay), averaged."""
        for m in inp.members:
            if not m.ready:
                self._seen_booting.setdefault(m.instance_id, m.launched_at)
            elif m.instance_id in self._seen_booting:
                took = inp.now - self._seen_booting.pop(m.instance_id) - self.poll / 2
                self.boot = max(0.0, 0.8 * self.boot + 0.2 * took)
        if len(self._seen_booting) > 4 * len(inp.members) + 16:
            live = {m.instance_id for m in inp.members}
            self._seen_booting = {k: v for k, v in self._seen_booting.items() if k in live}

    def _steer_quantile(self, inp: PolicyInput) -> None:
        """Integral control of the global headroom quantile on the share of avoidable shortfalls.

        A poll counts as short when fewer slaves are ready than the load needs, unless the need
        exceeds what one lead ago either the band's max or the headroom at `quantile_max`
        allowed: no global headroom could have launched those slaves in time.
        """
        assert inp.load_rps is not None
        while len(self._reach) > 1 and self._reach[1][0] <= inp.now - self.lead_seconds():
            self._reach.popleft()
        if self.capacity <= 0:
            return
        needed = math.ceil(round(inp.load_rps / self.capacity, 9))
        ready = sum(1 for m in inp.members if m.ready and not m.draining and not m.interrupted)
        reachable = not self._reach or needed <= self._reach[0][1]
        under = 1.0 if ready < needed and reachable else 0.0
        q = self.quantile + self.quantile_gain * (under - self.under_target)
        self.quantile = min(self.quantile_max, max(self.quantile_min, q))

    def _score(self, now: float, rps: float) -> None:
        """Compare the levels that fell due with the load now; set the headroom."""
        for made, excess in self._book.score(now, rps):
            self._file_seasonal(made, excess)
        if len(self._book):
            self.headroom = max(0.0, self._error_at(self.quantile))
        dt = 0.0 if self._last_seen is None else now - self._last_seen
        self._last_seen = now
        for tau, mean in self._means.items():
            pull = 1 - math.exp(-dt / tau)
            self._means[tau] = rps if mean is None else mean + pull * (rps - mean)
        for _, book in self._others:
            book.score(now, rps)

    def _error_at(self, quantile: float) -> float:
        return self._book.at(quantile, self.headroom)

    def _phase(self, period: float, t: float) -> tuple[int, int]:
        """(period index, slot of the phase) of time t; slots are one poll wide."""
        return int(t // period), int((t % period) // self.poll)

    def _file_seasonal(self, made: float, excess: float) -> None:
        """File an excess under the phase its level was made at, once per period (the worst)."""
        for period in self.season_seconds:
            index, slot = self._phase(period, made)
            past = self._season.setdefault((period, slot), deque())
            if past and past[-1][0] == index:
                past[-1] = (index, max(past[-1][1], excess))
            else:
                past.append((index, excess))
            while past and past[0][0] <= index - self.season_periods:
                past.popleft()

    def seasonal_headroom(self, now: float) -> float:
        """The excess that recurs from this phase on (0 where it did not recur)."""
        best = 0.0
        for period in self.season_seconds:
            index, slot = self._phase(period, now)
            slots = max(1, round(period / self.poll))
            worst: dict[int, float] = {}  # period index -> its worst excess over the slots
            for s in range(slot, slot + self.season_width + 1):
                for i, e in self._season.get((period, s % slots), ()):
                    if i >= index - self.season_periods:
                        worst[i] = max(worst.get(i, e), e)
            if len(worst) >= self.season_rank:
                best = max(best, sorted(worst.values(), reverse=True)[self.season_rank - 1])
        return best

    # -- forecasting ---------------------------------------------------------------------------

    def lead_seconds(self) -> float:
        return self.boot + self.poll

    def level(self, inp: PolicyInput) -> float:
        """The rate to provision for until a slave launched now would be serving."""
        assert inp.load_rps is not None
        now = inp.now
        if self._decaying(now):
            return inp.load_rps  # the window would hold the surge's past for another window
        level = max(inp.load_rps, inp.window_rps or 0.0)
        for t, r in reversed(self._samples):
            if t < now - self.hold_seconds:
                break
            level = max(level, r)
        slope = self._trend(now)
        if slope > 0:
            level = max(level, inp.load_rps + slope * self.lead_seconds())
        return level

    def _trend(self, now: float) -> float:
        """Least-squares slope (rps per second) of the samples of the last trend_seconds."""
        pts = [(t, r) for t, r in self._samples if t >= now - self.trend_seconds]
        n = len(pts)
        if self.trend_seconds <= 0 or n < 3:
            return 0.0
        mt = sum(t for t, _ in pts) / n
        mr = sum(r for _, r in pts) / n
        var = sum((t - mt) ** 2 for t, _ in pts)
        if var <= 0:
            return 0.0
        return sum((t - mt) * (r - mr) for t, r in pts) / var

    def _slaves(self, level: float, headroom: float) -> int:
        want = level + max(0.0, headroom) * max(level, self.capacity)
        return math.ceil(round(want / self.capacity, 9))

    def _cheaper_forecaster(self) -> tuple[float, ErrorBook] | None:
        """The other forecaster that would have covered as many leads as "now" for less, if any.

        Each is judged on its own book: the mean provision its levels plus its headroom at the
        current quantile asked for over `error_seconds`. Books with fewer than
        `warmup_samples` errors are not judged yet.
        """
        best, choice = self._book.cover_cost(self.quantile) * (1 - self.switch_margin), None
        for tau, book in self._others:
            if len(book) >= self.warmup_samples and book.cover_cost(self.quantile) < best:
                best, choice = book.cover_cost(self.quantile), (tau, book)
        return choice

    def target(self, inp: PolicyInput, band: tuple[int, int]) -> tuple[int, str]:
        if self.capacity <= 0:
            return band[0], "no slave capacity set: the band's min"
        now_level = level = self.level(inp)
        due = inp.now + self.lead_seconds()
        self._book.add(inp.now, due, level)
        for tau, book in self._others:
            book.add(inp.now, due, self._means[tau] if tau else level)
        season = self.seasonal_headroom(inp.now)
        headroom = max(self.headroom, season)
        if len(self._book) < self.warmup_samples:
            headroom = max(headroom, self.warmup_headroom)  # too few errors to know the noise
        want = level + headroom * max(level, self.capacity)
        top = self._book.provision(level, self.quantile_max, self.headroom)
        self.estimator = "now"
        cheaper = self._cheaper_forecaster() if season <= 0 else None  # recurring: keep "now"
        if cheaper is not None:
            tau, book = cheaper
            level = self._means[tau] if tau else now_level
            self.estimator = (f"mean {tau:.0f}s" if tau else "now") + f", {book.scale} errors"
            want = book.provision(level, self.quantile)
            top = book.provision(level, self.quantile_max)
        self._reach.append((inp.now, min(band[1], self._slaves(top, 0.0))))
        n = self._slaves(want, 0.0)
        note = f"level {level:.2f} rps ({self.estimator}), provision {want:.2f}"
        surge = self.surge_forecast(inp.now)
        self._shed = False
        if surge > 0 and self._forecast_since is None:
            self._forecast_since = inp.now
        elif surge <= 0 and self._forecast_since is not None:
            last = self._surge.last_start
            came = last is not None and last >= self._forecast_since
            self._shed = self.surge_shed and not came
            self._forecast_since = None
        if self._slaves(surge, 0.0) > n:
            n = self._slaves(surge, 0.0)
            note += f", surge of {surge:.2f} rps due"
        if season > self.headroom:
            note += " (recurs at this phase)"
        return n, f"{note} -> {n}"


def make_policy(name: str, config: Config) -> Policy:
    """The policy called `name`: ours | table | gbrowse | gbrowse-lifetime | starcluster."""
    match name:
        case "ours":
            return OursPolicy(config)
        case "table":
            return BandPolicy(config)
        case "gbrowse" | "gbrowse-lifetime" | "starcluster":
            from controller import baselines

            return baselines.make_baseline(name, config)
    raise ValueError(f"unknown policy {name!r}: choose one of {', '.join(POLICY_NAMES)}")
