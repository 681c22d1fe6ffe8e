"""systemd/: the units pass `systemd-analyze verify` (no output at all), keep their hardening,
and agree with the code on timeouts and commands.

`verify` checks that executables exist, so the units are verified from a temporary copy whose
/usr/local/bin/controller points at a stub; it exits 0 even on unknown keys, so the test asserts
that it printed nothing (and shows, on a broken copy, that it would have).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from actors.firewall_keeper import FirewallKeeper
from actors.spot_pool import SpotPool
from controller.cli import build_parser
from controller.runtime.daemon import KILL_TIMEOUT_SECONDS

ROOT = Path(__file__).resolve().parents[1]
UNITS = ROOT / "systemd"
MAIN = UNITS / "controller.service"
CLUSTER = UNITS / "controller-cluster@.service"  # a template: one instance per cluster
INSTALLED_BINARY = "/usr/local/bin/controller"


def systemd_analyze() -> str:
    path = shutil.which("systemd-analyze")
    if path is None:
        pytest.fail("systemd-analyze is missing: apt-get install systemd (Debian package)")
    return path


def unit_settings(path: Path) -> dict[str, list[str]]:
    """Key -> values in file order (systemd allows a key more than once)."""
    settings: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


@pytest.fixture
def unit_dir(tmp_path: Path) -> Path:
    """The units with the controller binary replaced by an executable stub."""
    stub = tmp_path / "bin" / "controller"
    stub.parent.mkdir()
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    for unit in UNITS.iterdir():
        if unit.suffix in (".service", ".path"):
            text = unit.read_text().replace(INSTALLED_BINARY, str(stub))
            (tmp_path / unit.name.replace("@.", "@kth.")).write_text(text)
    return tmp_path


def verify(unit_dir: Path, *names: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [systemd_analyze(), "verify", *(str(unit_dir / n) for n in names)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=unit_dir,
    )


def test_units_verify_cleanly(unit_dir: Path):
    names = sorted(p.name for p in unit_dir.iterdir() if p.is_file())
    assert "controller.service" in names and "controller-apache-reload.path" in names
    assert "controller-cluster@kth.service" in names
    result = verify(unit_dir, *names)
    assert result.returncode == 0
    assert result.stderr == "" and result.stdout == ""


def test_verify_would_report_a_typo(unit_dir: Path):
    broken = unit_dir / "controller.service"
    broken.write_text(broken.read_text().replace("WatchdogSec=", "WatchdogSecs="))
    assert "Unknown key 'WatchdogSecs'" in verify(unit_dir, "controller.service").stderr


@pytest.mark.parametrize("name", ["controller.service", "controller-cluster@kth.service"])
def test_security_exposure_is_low(unit_dir: Path, name: str):
    result = subprocess.run(
        [systemd_analyze(), "security", "--offline=true", str(unit_dir / name)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=unit_dir,
    )
    found = re.search(rf"Overall exposure level for {re.escape(name)}: (\d+\.\d+)", result.stdout)
    assert found, result.stdout[-2000:] + result.stderr
    assert float(found.group(1)) <= 2.0  # "OK"; 1.4 when written


def test_notify_watchdog_restart_and_hardening():
    s = unit_settings(MAIN)
    expected = {
        "Type": "notify",
        "NotifyAccess": "main",
        "WatchdogSec": "60",
        "Restart": "on-failure",
        "RestartSec": "10",
        "KillMode": "mixed",
        "User": "controller",
        "StateDirectory": "controller",
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "CapabilityBoundingSet": "",
        "AmbientCapabilities": "",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
        "MemoryDenyWriteExecute": "yes",
        "SystemCallArchitectures": "native",
        "UMask": "0077",
        "EnvironmentFile": "-/etc/controller/controller.env",
        "ReadWritePaths": "-/etc/gbrowse2 -/run/lock",
        "ExecReload": "/bin/kill -HUP $MAINPID",
    }
    for key, value in expected.items():
        assert s.get(key) == [value], key
    assert "@system-service" in s["SystemCallFilter"]
    assert "DynamicUser" not in s  # a dedicated user owns the state directory across restarts


def test_stop_timeout_outlasts_the_teardown():
    stop = int(unit_settings(MAIN)["TimeoutStopSec"][0])
    assert stop >= SpotPool.grace_seconds + FirewallKeeper.grace_seconds + 30
    assert stop == KILL_TIMEOUT_SECONDS  # `run --kill` waits as long as systemd would


def test_exec_lines_are_real_commands():
    s = unit_settings(MAIN)
    parser = build_parser()
    for line in (s["ExecStartPre"][0], s["ExecStart"][0]):
        binary, *argv = line.split()
        assert binary == INSTALLED_BINARY
        args = parser.parse_args(argv)
        assert args.config == "/etc/controller/config.toml"
    assert parser.parse_args(s["ExecStart"][0].split()[1:]).command == "run"
    assert parser.parse_args(s["ExecStartPre"][0].split()[1:]).command == "check-config"


def test_cluster_unit_runs_one_cluster_after_the_scheduler_as_the_main_unit_does():
    s, main = unit_settings(CLUSTER), unit_settings(MAIN)
    parser = build_parser()
    run = parser.parse_args(s["ExecStart"][0].replace("%i", "kth").split()[1:])
    assert (run.command, run.cluster, run.config) == ("run", "kth", "/etc/controller/cluster.toml")
    check = parser.parse_args(s["ExecStartPre"][0].split()[1:])
    assert (check.command, check.config) == ("check-config", "/etc/controller/cluster.toml")
    assert "gridengine-master.service" in s["After"][0].split()
    # the same supervision, stop timeout and hardening, but for Apache's paths and the families
    # Grid Engine's clients need
    differ = {"Description", "ExecStartPre", "ExecStart", "After", "ReadWritePaths"}
    differ.add("RestrictAddressFamilies")
    for key in main.keys() - differ:
        assert s.get(key) == main[key], key
    assert s["RestrictAddressFamilies"] == ["AF_INET AF_INET6 AF_UNIX AF_NETLINK"]
    assert "/etc/gbrowse2" not in s["ReadWritePaths"][0]
    assert "qconf -am controller" in CLUSTER.read_text()  # the manager right, written down


def test_path_unit_watches_the_default_renderfarm_conf():
    from controller.config.schema import MasterSection

    path = unit_settings(UNITS / "controller-apache-reload.path")
    assert path["PathChanged"] == [MasterSection().renderfarm_conf]
    assert path["Unit"] == ["controller-apache-reload.service"]


def test_env_example_holds_no_live_secret():
    for line in (UNITS / "controller.env.example").read_text().splitlines():
        assert not line.strip() or line.startswith("#"), line  # everything commented out
