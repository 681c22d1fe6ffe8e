"""bench/gbrowse_rows.py prints every row of the table and of the fallback case (not its speed).

One short run of each scenario as a subprocess: it re-executes itself in its own loopback-only
network namespace and brings up moto, Apache, the proxy, the fake slaves and `controller run`.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# "  label   min median max"; a row's by-action lines are indented two more spaces.
FIGURES = re.compile(r"^ {2}(?P<label>.*?\S)\s+[\d.]+\s+(?P<median>[\d.]+)\s+[\d.]+$")

ROWS = [
    "burst -> first launch call (s)",
    "EC2 calls from start until 5 slaves listed",
    "EC2 calls from burst until 5 slaves listed",
    "burst -> 5 listed in renderfarm.conf (s)",
    "reloads until 5 listed",
    "steady EC2 calls per poll, 5 slaves",
    "unreachable slave leaves renderfarm.conf (s)",
    "unreachable slave is replaced (s)",
    "load -> 3 listed (s)",
    "load -> 3 listed (polls)",
    "RunInstances refused, m5.large@us-east-1a",
]


def test_one_short_run_prints_every_row():
    argv = [sys.executable, str(ROOT / "bench" / "gbrowse_rows.py"), "--runs", "1"]
    argv += ["--poll", "2", "--steady-polls", "1", "--timeout", "40"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=170, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-4000:]
    figures = {}
    for line in done.stdout.splitlines():
        match = FIGURES.match(line)
        if match:
            figures.setdefault(match["label"], float(match["median"]))
    missing = [row for row in ROWS if row not in figures]
    assert not missing, f"rows without figures: {missing}\n{done.stdout}\n{done.stderr[-3000:]}"
    # Every launch call is counted, by action, and a steady fleet is still read from EC2.
    assert figures["  RunInstances"] >= 5
    assert figures["steady EC2 calls per poll, 5 slaves"] > 0
    assert figures["reloads until 5 listed"] >= 1
    # The proxy refused m5.large, and the fleet was listed on the second type.
    assert figures["RunInstances refused, m5.large@us-east-1a"] >= 1
    assert "run 1 listed types: c5.large, c5.large, c5.large" in done.stdout
    assert "listed on c5.large within 3 polls" in done.stdout
