"""Batch job traces: `submit_time_s,run_time_s,cores,mem_mb` per job, read with errors that name
the file and line (the format of the Parallel Workloads Archive extracts the cluster benchmark
replays; mem_mb may be empty)."""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass

COLUMNS = ("submit_time_s", "run_time_s", "cores", "mem_mb")


class JobTraceError(Exception):
    """A job trace that cannot be replayed; the message names the file and line."""


@dataclass(frozen=True, slots=True)
class Job:
    submit: float  # seconds from the log's start
    run: float  # seconds it holds its slots once started
    cores: int  # Grid Engine slots it asks for
    mem_mb: float = 0.0  # memory per core, as SWF logs and Grid Engine's consumable (0: none)


def read_jobs(path: str) -> list[Job]:
    """Read a job trace (a header line is allowed; without one the columns are in COLUMNS'
    order, mem_mb optional), sorted by submit time (equal times keep the file's order)."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            lines = list(csv.reader(f))
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or exc
        raise JobTraceError(f"{path}: cannot read the job trace: {reason}") from None
    order = list(range(len(COLUMNS)))
    widths = (3, 4)  # fields a row may have: without a header, mem_mb may be left out
    jobs: list[Job] = []
    for n, fields in enumerate(lines, start=1):
        if not fields or not "".join(fields).strip() or fields[0].lstrip().startswith("#"):
            continue
        if not jobs and not _looks_numeric(fields[0]):
            order, widths = _header(fields, path, n), (len(fields),)
            continue
        if len(fields) not in widths:
            raise JobTraceError(
                f"{path}:{n}: expected {' or '.join(map(str, widths))} fields "
                f"({','.join(COLUMNS)}), got {len(fields)}"
            )
        jobs.append(_job(fields, order, path, n))
    if not jobs:
        raise JobTraceError(f"{path}: no jobs (expected rows of {','.join(COLUMNS)})")
    jobs.sort(key=lambda j: j.submit)
    return jobs


def _header(fields: list[str], path: str, line: int) -> list[int]:
    """Where each of COLUMNS is in this header (-1: mem_mb absent)."""
    names = [f.strip().lower() for f in fields]
    order = []
    for column in COLUMNS:
        if column in names:
            order.append(names.index(column))
        elif column == "mem_mb":
            order.append(-1)
        else:
            raise JobTraceError(
                f"{path}:{line}: the header has no {column} column (expected {','.join(COLUMNS)})"
            )
    return order


def _job(fields: list[str], order: list[int], path: str, line: int) -> Job:
    def cell(k: int) -> str:
        i = order[k]
        return fields[i].strip() if 0 <= i < len(fields) else ""

    submit = _number(cell(0), path, line, "submit_time_s")
    run = _number(cell(1), path, line, "run_time_s")
    cores = _number(cell(2), path, line, "cores")
    if cores < 1 or cores != int(cores):
        raise JobTraceError(f"{path}:{line}: cores must be a whole number >= 1 (got {cell(2)!r})")
    mem = _number(cell(3), path, line, "mem_mb") if cell(3) else 0.0
    return Job(submit, run, int(cores), mem)


def _number(text: str, path: str, line: int, column: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise JobTraceError(f"{path}:{line}: {column} {text!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise JobTraceError(f"{path}:{line}: {column} must be a finite number >= 0 (got {text!r})")
    return value


def _looks_numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
