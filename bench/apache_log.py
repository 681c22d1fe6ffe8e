"""Apache's access log with microsecond times: the mod_status readings the controller took,
and the request rate each one showed it.

The bench's Apache logs every request as `BEGIN_US END_US STATUS "REQUEST LINE"` (LOG_FORMAT,
times in microseconds since the epoch, the clock the bench's EC2 proxy stamps calls with). Each
fetch of /server-status is a reading; the `Total Accesses` it showed is the count of requests
that ended before it began. Replaying those readings through the controller's own RateTracker
(built as LoadSampler builds it) gives the rate the controller saw at each one; the crossing
reading of a load step is the first one after the step whose rate reaches the row's
requests/sec. Pure: no I/O, so the tests check it by hand.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

LOG_FORMAT = 'LogFormat "%{begin:usec}t %{end:usec}t %>s \\"%r\\"" bench'
STATUS_PATH = "/server-status"


@dataclass(frozen=True, slots=True)
class Hit:
    begin: float  # seconds since the epoch: Apache read the request
    end: float  # ... and finished answering it
    path: str  # without the query


@dataclass(frozen=True, slots=True)
class Reading:
    begin: float  # mod_status made its page right after this
    end: float
    total: int  # Total Accesses on the page: the requests that ended before it began


@dataclass(frozen=True, slots=True)
class Sample:
    begin: float
    end: float
    rps: float  # the rate the controller took from this reading


class Tracker(Protocol):
    """controller.gbrowse.apache_status.RateTracker: None for a baseline, else `.rps`."""

    def observe(self, at: float, total_accesses: int) -> Any: ...


def parse_hits(lines: Iterable[str]) -> list[Hit]:
    """The hits of LOG_FORMAT lines; a line cut short (Apache still writing it) is skipped."""
    hits = []
    for line in lines:
        fields = line.split(" ", 3)
        if len(fields) < 4 or not fields[0].isdigit() or not fields[1].isdigit():
            continue
        request = fields[3].strip().strip('"').split(" ")
        path = request[1].split("?", 1)[0] if len(request) > 1 else ""
        hits.append(Hit(begin=int(fields[0]) / 1e6, end=int(fields[1]) / 1e6, path=path))
    return hits


def status_readings(
    hits: Sequence[Hit], since: float = -math.inf, status_path: str = STATUS_PATH
) -> list[Reading]:
    """Every status fetch that began after `since`, with the Total Accesses it showed."""
    ends = sorted(h.end for h in hits)
    fetches = sorted(
        (h for h in hits if h.path == status_path and h.begin > since), key=lambda h: h.begin
    )
    return [Reading(f.begin, f.end, bisect.bisect_right(ends, f.begin)) for f in fetches]


def rates(readings: Sequence[Reading], tracker: Tracker) -> list[Sample]:
    """The readings the tracker turned into a rate (the first only sets its baseline)."""
    samples = []
    for r in readings:
        seen = tracker.observe(r.begin, r.total)
        if seen is not None:
            samples.append(Sample(begin=r.begin, end=r.end, rps=seen.rps))
    return samples


def crossing(samples: Sequence[Sample], after: float, rps: float) -> Sample | None:
    """The first sample taken after `after` whose rate reaches `rps`, if any."""
    for sample in samples:
        if sample.begin > after and sample.rps >= rps:
            return sample
    return None


def last_before(samples: Sequence[Sample], moment: float) -> Sample | None:
    """The newest sample taken by `moment` (Apache logs a fetch's end after the answer left, so
    the controller may act on it before that end)."""
    before = [s for s in samples if s.begin <= moment]
    return before[-1] if before else None
