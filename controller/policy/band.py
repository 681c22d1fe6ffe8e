"""Pure scaling decisions: the load table band, dwell, which slave goes (BandPolicy, `table`).

SpotPool (the daemon), `run --dry-run` and `simulate` all call the same `Policy.decide` with a
full snapshot of what they observed (`PolicyInput`) and get back what to do (`PolicyDecision`).
Nothing here does I/O or reads a clock: `now` comes in with the snapshot, so a policy runs as
well in loop time as in the simulator's virtual time. A policy object may keep private state
between calls (the dwell timer; the forecasting policy, controller.policy.forecasting, keeps
its rate history).

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

import math
from bisect import bisect_right
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from controller.config.schema import Config, LoadRow


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


# counting and choosing, shared by every policy


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


# the table policy core: band, dwell, hold, budget


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
        # band_for by bisection where the rows' rates increase (config checks they do)
        rates = [row.rps for row in self.rows]
        self._rates = rates if rates == sorted(rates) else None
        self._bands = [(row.min_instances, row.max_instances) for row in self.rows]

    def _band(self, rps: float) -> tuple[int, int]:
        """band_for(self.rows, rps); a bisection, as the band is read on every sample."""
        if self._rates is None:
            return band_for(self.rows, rps)
        i = bisect_right(self._rates, rps)
        return self._bands[i - 1] if i else (0, 0)

    def target(self, inp: PolicyInput, band: tuple[int, int]) -> tuple[int, str]:
        """Slaves wanted before the band clamps it, and a short note for the reason.

        The table alone keeps what it has (min <= current <= max: do nothing), and what it had
        decided before: a slave that went away is replaced.
        """
        keep = max(scale_out_count(inp), self._last_desired or 0)
        return keep, f"table keeps {keep}"

    def observe(self, inp: PolicyInput) -> None:
        """Called with every snapshot, including sensor-lost ones (for history keeping)."""

    def scale_out_hint(self, load_rps: float) -> int:
        """Slaves this load surely calls for, read on every sample between polls: the band's
        min (the table alone keeps what it has inside the band)."""
        return band_for(self.rows, load_rps)[0]

    def decide(self, inp: PolicyInput) -> PolicyDecision:
        self.observe(inp)
        if inp.load_rps is None:
            return self._hold(inp)
        band = self._band(inp.load_rps)
        wanted, note = self.target(inp, band)
        desired = clamp(wanted, band)
        self._last_desired, self._last_band = desired, band
        self._remember(inp.now, desired)

        # scale_out_count and held_count in one pass: decide runs on every poll of a replay
        alive = held = inp.pending_requests
        for m in inp.members:
            if not m.draining:
                held += 1
                if not m.interrupted:
                    alive += 1
        launch = max(0, desired - alive)
        parts = [f"load {inp.load_rps:.2f} rps, band [{band[0]},{band[1]}], {note}"]
        launch, capped = self._cap(inp, launch)
        if launch:
            parts.append(f"launch {launch} ({alive} -> {alive + launch})")
        if capped:
            parts.append("budget cap")

        remove = self._scale_in(inp, band, desired, held + launch)
        if remove:
            parts.append(f"remove {len(remove)} after {self._dwell(band, held):.0f}s over")
        elif not launch and held > desired and self._fewer_since is not None:
            waited = inp.now - self._fewer_since
            parts.append(f"holding surplus ({waited:.0f}/{self._dwell(band, held):.0f}s)")
        elif not launch and not capped:
            parts.append("no change")
        return PolicyDecision(
            band=band, desired=desired, launch=launch, remove=remove, reason="; ".join(parts)
        )

    def _dwell(self, band: tuple[int, int], held: int) -> float:
        """The dwell that applies now: the band's when the fleet (`held`) is above its max, else
        ours."""
        return self.scale_in_after if held > band[1] else self.in_band_dwell()

    def in_band_dwell(self) -> float:
        """How long a surplus inside the band waits before it goes (the policy's own dwell)."""
        return self.shrink_after

    def _remember(self, now: float, desired: int) -> None:
        recent = self._recent
        recent.append((now, desired))
        horizon = now - max(self.scale_in_after, self.shrink_after)
        while recent and recent[0][0] < horizon:
            recent.popleft()

    def _cap(self, inp: PolicyInput, launch: int) -> tuple[int, bool]:
        allowed = budget_allows(inp, launch, self.max_cost_per_hour)
        return allowed, allowed < launch

    def _scale_in(
        self, inp: PolicyInput, band: tuple[int, int], desired: int, held: int
    ) -> tuple[str, ...]:
        """What to remove; `held`: the fleet held, with this poll's launches."""
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
        # Before any reading the sensor is not lost, only not read yet (the first poll at start).
        why = "no load reading yet" if self._last_desired is None else "load sensor lost"
        reason = f"{why}: holding at {desired}"
        if launch:
            reason += f"; launch {launch} to replace lost slaves"
        if capped:
            reason += "; budget cap"
        return PolicyDecision(
            band=self._last_band, desired=desired, launch=launch, remove=(), reason=reason
        )
