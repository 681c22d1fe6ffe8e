"""How far the load ran above a forecast one lead later: the book a headroom is read from.

A forecaster makes a level now that is due one lead ahead; when it falls due, the load then is
compared with it and the excess `(load - level) / scale(level)` is kept for `horizon` seconds.
The headroom that would have covered a share q of those leads is the q-quantile of the
excesses, in units of the scale. Two scales: "relative" (`max(level, floor)`: errors grow with
the load, as on a big site's daily swings) and "sqrt" (`sqrt(max(level, floor) * floor)`:
errors grow as the square root of the load, as in counting noise on a small site's minutes).
The book also keeps what its levels would have provisioned, so forecasters and scales can be
compared by what they would have cost for the same cover.

ErrorBooks keeps several books whose levels are made at the same polls and fall due together
(the forecasting policy's four): one queue of levels due and one of times kept serve them all.
Pure: the caller passes the time in.
"""

from __future__ import annotations

import math
from bisect import bisect_left, insort
from collections import deque
from collections.abc import Sequence


class ErrorBook:
    def __init__(self, *, horizon: float, floor: float, scale: str = "relative"):
        if scale not in ("relative", "sqrt"):
            raise ValueError(f"unknown error scale {scale!r}")
        self.horizon = horizon
        self.floor = floor  # excesses are relative to at least this (one slave's capacity)
        self.scale = scale
        self._relative = scale == "relative"
        self._due: deque[tuple[float, float, float]] = deque()  # (made, due, level)
        self._times: deque[float] = deque()  # when each kept excess was scored, oldest first
        self._kept: deque[tuple[float, float, float]] = deque()  # (excess, level, unit)
        self._sorted: list[float] = []  # the kept excesses, sorted: quantiles by index
        self._level_sum = 0.0
        self._scale_sum = 0.0

    def __len__(self) -> int:
        return len(self._sorted)

    def add(self, made: float, due: float, level: float) -> None:
        self._due.append((made, due, level))

    def score(self, now: float, rps: float) -> list[tuple[float, float]]:
        """Score the levels due by `now` against `rps`; forget the old. (made, excess) each."""
        scored = []
        due, times = self._due, self._times
        while due and due[0][1] <= now:
            made, _, level = due.popleft()
            times.append(now)
            scored.append((made, self.file(rps, level)))
        oldest = now - self.horizon
        while times and times[0] < oldest:
            times.popleft()
            self.forget_oldest()
        return scored

    def file(self, rps: float, level: float) -> float:
        """Keep the excess of `rps` over a level that fell due now; return it."""
        floor = self.floor
        base = floor if floor > level else level  # max(level, floor)
        unit = base if self._relative else math.sqrt(base * floor)  # self.unit(level), inline
        excess = (rps - level) / unit if unit > 0 else 0.0
        self._kept.append((excess, level, unit))
        insort(self._sorted, excess)
        self._level_sum += level
        self._scale_sum += unit
        return excess

    def forget_oldest(self) -> None:
        """Drop the excess kept longest (the caller knows it is older than the horizon)."""
        excess, level, unit = self._kept.popleft()
        errs = self._sorted
        del errs[bisect_left(errs, excess)]
        self._level_sum -= level
        self._scale_sum -= unit

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


class ErrorBooks:
    """Books of forecasters that make a level at the same polls, due at the same time.

    Each book holds exactly what it would hold alone (`add` and `score` with the same times);
    the queues are shared because four books score every poll of a replay.
    """

    def __init__(self, *, horizon: float, floor: float, scales: Sequence[str]):
        self.horizon = horizon
        self.books = tuple(ErrorBook(horizon=horizon, floor=floor, scale=s) for s in scales)
        self._due: deque[tuple[float, float, tuple[float, ...]]] = deque()  # (made, due, levels)
        self._times: deque[float] = deque()  # when each kept row of excesses was scored

    def add(self, made: float, due: float, levels: tuple[float, ...]) -> None:
        """One level per book, in the order of `books`."""
        self._due.append((made, due, levels))

    def score(self, now: float, rps: float) -> list[tuple[float, float]]:
        """Score the levels due by `now` against `rps` in every book; forget the old.
        (made, excess) of the first book, each."""
        scored = []
        due, times, books = self._due, self._times, self.books
        while due and due[0][1] <= now:
            made, _, levels = due.popleft()
            times.append(now)
            first = books[0].file(rps, levels[0])
            for book, level in zip(books[1:], levels[1:], strict=True):
                book.file(rps, level)
            scored.append((made, first))
        oldest = now - self.horizon
        while times and times[0] < oldest:
            times.popleft()
            for book in books:
                book.forget_oldest()
        return scored
