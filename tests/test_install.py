"""scripts/install, run as README says, into a temporary root (--prefix): the binary the unit's
ExecStart names exists and runs, Documentation= points at an installed file, the completion and
the examples are there, the installed units pass `systemd-analyze verify`, and a second run
(an upgrade, here with the RHEL drop-ins) keeps working.

The test runs without a network: the project is built from a copy of this checkout with pip's
--no-index --no-build-isolation (passed after `--`, as an operator with a wheelhouse would), and
its dependencies come from this test's own environment through PYTHONPATH instead of PyPI.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
BINARY = "/usr/local/bin/controller"
UNITS = "usr/local/lib/systemd/system"
NOT_COPIED = shutil.ignore_patterns(
    ".venv", ".git", "out", "build", "*.egg-info", "__pycache__", ".*_cache", "*.pyc"
)


def unit_values(path: Path, key: str) -> list[str]:
    return [
        line.split("=", 1)[1].strip()
        for line in path.read_text().splitlines()
        if line.startswith(f"{key}=")
    ]


def run_install(src: Path, root: Path, *options: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env["PYTHONPATH"] = sysconfig.get_paths()["purelib"]  # the dependencies, instead of PyPI
    done = subprocess.run(
        [
            "bash",
            str(src / "scripts" / "install"),
            "--prefix",
            str(root),
            *options,
            "--",
            "--no-index",
            "--no-build-isolation",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def systemd_analyze() -> str:
    path = shutil.which("systemd-analyze")
    if path is None:
        pytest.fail("systemd-analyze is missing: apt-get install systemd (Debian package)")
    return path


def verify_installed_units(root: Path, where: Path) -> subprocess.CompletedProcess[str]:
    """`systemd-analyze verify` on a copy of the installed units whose ExecStart names the
    binary inside the temporary root (verify checks that it is executable)."""
    shutil.copytree(root / UNITS, where)
    for unit in where.glob("*.service"):
        unit.write_text(unit.read_text().replace(BINARY, f"{root}{BINARY}"))
        if "@." in unit.name:  # a template is verified as one of its instances
            unit.rename(unit.with_name(unit.name.replace("@.", "@kth.")))
    names = [p.name for p in where.iterdir() if p.is_file()]
    return subprocess.run(
        [systemd_analyze(), "verify", *sorted(names)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=where,
        check=False,
    )


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("install")
    src = base / "src"
    shutil.copytree(ROOT, src, ignore=NOT_COPIED)
    root = base / "root"
    done = run_install(src, root)
    assert f"installed under {root}" in done.stdout
    return src, root


def test_the_units_exec_start_runs_the_installed_version(installed):
    _, root = installed
    unit = root / UNITS / "controller.service"
    commands = unit_values(unit, "ExecStart") + unit_values(unit, "ExecStartPre")
    assert len(commands) == 2
    for command in commands:
        binary = command.split()[0]
        assert binary == BINARY
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        done = subprocess.run(
            [f"{root}{binary}", "--version"], capture_output=True, text=True, env=env, timeout=60
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == f"controller {VERSION}"
    link = root / BINARY.lstrip("/")
    assert link.is_symlink()
    assert link.resolve() == (root / "opt/controller/bin/controller").resolve()
    # the virtualenv is of its own, not this test's interpreter
    assert (root / "opt/controller/bin/python").resolve() != Path(sys.executable).resolve()


def test_documentation_points_at_an_installed_file(installed):
    _, root = installed
    (url,) = unit_values(root / UNITS / "controller.service", "Documentation")
    assert url.startswith("file:///")
    readme = root / url.removeprefix("file:///")
    assert readme.read_text() == (ROOT / "README.md").read_text()
    doc = readme.parent
    assert (doc / "docs" / "rhel.md").is_file()
    assert (doc / "examples" / "config.toml").is_file()
    assert (doc / "examples" / "prometheus" / "controller-rules.yml").is_file()
    assert (doc / "examples" / "grafana" / "controller.json").is_file()


def test_completion_is_installed_and_valid(installed):
    _, root = installed
    bash = root / "usr/local/share/bash-completion/completions/controller"
    zsh = root / "usr/local/share/zsh/site-functions/_controller"
    assert "check-config" in bash.read_text() and "check-config" in zsh.read_text()
    done = subprocess.run(["bash", "-n", str(bash)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr


def test_installed_units_verify_cleanly(installed, tmp_path):
    _, root = installed
    assert (root / UNITS / "controller-cluster@.service").is_file()
    done = verify_installed_units(root, tmp_path / "units")
    assert done.returncode == 0 and done.stdout + done.stderr == ""


def test_running_it_again_upgrades_in_place_with_the_rhel_dropins(installed, tmp_path):
    src, root = installed
    marker = root / "opt/controller/kept"
    marker.write_text("the same virtualenv\n")
    run_install(src, root, "--rhel")
    assert marker.exists()
    dropin = root / UNITS / "controller-apache-reload.service.d" / "httpd.conf"
    assert unit_values(dropin, "ExecStart") == ["", "/usr/bin/systemctl reload httpd.service"]
    assert (root / UNITS / "controller.service.d" / "httpd.conf").is_file()
    done = verify_installed_units(root, tmp_path / "units")
    assert done.returncode == 0 and done.stdout + done.stderr == ""


def test_bad_options_get_one_line_and_exit_2(tmp_path):
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "install"), "--prefx", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.strip() == "scripts/install: unknown option --prefx (see --help)"
    assert not any(tmp_path.iterdir())
