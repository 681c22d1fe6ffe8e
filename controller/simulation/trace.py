"""Load traces: `t_seconds,requests` per bucket, read with errors that name the file and line,
and the load a sensor counting requests would have measured from them."""

from __future__ import annotations

import csv
import math
from collections.abc import Callable
from dataclasses import dataclass, replace


class TraceError(Exception):
    """A trace that cannot be replayed; the message names the file and line."""


# traces


@dataclass(frozen=True, slots=True, kw_only=True)
class Trace:
    """A load trace on a regular grid: `rps[i]` holds from `start + i * bucket_seconds`."""

    path: str
    start: float
    bucket_seconds: float
    rps: tuple[float, ...]

    @property
    def end(self) -> float:
        return self.start + len(self.rps) * self.bucket_seconds

    def time(self, i: int) -> float:
        return self.start + i * self.bucket_seconds

    def window(self, start: float, end: float) -> Trace:
        """The buckets that start within [start, end) (times stay as in the file)."""
        first = max(0, math.ceil((start - self.start) / self.bucket_seconds - 1e-9))
        last = min(len(self.rps), math.ceil((end - self.start) / self.bucket_seconds - 1e-9))
        if last - first < 1:
            raise TraceError(f"{self.path}: no buckets between t={start:g} and t={end:g}")
        return replace(self, start=self.time(first), rps=self.rps[first:last])


def _number(text: str, path: str, line: int, column: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise TraceError(f"{path}:{line}: {column} {text.strip()!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise TraceError(f"{path}:{line}: {column} must be a finite number >= 0 (got {text!r})")
    return value


def read_trace(path: str) -> Trace:
    """Read `t_seconds,requests` rows (a header line is allowed); missing buckets count as 0."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            lines = list(csv.reader(f))
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or exc
        raise TraceError(f"{path}: cannot read the trace: {reason}") from None
    rows: list[tuple[float, float]] = []
    for n, fields in enumerate(lines, start=1):
        if not fields or not "".join(fields).strip() or fields[0].lstrip().startswith("#"):
            continue
        if not rows and n == 1 and not _looks_numeric(fields[0]):
            continue  # header
        if len(fields) != 2:
            raise TraceError(f"{path}:{n}: expected 2 fields t_seconds,requests, got {len(fields)}")
        t = _number(fields[0], path, n, "t_seconds")
        req = _number(fields[1], path, n, "requests")
        if rows and t <= rows[-1][0]:
            raise TraceError(f"{path}:{n}: t_seconds must increase ({t:g} after {rows[-1][0]:g})")
        rows.append((t, req))
        if len(rows) > 2:
            bucket = rows[1][0] - rows[0][0]
            steps = (t - rows[-2][0]) / bucket
            if abs(steps - round(steps)) > 1e-6:
                raise TraceError(
                    f"{path}:{n}: t_seconds {t:g} is off the {bucket:g}-second grid of the "
                    "first rows"
                )
    if len(rows) < 2:
        raise TraceError(f"{path}: needs at least two rows of t_seconds,requests")
    bucket = rows[1][0] - rows[0][0]
    start = rows[0][0]
    count = round((rows[-1][0] - start) / bucket) + 1
    rps = [0.0] * count
    for t, req in rows:
        rps[round((t - start) / bucket)] = req / bucket
    return Trace(path=path, start=start, bucket_seconds=bucket, rps=tuple(rps))


def _looks_numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


# results


def demand_of(rps: float, capacity: float) -> int:
    """Slaves needed for a load: ceil(load / capacity), robust to float noise."""
    if rps <= 0 or capacity <= 0:
        return 0
    return math.ceil(round(rps / capacity, 9))


# the replay


def load_rate(trace: Trace) -> Callable[[float, float], float]:
    """rate(a, b): requests/sec the trace delivered between times a and b (what a sensor
    counting requests would measure)."""
    # Called a few times per reading, hundreds of thousands of times a replay: plain locals.
    b, start, end, rps = trace.bucket_seconds, trace.start, trace.end, trace.rps
    cum = [0.0]
    for r in rps:
        cum.append(cum[-1] + r * b)
    times = [trace.time(j) for j in range(len(rps))]

    last_cum, first_rps, last_rps = cum[-1], rps[0], rps[-1]

    def rate(a: float, z: float) -> float:
        # the requests up to z less those up to a (one expression for each, written out twice)
        if z <= start:
            upto_z = first_rps * (z - start)
        elif z >= end:
            upto_z = last_cum + last_rps * (z - end)
        else:
            j = int((z - start) // b)
            upto_z = cum[j] + rps[j] * (z - times[j])
        if a <= start:
            upto_a = first_rps * (a - start)
        elif a >= end:
            upto_a = last_cum + last_rps * (a - end)
        else:
            j = int((a - start) // b)
            upto_a = cum[j] + rps[j] * (a - times[j])
        return max(0.0, (upto_z - upto_a) / (z - a))

    return rate
