"""Apache's `/server-status?auto` page into a request rate, with no I/O and no clock of its own.

GBrowse's balancer read `ReqPerSec`, an average since Apache started, so a busy hour after a quiet
week barely moved it. Here the rate comes from deltas of the `Total Accesses` counter between
samples, over the last poll interval and over a smoothing window.

Quirks of the page (seen on Apache 2.4, ../shared/TESTING.md): the first line is the bare server
name with no colon; `ReqPerSec` and friends are absent while `Uptime` is 0; values such as `.0819`
have no leading zero; `Total Accesses` exists only with `ExtendedStatus On` (the default since
2.3.6). A fetch is counted in `Total Accesses` after its response is sent, so each sample's counter
includes the sampler's previous fetch: the tracker subtracts it, so an idle server reads 0.0.
A full restart (SIGHUP, stop/start) resets the counter; a graceful restart keeps it.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field


class StatusParseError(ValueError):
    """The body is not a `?auto` server-status page we can read a rate from."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerStatus:
    total_accesses: int
    busy_workers: int | None = None
    idle_workers: int | None = None
    uptime: int | None = None  # seconds since the last full restart
    fields: dict[str, str] = field(default_factory=dict)  # every `Key: value` line, as text


def parse_server_status(text: str) -> ServerStatus:
    """Read the `?auto` text. Raises StatusParseError naming what is missing or malformed."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        # The first line is the bare server name; anything else without a colon is noise too.
        if sep and key.strip():
            fields[key.strip()] = value.strip()
    if "Total Accesses" not in fields:
        raise StatusParseError(
            "no 'Total Accesses' line in the server-status page: check that server_status_url "
            "ends in '?auto' and that Apache has 'ExtendedStatus On'"
        )
    total = _count(fields, "Total Accesses")
    assert total is not None
    return ServerStatus(
        total_accesses=total,
        busy_workers=_count(fields, "BusyWorkers"),
        idle_workers=_count(fields, "IdleWorkers"),
        uptime=_count(fields, "Uptime"),
        fields=fields,
    )


def _count(fields: dict[str, str], key: str) -> int | None:
    """A non-negative integer field, None when absent; a malformed one is an error."""
    raw = fields.get(key)
    if raw is None:
        return None
    try:
        value = int(raw)
    except ValueError:
        raise StatusParseError(f"server-status field {key!r} is not an integer: {raw!r}") from None
    if value < 0:
        raise StatusParseError(f"server-status field {key!r} is negative: {raw!r}")
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class Rates:
    rps: float  # requests/sec over the last poll, or more when the newest reading surely shows more
    window_rps: float  # requests/sec over the window (or since the baseline, if younger)


def surely_at_least(count: float, seconds: float) -> float:
    """A rate that `count` requests in `seconds` show beyond chance: two standard deviations of
    a Poisson count below the reading. A one-second reading of a steady load is noisy (3 req/s
    gives 0 to 7 in most seconds), so only this much of it may outrun the slower rate; 20
    requests in a second still say at least 11 req/s, which is a burst."""
    if seconds <= 0 or count <= 0:
        return 0.0
    return max(0.0, count - 2.0 * math.sqrt(count)) / seconds


class RateTracker:
    """Request rates from successive `Total Accesses` readings, minus the sampler's own fetches.

    `observe(at, total)` takes loop time in seconds and returns Rates, or None when the sample only
    sets a baseline: the first sample, the first after `reset()` (call it after a lost sensor), and
    the first after the counter went backwards (Apache restarted; its requests since the restart
    are unknown, so no rate is better than a wrong one). Rates are never negative.

    Readings come every `[master] sample_interval`; `rps` is the rate over the last
    `recent_seconds` (the poll interval, the span GBrowse's balancer measured), raised to what the
    newest reading alone surely shows (`surely_at_least`), so a burst counts within one reading
    while a steady load reads as steadily as one reading per poll would.
    """

    def __init__(
        self,
        *,
        window_seconds: float,
        recent_seconds: float = 0.0,
        own_fetches_per_sample: int = 1,
    ) -> None:
        if window_seconds <= 0:
            raise ValueError(f"window_seconds must be positive, got {window_seconds}")
        self.window_seconds = window_seconds
        self.recent_seconds = recent_seconds
        self.own_fetches_per_sample = own_fetches_per_sample
        self._last_total: int | None = None
        # (loop time, requests of others counted since the baseline), oldest first.
        self._history: deque[tuple[float, int]] = deque()

    def reset(self) -> None:
        """Forget everything: the next sample is a new baseline."""
        self._last_total = None
        self._history.clear()

    def observe(self, at: float, total_accesses: int) -> Rates | None:
        last = self._last_total
        if last is None or total_accesses < last:
            self.reset()
            self._last_total = total_accesses
            self._history.append((at, 0))
            return None
        prev_at, prev_count = self._history[-1]
        if at <= prev_at:
            return None  # no time passed: nothing to divide by; keep the earlier sample
        others = max(0, total_accesses - last - self.own_fetches_per_sample)
        count = prev_count + others
        self._last_total = total_accesses
        self._history.append((at, count))
        # Keep the newest sample at or before the oldest span's start as the base of its rate.
        keep = max(self.window_seconds, self.recent_seconds)
        while len(self._history) > 2 and self._history[1][0] <= at - keep:
            self._history.popleft()
        recent_at, recent_count = self._base(at - self.recent_seconds)
        window_at, window_count = self._base(at - self.window_seconds)
        recent = (count - recent_count) / (at - recent_at)
        return Rates(
            rps=max(recent, surely_at_least(others, at - prev_at)),
            window_rps=(count - window_count) / (at - window_at),
        )

    def _base(self, since: float) -> tuple[float, int]:
        """The newest sample at or before `since` (the oldest one if the history is younger),
        but never the newest sample itself."""
        base = self._history[0]
        for i in range(len(self._history) - 2, -1, -1):
            if self._history[i][0] <= since:
                return self._history[i]
            base = self._history[i]
        return base
