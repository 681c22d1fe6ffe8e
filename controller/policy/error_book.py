"""How far the load ran above a forecast one lead later: the book a headroom is read from.

A forecaster makes a level now that is due one lead ahead; when it falls due, the load then is
compared with it and the excess `(load - level) / scale(level)` is kept for `horizon` seconds.
The headroom that would have covered a share q of those leads is the q-quantile of the
excesses, in units of the scale. Two scales: "relative" (`max(level, floor)`: errors grow with
the load, as on a big site's daily swings) and "sqrt" (`sqrt(max(level, floor) * floor)`:
errors grow as the square root of the load, as in counting noise on a small site's minutes).
The book also keeps what its levels would have provisioned, so forecasters and scales can be
compared by what they would have cost for the same cover.
Pure: the caller passes the time in.
"""

from __future__ import annotations

import bisect
import math
from collections import deque


class ErrorBook:
    def __init__(self, *, horizon: float, floor: float, scale: str = "relative"):
        if scale not in ("relative", "sqrt"):
            raise ValueError(f"unknown error scale {scale!r}")
        self.horizon = horizon
        self.floor = floor  # excesses are relative to at least this (one slave's capacity)
        self.scale = scale
        self._due: deque[tuple[float, float, float]] = deque()  # (made, due, level)
        self._kept: deque[tuple[float, float, float, float]] = deque()  # (at, excess, lvl, scale)
        self._sorted: list[float] = []
        self._level_sum = 0.0
        self._scale_sum = 0.0

    def __len__(self) -> int:
        return len(self._sorted)

    def add(self, made: float, due: float, level: float) -> None:
        self._due.append((made, due, level))

    def score(self, now: float, rps: float) -> list[tuple[float, float]]:
        """Score the levels due by `now` against `rps`; forget the old. (made, excess) each."""
        # Four books score every poll of a replay: locals, and `unit` inline.
        scored = []
        due, kept, errs, floor = self._due, self._kept, self._sorted, self.floor
        relative = self.scale == "relative"
        while due and due[0][1] <= now:
            made, _, level = due.popleft()
            base = floor if floor > level else level  # max(level, floor)
            unit = base if relative else math.sqrt(base * floor)
            excess = (rps - level) / unit if unit > 0 else 0.0
            kept.append((now, excess, level, unit))
            bisect.insort(errs, excess)
            self._level_sum += level
            self._scale_sum += unit
            scored.append((made, excess))
        oldest = now - self.horizon
        while kept and kept[0][0] < oldest:
            _, old, level, unit = kept.popleft()
            del errs[bisect.bisect_left(errs, old)]
            self._level_sum -= level
            self._scale_sum -= unit
        return scored

    def unit(self, level: float) -> float:
        """What one unit of excess is, in rps, at this level."""
        base = max(level, self.floor)
        return base if self.scale == "relative" else math.sqrt(base * self.floor)

    def provision(self, level: float, quantile: float, default: float = 0.0) -> float:
        """The rate to provision for so that a share q of past leads would have been covered."""
        return level + max(0.0, self.at(quantile, default)) * self.unit(level)

    def at(self, quantile: float, default: float) -> float:
        """The q-quantile of the kept excesses (`default` while there are none)."""
        errs = self._sorted
        return errs[min(len(errs) - 1, int(quantile * len(errs)))] if errs else default

    def cover_cost(self, quantile: float) -> float:
        """Mean provision (rps) the kept levels would have asked for to cover a share q."""
        if not self._kept:
            return float("inf")
        headroom = max(0.0, self.at(quantile, 0.0))
        return (self._level_sum + headroom * self._scale_sum) / len(self._kept)
