"""The seed's daemon options through the real CLI, on a machine with no AWS account.

`controller run --dry-run` without credentials runs against the simulated cloud, so this is also
README's "no AWS account" path: it must start, serve /status, and stop cleanly on --kill.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.harness.net import free_port


def no_aws_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "EC2_"))}
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    env["AWS_CONFIG_FILE"] = os.devnull
    env["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull
    return env


def controller(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "controller.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def write_config(tmp_path: Path, stats_port: int) -> Path:
    config = tmp_path / "config.toml"
    config.write_text(
        f"""
[controller]
fleet = "daemon-test"

[master]
server_status_url = "http://127.0.0.1:{free_port()}/server-status?auto"
poll_interval = 1
external_ip = "127.0.0.1"
renderfarm_conf = "{tmp_path / "renderfarm.conf"}"
reload_command = []

[slave]
image_id = "ami-12345678"

[stats]
listen = "127.0.0.1:{stats_port}"
"""
    )
    return config


def test_background_pidfile_status_and_kill_without_an_aws_account(tmp_path):
    env = no_aws_env()
    port = free_port()
    config = write_config(tmp_path, port)
    pidfile, logfile = tmp_path / "controller.pid", tmp_path / "controller.log"
    daemon = ["--pidfile", str(pidfile), "--logfile", str(logfile)]

    started = controller("run", "-c", str(config), "--dry-run", "--background", *daemon, env=env)
    assert started.returncode == 0, started.stderr
    pid = int(pidfile.read_text())
    try:
        os.kill(pid, 0)
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                    assert r.status == 200
                    break
            except OSError:
                assert time.monotonic() < deadline, logfile.read_text()
                time.sleep(0.3)

        # A second daemon on the same pidfile is refused with the running PID named.
        again = controller("run", "-c", str(config), "--dry-run", "--background", *daemon, env=env)
        assert again.returncode == 2 and str(pid) in again.stderr

        shown = controller("status", "--url", f"http://127.0.0.1:{port}", env=env)
        assert shown.returncode == 0, shown.stderr
        assert "dry" in shown.stdout.lower()

        killed = controller("run", "--kill", "--pidfile", str(pidfile), env=env)
        assert killed.returncode == 0, killed.stderr
        deadline = time.monotonic() + 30
        while _alive(pid):
            assert time.monotonic() < deadline, "daemon still running after --kill"
            time.sleep(0.2)
        log = logfile.read_text()
        assert "cloud.simulated" in log and "controller.stopped" in log
        # A dry run writes no renderfarm.conf.
        assert not (tmp_path / "renderfarm.conf").exists()
    finally:
        if _alive(pid):
            os.kill(pid, 9)


def test_status_of_nothing_running_is_exit_1(tmp_path):
    shown = controller("status", "--url", f"http://127.0.0.1:{free_port()}", env=no_aws_env())
    assert shown.returncode == 1
    assert len(shown.stderr.strip().splitlines()) == 1


def test_run_without_credentials_and_without_dry_run_is_refused(tmp_path):
    config = write_config(tmp_path, free_port())
    refused = controller("run", "-c", str(config), env=no_aws_env())
    assert refused.returncode == 2
    assert "no AWS credentials" in refused.stderr


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie child of ours would still answer; the daemon is not our child (double fork).
    return True


def test_a_log_nobody_reads_any_more_does_not_end_the_controller(tmp_path):
    """stderr a pipe whose reader went away (or a terminal that hung up): the controller keeps
    managing its fleet, and still stops cleanly (its teardown) on SIGTERM."""
    import signal

    port = free_port()
    config = write_config(tmp_path, port)
    proc = subprocess.Popen(
        [sys.executable, "-m", "controller.cli", "run", "-c", str(config), "--dry-run"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=no_aws_env(),
    )
    assert proc.stderr is not None
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2):
                    break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "never served"
                time.sleep(0.3)
        proc.stderr.close()  # the reader goes away
        proc.send_signal(signal.SIGHUP)  # a terminal's hang-up: a reload, which logs
        time.sleep(3)  # three polls of 1 s, each logging its decision into the closed pipe
        assert proc.poll() is None, f"the controller ended with {proc.returncode}"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as answer:
            assert answer.status == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
