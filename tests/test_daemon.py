"""The daemon options with real processes: a tiny script daemonizes, holds the pidfile, and is
stopped by kill_daemon from the test; nothing is mocked."""

from __future__ import annotations

import os
import pwd
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from controller.runtime.daemon import DaemonError, PidFile, kill_daemon, read_pid

ROOT = Path(__file__).resolve().parents[1]

DAEMON = textwrap.dedent(
    """
    import os, signal, sys, time
    sys.path.insert(0, {root!r})
    from controller.runtime.daemon import daemonize

    pidfile, logfile, ignore_term = sys.argv[1], sys.argv[2], sys.argv[3] == "ignore"
    lock = daemonize(logfile=logfile, pidfile=pidfile)
    stop = []
    signal.signal(signal.SIGTERM, signal.SIG_IGN if ignore_term else lambda *_: stop.append(1))
    print(f"started pid={{os.getpid()}} sid={{os.getsid(0)}} cwd={{os.getcwd()}}", flush=True)
    while not stop:
        time.sleep(0.02)
    print("teardown", flush=True)
    time.sleep(0.3)  # a teardown that takes a while: --kill must wait for it
    lock.release()
    print("stopped", flush=True)
    """
)


@pytest.fixture
def daemon_script(tmp_path: Path) -> Path:
    script = tmp_path / "daemon.py"
    script.write_text(DAEMON.format(root=str(ROOT)))
    return script


class Daemons:
    """Starts the script in the background; kills whatever is left in `cleanup`."""

    def __init__(self, script: Path, tmp_path: Path) -> None:
        self.script = script
        self.pidfile = tmp_path / "run" / "controller.pid"
        self.logfile = tmp_path / "controller.log"
        self.pidfile.parent.mkdir(exist_ok=True)
        self.started: list[int] = []

    def start(self, ignore_term: bool = False, logfile: Path | None = None):
        result = subprocess.run(
            [
                sys.executable,
                str(self.script),
                str(self.pidfile),
                str(logfile or self.logfile),
                "ignore" if ignore_term else "handle",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        pid = read_pid(self.pidfile)
        if result.returncode == 0 and pid:
            self.started.append(pid)
        return result

    def cleanup(self) -> None:
        if self.logfile.exists():  # also any daemon the test did not expect to start
            for word in self.logfile.read_text().split():
                if word.startswith("pid="):
                    self.started.append(int(word[4:]))
        for pid in self.started:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.fixture
def daemons(daemon_script: Path, tmp_path: Path):
    d = Daemons(daemon_script, tmp_path)
    try:
        yield d
    finally:
        d.cleanup()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by whoever adopted it) counts as gone.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (OSError, IndexError):
        return False


def dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def wait_for(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def test_background_detaches_and_kill_waits_for_the_teardown(daemons: Daemons, capsys):
    result = daemons.start()
    assert result.returncode == 0, result.stderr
    assert result.stdout == "" and result.stderr == ""
    pid = read_pid(daemons.pidfile)
    assert pid is not None and alive(pid)
    assert wait_for(lambda: "started" in daemons.logfile.read_text())
    log = daemons.logfile.read_text()
    assert f"pid={pid} " in log and "cwd=/" in log
    assert os.getsid(pid) != pid  # the double fork: not a session leader, no terminal ever
    assert os.getsid(pid) != os.getsid(0)

    assert kill_daemon(str(daemons.pidfile), timeout=30) == 0
    assert not alive(pid) or "stopped" in daemons.logfile.read_text()
    assert daemons.logfile.read_text().endswith("teardown\nstopped\n")
    assert not daemons.pidfile.exists()
    out = capsys.readouterr().out
    assert f"sent SIGTERM to PID {pid}" in out and f"PID {pid} stopped" in out


def test_second_start_is_refused_with_the_running_pid(daemons: Daemons):
    assert daemons.start().returncode == 0
    pid = read_pid(daemons.pidfile)
    second = daemons.start()
    assert second.returncode != 0
    assert f"already running as PID {pid}" in second.stderr
    assert read_pid(daemons.pidfile) == pid and alive(pid)


def test_refusal_from_inside_the_daemon_reaches_the_terminal(daemons: Daemons):
    """A live holder whose PID is not in the file: only the daemon's own lock attempt sees it,
    after the fork; the starting process still exits non-zero with the reason."""
    with PidFile(daemons.pidfile):
        # Hide our PID from the pre-fork check. By path: closing a second descriptor of the file
        # would drop our own lock.
        os.truncate(daemons.pidfile, 0)
        result = daemons.start()
    assert result.returncode == 2
    assert "controller run --background: already running as another process" in result.stderr


def test_stale_pidfile_of_a_dead_process_is_taken_over(daemons: Daemons):
    stale = dead_pid()
    daemons.pidfile.write_text(f"{stale}\n")
    assert daemons.start().returncode == 0
    pid = read_pid(daemons.pidfile)
    assert pid != stale and alive(pid)
    assert kill_daemon(str(daemons.pidfile), timeout=30) == 0


def test_unlocked_pidfile_naming_a_live_process_is_stale_too(tmp_path: Path):
    """The lock is the truth: a recycled PID in a file nobody locks does not block a start."""
    path = tmp_path / "c.pid"
    path.write_text("1\n")
    lock = PidFile(path)
    lock.acquire()
    try:
        assert read_pid(path) == os.getpid() and lock.took_over == 1
    finally:
        lock.release()
    assert not path.exists()


def test_pidfile_held_by_this_process_refuses_a_child(tmp_path: Path):
    path = tmp_path / "c.pid"
    code = f"import sys; sys.path.insert(0, {str(ROOT)!r})\n" + textwrap.dedent(
        f"""
        from controller.runtime.daemon import DaemonError, PidFile
        try:
            PidFile({str(path)!r}).acquire()
        except DaemonError as exc:
            print(exc)
        """
    )
    with PidFile(path):
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=30
        ).stdout
    assert out.startswith(f"already running as PID {os.getpid()} (pidfile {path})")


def test_kill_without_a_daemon_says_why(tmp_path: Path, capsys):
    missing = tmp_path / "none.pid"
    assert kill_daemon(str(missing), timeout=1) == 1
    assert f"pidfile {missing}: no such file; is the daemon running?" in capsys.readouterr().err
    stale = tmp_path / "stale.pid"
    pid = dead_pid()
    stale.write_text(f"{pid}\n")
    assert kill_daemon(str(stale), timeout=1) == 1
    assert f"is stale: PID {pid} is not running" in capsys.readouterr().err
    live_unlocked = tmp_path / "unlocked.pid"
    live_unlocked.write_text(f"{os.getpid()}\n")  # alive, but nobody holds the lock
    assert kill_daemon(str(live_unlocked), timeout=1) == 1  # and we were not signalled
    assert "is stale" in capsys.readouterr().err


def test_kill_gives_up_without_sigkill(daemons: Daemons, capsys):
    assert daemons.start(ignore_term=True).returncode == 0
    pid = read_pid(daemons.pidfile)
    assert wait_for(lambda: "started" in daemons.logfile.read_text())
    assert kill_daemon(str(daemons.pidfile), timeout=0.5) == 1
    assert f"PID {pid} still runs after 0.5s" in capsys.readouterr().err
    assert alive(pid)  # left alone: SIGKILL would skip the teardown


def test_unwritable_logfile_fails_the_start_with_the_reason(daemons: Daemons, tmp_path: Path):
    bad = tmp_path / "no" / "such" / "dir" / "controller.log"
    result = daemons.start(logfile=bad)
    assert result.returncode == 2
    assert f"logfile {bad}: No such file or directory" in result.stderr
    assert wait_for(lambda: not daemons.pidfile.exists() or read_pid(daemons.pidfile) is None)


def run_python(code: str) -> subprocess.CompletedProcess:
    prelude = f"import os, sys; sys.path.insert(0, {str(ROOT)!r})\n"
    prelude += "from controller.runtime.daemon import DaemonError, drop_privileges\n"
    return subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=30,
        cwd="/",
    )


def test_drop_privileges_to_a_user():
    nobody = pwd.getpwnam("nobody")
    result = run_python(
        """
        try:
            drop_privileges("nobody")
        except DaemonError as exc:
            print("error:", exc)
        else:
            ids = os.getuid(), os.geteuid(), os.getgid(), sorted(os.getgroups())
            print(*ids, os.environ["USER"])
            try:
                drop_privileges("root")
            except DaemonError as exc:
                print("again:", exc)
        """
    )
    assert result.returncode == 0, result.stderr
    if os.geteuid() == 0:
        groups = sorted(os.getgrouplist("nobody", nobody.pw_gid))
        assert result.stdout.splitlines() == [
            f"{nobody.pw_uid} {nobody.pw_uid} {nobody.pw_gid} {groups} nobody",
            "again: only root can switch users; start as root or leave out --user",
        ]
    else:
        assert result.stdout.startswith("error: only root can switch users")


def test_drop_privileges_unknown_user():
    with pytest.raises(DaemonError, match="no such user 'no-such-user-x'"):
        from controller.runtime.daemon import drop_privileges

        drop_privileges("no-such-user-x")
