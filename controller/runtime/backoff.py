"""Backoff as data: a configured sequence of delays, and a sliding window of recent failures.

The count of failures inside the window picks the next delay (the first failure waits delays[0],
the n-th waits delays[n-1], past the end the last value repeats) and tells when to give up. A quiet
window resets both, so an actor that crashes once a day always restarts after the shortest delay.
Pure code: the caller passes `now` and, for jitter, the random source.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Sequence


def backoff_delay(
    delays: Sequence[float],
    attempt: int,
    *,
    jitter: float = 0.1,
    rand: Callable[[], float] = random.random,
) -> float:
    """The delay before retry number `attempt` (0-based), spread by ±jitter so retries don't align.

    `rand` returns a float in [0, 1); 0.5 gives the exact configured delay.
    """
    if not delays:
        raise ValueError("backoff needs at least one delay")
    base = delays[min(max(attempt, 0), len(delays) - 1)]
    return max(0.0, base * (1.0 + jitter * (2.0 * rand() - 1.0)))


class FailureWindow:
    """The times of failures that happened within the last `window_seconds`."""

    def __init__(self, window_seconds: float) -> None:
        self.window_seconds = window_seconds
        self._times: deque[float] = deque()

    def record(self, now: float) -> int:
        """Note a failure at `now`; return how many failures the window holds, this one included."""
        self._times.append(now)
        return self.count(now)

    def count(self, now: float) -> int:
        while self._times and self._times[0] <= now - self.window_seconds:
            self._times.popleft()
        return len(self._times)
