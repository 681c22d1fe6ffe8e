"""bench/scale.py prints its table (not its figures' size): one short run of the smallest fleet."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ROW = re.compile(
    r"^\s*(?P<n>\d+)\s+(?P<poll>[\d.]+)\s+(?P<ramp>[\d.]+)\s+(?P<cpu>[\d.]+)\s+(?P<wall>[\d.]+)"
    r"\s+(?P<pct>[\d.]+)%\s+(?P<rss>[\d.]+)\s+(?P<cycles>\d+)$"
)


def test_a_short_run_of_the_smallest_fleet_prints_one_row():
    argv = [sys.executable, str(ROOT / "bench" / "scale.py"), "--sizes", "20"]
    argv += ["--seconds", "3", "--poll", "1", "--boot", "1"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-4000:]
    lines = done.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.lstrip().startswith("instances"))
    assert lines[header].split()[:3] == ["instances", "poll", "s"]
    match = ROW.match(lines[header + 1])
    assert match, lines[header + 1]
    assert int(match["n"]) == 20 and float(match["poll"]) == 1.0
    assert float(match["wall"]) >= 3.0
    assert 0.0 < float(match["cpu"]) and 0.0 < float(match["rss"])
    assert int(match["cycles"]) >= 2  # a cycle a poll while the fleet is held
    assert lines[-1].startswith("target at 1,000 instances")
    assert "failed" not in done.stderr
