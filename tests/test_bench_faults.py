"""bench/faults.py runs a scenario and prints its row of the table (not its figures' values).

One short scenario as a subprocess: it re-executes itself in its own loopback-only network
namespace and brings up moto, Apache, the fault proxy, the render farm and `controller run`.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_one_short_scenario_prints_its_row():
    argv = [sys.executable, str(ROOT / "bench" / "faults.py"), "--only", "sighup_storm"]
    done = subprocess.run(
        [*argv, "--hold", "2"], capture_output=True, text=True, timeout=170, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert "recover (s)" in done.stdout, done.stdout
    [row] = [line for line in done.stdout.splitlines() if line.startswith("sighup_storm ")]
    calls, *_, left, violations = (int(v) for v in row.split()[1:7])
    assert calls > 0 and left == 0 and violations == 0, done.stdout
    assert "scale-out" in row and "sighups" in done.stdout
