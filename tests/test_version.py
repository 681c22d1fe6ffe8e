"""Which build is running: `controller --version`, `python -m controller`, the metric."""

from __future__ import annotations

import subprocess
import sys
import time
import tomllib
from pathlib import Path

from controller.status.fleetstate import FleetState
from controller.status.metrics import Metrics

ROOT = Path(__file__).resolve().parent.parent
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def test_controller_version_prints_the_project_version() -> None:
    exe = Path(sys.executable).with_name("controller")
    for argv in ([str(exe), "--version"], [sys.executable, "-m", "controller", "--version"]):
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == f"controller {VERSION}"


def test_metrics_name_the_build_and_the_process() -> None:
    text = Metrics(FleetState(), time.monotonic).render().decode()
    assert f'controller_build_info{{version="{VERSION}"}} 1.0' in text
    assert "process_resident_memory_bytes" in text
    assert "process_open_fds" in text
