"""The fleet's lock (controller.runtime.fleet_lock): real flock on real files, across processes.

flock locks belong to the open file description, so two FleetLock objects in one process
conflict as two processes would; the fork and `kill -9` cases use real child processes.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from controller.runtime import fleet_lock
from controller.runtime.fleet_lock import FleetBusy, FleetLock, lock_dirs, lock_path

FLEET = "lock-test"


def child(code: str) -> subprocess.Popen[str]:
    """A python child running `code`, which prints its line once it holds what it should."""
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)


def stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=10)
    assert proc.stdout is not None
    proc.stdout.close()


def test_run_holds_it_alone_and_names_its_pid() -> None:
    with FleetLock(FLEET) as run:
        with pytest.raises(FleetBusy) as second:
            FleetLock(FLEET).acquire()
        with pytest.raises(FleetBusy) as teardown:
            FleetLock(FLEET, shared=True).acquire()
        assert Path(run.path).read_text() == f"{os.getpid()}\n"

    assert second.value.holder.pid == os.getpid()
    assert second.value.holder.path == run.path
    assert str(teardown.value.holder) == f"PID {os.getpid()}, lock {run.path}"
    assert Path(run.path).read_text() == ""  # released: no PID left to be named
    with FleetLock(FLEET):
        pass  # free again
    assert os.path.exists(run.path)  # never removed (removing races a second opener)


def test_teardowns_share_it_and_keep_a_run_out() -> None:
    with FleetLock(FLEET, shared=True) as first, FleetLock(FLEET, shared=True):
        with pytest.raises(FleetBusy) as run:
            FleetLock(FLEET).acquire()

    assert run.value.holder.pid is None  # a teardown writes no PID
    assert str(run.value.holder) == f"another process, lock {first.path}"
    with FleetLock(FLEET):
        pass


def test_other_fleets_are_not_held() -> None:
    with FleetLock(FLEET), FleetLock("another-fleet"):
        pass


def test_the_file_is_world_readable_whatever_the_umask() -> None:
    old = os.umask(0o077)  # systemd's UMask= of the service
    try:
        with FleetLock(FLEET) as lock:
            mode = stat.S_IMODE(os.stat(lock.path).st_mode)
    finally:
        os.umask(old)

    assert mode == 0o644  # another user's teardown can open it to test it


def test_kill_9_frees_it() -> None:
    holder = child(
        "import time\n"
        "from controller.runtime.fleet_lock import FleetLock\n"
        f"FleetLock({FLEET!r}).acquire()\n"
        "print('held', flush=True)\n"
        "time.sleep(600)\n"
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        with pytest.raises(FleetBusy) as busy:
            FleetLock(FLEET, shared=True).acquire()
        assert busy.value.holder.pid == holder.pid
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)

        with FleetLock(FLEET):
            pass  # the lock died with its process; the PID it left names no one alive
    finally:
        stop(holder)


def test_it_survives_the_daemons_forks_and_names_the_daemon() -> None:
    # As --background: taken in the terminal's process, which forks and exits; the daemon
    # writes its own PID. A lockf lock would have died with the parent.
    holder = child(
        "import os, time\n"
        "from controller.runtime.fleet_lock import FleetLock\n"
        f"lock = FleetLock({FLEET!r})\n"
        "lock.acquire()\n"
        "if os.fork() > 0:\n"
        "    os._exit(0)\n"
        "lock.note_pid()\n"
        "print(os.getpid(), flush=True)\n"
        "time.sleep(600)\n"
    )
    daemon = 0
    try:
        assert holder.stdout is not None
        daemon = int(holder.stdout.readline())
        assert holder.wait(timeout=10) == 0  # the parent is gone

        with pytest.raises(FleetBusy) as busy:
            FleetLock(FLEET, shared=True).acquire()

        assert busy.value.holder.pid == daemon
    finally:
        if daemon:
            os.kill(daemon, signal.SIGKILL)
        stop(holder)


def test_where_it_lives(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(fleet_lock.LOCK_DIR_ENV, str(tmp_path))
    assert lock_dirs() == [str(tmp_path)]
    assert lock_path("gb", str(tmp_path)) == str(tmp_path / "controller-gb.lock")

    monkeypatch.delenv(fleet_lock.LOCK_DIR_ENV)
    system = tmp_path / "run-lock"
    monkeypatch.setattr(fleet_lock, "SYSTEM_LOCK_DIR", str(system))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    assert lock_dirs() == [str(tmp_path / "tmp"), str(system)]  # no /run/lock: the temp dir
    system.mkdir()
    assert lock_dirs() == [str(system), str(tmp_path / "tmp")]


def test_a_lock_in_the_other_directory_is_seen(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # A controller that could not write /run/lock locked in the temp dir; a teardown that can
    # write /run/lock must still find it.
    monkeypatch.delenv(fleet_lock.LOCK_DIR_ENV)
    system = tmp_path / "run-lock"
    monkeypatch.setattr(fleet_lock, "SYSTEM_LOCK_DIR", str(system))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    with FleetLock(FLEET) as run:
        system.mkdir()
        with pytest.raises(FleetBusy) as busy:
            FleetLock(FLEET, shared=True).acquire()

    assert busy.value.holder.path == run.path == str(tmp_path / "tmp" / f"controller-{FLEET}.lock")
    with FleetLock(FLEET, shared=True) as teardown:
        assert teardown.path == str(system / f"controller-{FLEET}.lock")
