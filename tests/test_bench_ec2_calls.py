"""bench/ec2_calls.py prints its three tables (not its speed), and the access-log arithmetic its
latency part rests on (bench/apache_log.py) is right by hand.

The smoke run is one subprocess: it brings up moto, the counting proxy, Apache, the fake slaves
and `controller run` on loopback (in a network namespace of its own unless it is in one).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from controller.gbrowse.apache_status import RateTracker
from tests.bench_scripts import load_bench

ROOT = Path(__file__).resolve().parents[1]
log = load_bench("apache_log")


def rows_after(lines: list[str], title: str) -> list[list[str]]:
    """The whitespace-split rows of the table under the line starting with `title`."""
    start = next(i for i, line in enumerate(lines) if line.startswith(title))
    rows = []
    for line in lines[start + 2 :]:
        if not line.strip():
            break
        rows.append(line.split())
    return rows


def test_a_tiny_run_prints_every_table():
    argv = [sys.executable, str(ROOT / "bench" / "ec2_calls.py"), "--sizes", "3"]
    argv += ["--step-sizes", "3", "--steps", "2", "--poll", "2", "--cycles", "2"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=170, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    lines = done.stdout.splitlines()

    [steady] = rows_after(lines, "EC2 calls per steady cycle")
    assert steady[0] == "3" and steady[3] == "2"  # slaves, cycles
    assert float(steady[4]) > 0 and "DescribeInstances" in steady  # a cycle reads the fleet

    [step] = rows_after(lines, "Load step 0 ->")
    assert step[0] == "3" and int(step[2]) >= 1 and "RunInstances" in step

    [latency] = rows_after(lines, "Decision latency")
    steps, measured, p50, p99 = latency[:4]
    assert steps == "2" and measured == "2"
    assert re.fullmatch(r"-?\d+", p50) and re.fullmatch(r"-?\d+", p99)


LINES = [
    '1000000000000000 1000000000000200 200 "GET /server-status?auto HTTP/1.1"',
    '1000000000100000 1000000000100300 200 "GET / HTTP/1.1"',
    '1000000000200000 1000000000200300 200 "GET / HTTP/1.1"',
    '1000000001000000 1000000001000200 200 "GET /server-status?auto HTTP/1.1"',
    '1000000001500000 1000000001500300 403 "GET /index.html HTTP/1.1"',
    '1000000002000000 1000000002000200 200 "GET /server-status?auto HTTP/1.1"',
    "1000000002100000 10000000",  # cut short while Apache wrote it
]


def test_hits_and_the_total_accesses_each_reading_showed():
    hits = log.parse_hits(LINES)
    paths = ["/server-status", "/", "/", "/server-status", "/index.html", "/server-status"]
    assert [h.path for h in hits] == paths
    assert hits[0].begin == pytest.approx(1e9) and hits[0].end == pytest.approx(1e9 + 0.0002)
    readings = log.status_readings(hits)
    # requests that ended before each fetch began, the earlier fetches included
    assert [r.total for r in readings] == [0, 3, 5]
    assert log.status_readings(hits, since=1e9 + 0.5)[0].total == 3


def test_readings_replayed_through_the_controllers_tracker():
    readings = log.status_readings(log.parse_hits(LINES))
    tracker = RateTracker(window_seconds=120, recent_seconds=1)
    samples = log.rates(readings, tracker)  # the first reading is the baseline
    # 3 accesses, less the sampler's own fetch, in 1 s; then 2 less 1
    assert [(s.begin - 1e9, s.rps) for s in samples] == [
        (pytest.approx(1.0), pytest.approx(2.0)),
        (pytest.approx(2.0), pytest.approx(1.0)),
    ]
    assert log.crossing(samples, after=1e9, rps=1.5) is samples[0]
    assert log.crossing(samples, after=1e9 + 1.5, rps=1.5) is None
    assert log.last_before(samples, 1e9 + 1.9) is samples[0]
    assert log.last_before(samples, 1e9 + 0.5) is None
