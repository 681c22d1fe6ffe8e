"""Surges that come back: where they start, when the next one is due and how big it will be.

Some loads jump several-fold within a poll at a few fixed minutes of the hour and fall back within
minutes (the shared Twitter trace: at hh:02 or hh:32, most often every two hours). A reactive
fleet is one boot late for every one of them; launching for every such minute costs a boot of
idle slaves each time. So the forecast asks, for each coming phase, how often a surge started
there in the past *given the time since the last surge*, and launches only where that chance is
high enough to pay.

- A surge starts at a poll at `ratio` x the least of the three polls before it and at least
  `min_rise` rps above it (a jump from zero, the load coming back after an outage, is none);
  polls within `refractory` of a start belong to the same surge. Its peak is the most of its
  first three polls.
- A phase is one poll wide, modulo `period`. Only phases that saw at least `share` of the
  surges of the last `history` are candidates.
- The chance of a surge at a candidate phase, `gap` seconds after the last surge, is counted
  over the periods of `history`: the times that phase came round `gap` (within `gap_bin`) after
  a surge, and how many of them saw a surge start (within two polls). Few such times say little,
  so the count is shrunk toward the phase's chance at any gap with `prior` pseudo-counts.
- A surge is due when a candidate phase within the lead has a chance of at least `chance`; its
  size is the largest of the last ten peaks.

Pure: the caller passes the time in.
"""

from __future__ import annotations

import bisect
import math
from collections import deque


class SurgeForecaster:
    def __init__(
        self,
        *,
        poll: float,
        min_rise: float,
        ratio: float = 2.0,
        refractory: float = 1200.0,
        period: float = 7200.0,
        history: float = 14 * 86400.0,
        share: float = 0.05,
        chance: float = 0.3,
        gap_bin: float = 600.0,
        prior: float = 3.0,
    ):
        self.poll = poll
        self.min_rise = min_rise
        self.ratio = ratio
        self.refractory = refractory
        self.period = period
        self.history = history
        self.share = share
        self.chance_needed = chance
        self.gap_bin = gap_bin
        self.prior = prior
        self._last_loads: deque[float] = deque(maxlen=3)
        self._starts: deque[float] = deque()  # polls that saw a surge start, within history
        self._seen: dict[int, int] = {}  # phase -> how many of `_starts` are at it
        self._peaks: deque[float] = deque(maxlen=10)  # the load each surge rose to
        self._rising: tuple[float, float] | None = None  # (surge seen at, its peak so far)
        self._chances: dict[tuple[int, int], float] = {}  # (phase, gap bin) -> chance
        self._counted_for: tuple[int, float, int] | None = None  # what _chances was counted on
        # the phases that saw at least `share` of the surges (None: to be counted again)
        self._candidates: set[int] | None = None

    @property
    def last_start(self) -> float | None:
        return self._starts[-1] if self._starts else None

    def observe(self, now: float, rps: float) -> None:
        """Take one poll's load: note a surge that starts here, and the peak of one rising."""
        base = min(self._last_loads) if self._last_loads else 0.0
        self._last_loads.append(rps)
        if self._rising is not None:
            seen, peak = self._rising
            if now - seen <= 2 * self.poll:
                self._rising = (seen, max(peak, rps))
            else:
                self._peaks.append(peak)
                self._rising = None
        if base <= 0 or rps < self.ratio * base or rps - base < self.min_rise:
            return
        if self._starts and now - self._starts[-1] < self.refractory:
            return  # the same surge, still rising
        self._starts.append(now)
        self._count_phase(now, 1)
        self._rising = (now, rps)
        while self._starts[0] < now - self.history:
            self._count_phase(self._starts.popleft(), -1)

    def _count_phase(self, start: float, step: int) -> None:
        """Keep `_seen` in step with `_starts`, so `due` need not count them every poll."""
        phase = self.phase(start)
        self._seen[phase] = self._seen.get(phase, 0) + step
        self._candidates = None

    def phase(self, t: float) -> int:
        return int((t % self.period) // self.poll)

    def chance(self, now: float, phase: int, gap: float) -> float:
        """How often a surge started at this phase, `gap` after the last one (see the module)."""
        counted_for = (len(self._starts), self._starts[-1], int(now // self.period))
        if counted_for != self._counted_for:  # recounted when a surge starts or a period begins
            self._chances, self._counted_for = {}, counted_for
        key = (phase, round(gap / self.gap_bin))
        if key not in self._chances:
            self._chances[key] = self._count(now, phase, key[1])
        return self._chances[key]

    def _count(self, now: float, phase: int, gap_bin: int) -> float:
        starts = list(self._starts)
        trials = hits = any_trials = any_hits = 0
        first, last = int((now - self.history) // self.period), int(now // self.period)
        for index in range(first, last + 1):
            at = index * self.period + phase * self.poll
            if at < now - self.history or at >= now - 2 * self.poll:
                continue  # outside the history, or too recent to know whether it came
            i = bisect.bisect_left(starts, at - self.poll)
            if i == 0:
                continue  # no surge before it: no gap to count
            hit = i < len(starts) and starts[i] <= at + 2 * self.poll
            any_trials, any_hits = any_trials + 1, any_hits + hit
            if round((at - starts[i - 1]) / self.gap_bin) == gap_bin:
                trials, hits = trials + 1, hits + hit
        at_any_gap = any_hits / any_trials if any_trials else 0.0
        return (hits + self.prior * at_any_gap) / (trials + self.prior)

    def due(self, now: float, lead: float) -> float:
        """The peak of a surge due within `lead` seconds from now, or 0 if none is due."""
        starts = self._starts
        if len(starts) < 4 or not self._peaks:
            return 0.0
        last = starts[-1]
        candidates = self._candidates
        if candidates is None:  # a surge started or was forgotten since: recount
            need = max(2.0, self.share * len(starts))
            candidates = self._candidates = {p for p, n in self._seen.items() if n >= need}
        poll, period = self.poll, self.period
        if not candidates:
            return 0.0
        for k in range(math.ceil(lead / poll) + 1):
            at = now + k * poll
            phase = int((at % period) // poll)  # self.phase(at), inline: called every poll
            if phase in candidates and self.chance(now, phase, at - last) >= self.chance_needed:
                return max(self._peaks)
        return 0.0
