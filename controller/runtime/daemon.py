"""The seed's daemon options, for hosts without systemd: --background, --pidfile, --user, --kill.

The pidfile is a lock, not a note: the running daemon holds an exclusive fcntl lock on it until
it exits, so a file left by a crash or `kill -9` (the lock dies with its process) is recognised
as stale and taken over, while a live daemon is refused with its PID. `--background` detaches
with the classic double fork, but the terminal still learns whether the start worked: the
original process waits on a pipe until the daemon holds its pidfile and has its log open, and
exits with the daemon's verdict.
"""

from __future__ import annotations

import errno
import fcntl
import os
import pwd
import signal
import sys
import time
from pathlib import Path

KILL_TIMEOUT_SECONDS = 1500.0  # TimeoutStopSec of systemd/controller.service: the worst teardown


class DaemonError(Exception):
    """A user-fixable daemon problem; the message is one line saying what to do."""


class PidFile:
    """An exclusively locked file holding this process's PID while it runs."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path).absolute()
        self._fd: int | None = None
        self.took_over: int | None = None  # the stale PID replaced, if any

    def acquire(self) -> None:
        """Lock and write our PID; DaemonError if another live process holds it."""
        if self._fd is not None:
            return
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except OSError as exc:
                raise DaemonError(f"pidfile {self.path}: cannot open it ({exc.strerror})") from None
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno not in (errno.EACCES, errno.EAGAIN):
                    raise DaemonError(
                        f"pidfile {self.path}: cannot lock it ({exc.strerror})"
                    ) from None
                pid = read_pid(self.path)
                running = f"PID {pid}" if pid else "another process"
                raise DaemonError(
                    f"already running as {running} (pidfile {self.path}); "
                    "stop it first with --kill or use another --pidfile"
                ) from None
            # The previous holder may have unlinked the file between our open and our lock:
            # then we hold a lock on a file nobody else can see. Start again on the new one.
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        # Read through our own descriptor: closing any other descriptor of this file would drop
        # the lock (POSIX record locks belong to the process, not to the descriptor).
        old = os.pread(fd, 32, 0).decode(errors="replace").strip()
        self.took_over = int(old) if old.isdigit() and int(old) != os.getpid() else None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        os.fsync(fd)
        self._fd = fd

    def release(self) -> None:
        """Empty and remove the file, then drop the lock (in that order: see acquire)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.ftruncate(fd, 0)
            self.path.unlink(missing_ok=True)
        except OSError:
            pass  # after --user the directory may not be ours; an empty, unlocked file is stale
        finally:
            os.close(fd)

    def __enter__(self) -> PidFile:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def read_pid(path: str | os.PathLike[str]) -> int | None:
    try:
        text = Path(path).read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() and int(text) > 0 else None


def daemonize(*, logfile: str | None = None, pidfile: str | None = None) -> PidFile | None:
    """Detach from the terminal (double fork, new session, cwd /, stdio to `logfile` or
    /dev/null). Returns in the daemon only, holding `pidfile` if given; the original process
    exits 0 once the daemon is set up, or prints the daemon's error and exits 2."""
    log_path = str(Path(logfile).absolute()) if logfile else os.devnull
    pid_path = str(Path(pidfile).absolute()) if pidfile else None
    if pid_path is not None:
        _refuse_if_running(pid_path)  # the common mistake, reported before detaching
    sys.stdout.flush()
    sys.stderr.flush()
    read_end, write_end = os.pipe()
    if os.fork() > 0:
        os.close(write_end)
        _wait_for_daemon(read_end)  # never returns
    os.close(read_end)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)  # the session leader leaves, so the daemon can never regain a terminal
    os.chdir("/")
    try:
        out = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)
    except OSError as exc:
        _tell_parent(write_end, f"error: logfile {log_path}: {exc.strerror}")
        os._exit(2)
    lock = PidFile(pid_path) if pid_path else None
    try:
        if lock is not None:
            lock.acquire()
    except DaemonError as exc:
        _tell_parent(write_end, f"error: {exc}")
        os._exit(2)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(out, 1)
    os.dup2(out, 2)
    os.close(null)
    os.close(out)
    _tell_parent(write_end, "ok")
    return lock


def _tell_parent(write_end: int, answer: str) -> None:
    os.write(write_end, f"{answer}\n".encode())
    os.close(write_end)


def _refuse_if_running(pid_path: str) -> None:
    pid = read_pid(pid_path)
    if pid is not None and _holds_lock(pid_path) and _alive(pid):
        raise DaemonError(
            f"already running as PID {pid} (pidfile {pid_path}); "
            "stop it first with --kill or use another --pidfile"
        )


def _wait_for_daemon(read_end: int) -> None:
    chunks = []
    while chunk := os.read(read_end, 4096):
        chunks.append(chunk)
    answer = b"".join(chunks).decode(errors="replace").strip()
    if answer == "ok":
        os._exit(0)
    message = answer.removeprefix("error: ") or "the daemon exited before it was set up"
    print(f"controller run --background: {message}", file=sys.stderr, flush=True)
    os._exit(2)


def kill_daemon(pidfile: str, timeout: float = KILL_TIMEOUT_SECONDS) -> int:
    """SIGTERM the daemon named by `pidfile` and wait for it to finish its teardown.

    0 once it is gone; 1 (with one line on stderr) if there is no such daemon or it outlives
    `timeout`. It never escalates to SIGKILL: that would skip the teardown and leave instances.
    """
    pid = read_pid(pidfile)
    if pid is None:
        reason = "no such file" if not Path(pidfile).exists() else "it holds no PID"
        print(
            f"controller run --kill: pidfile {pidfile}: {reason}; is the daemon running?",
            file=sys.stderr,
        )
        return 1
    if not _alive(pid) or not _holds_lock(pidfile):
        print(
            f"controller run --kill: pidfile {pidfile} is stale: PID {pid} is not running",
            file=sys.stderr,
        )
        return 1
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        print(f"controller run --kill: PID {pid} exited already", file=sys.stderr)
        return 0
    except PermissionError:
        print(
            f"controller run --kill: not allowed to signal PID {pid}; run as its user or root",
            file=sys.stderr,
        )
        return 1
    print(f"sent SIGTERM to PID {pid}; waiting up to {timeout:g}s for its teardown", flush=True)
    deadline = time.monotonic() + timeout
    next_note = time.monotonic() + 30
    while _alive(pid) and _holds_lock(pidfile):
        if time.monotonic() >= deadline:
            print(
                f"controller run --kill: PID {pid} still runs after {timeout:g}s (its teardown "
                "may still be terminating instances); not sending SIGKILL",
                file=sys.stderr,
            )
            return 1
        if time.monotonic() >= next_note:
            print(f"PID {pid} is still tearing down...", flush=True)
            next_note += 30
        time.sleep(0.1)
    print(f"PID {pid} stopped")
    return 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, belongs to someone else
    return True


def _holds_lock(pidfile: str) -> bool:
    """True when some process holds the pidfile's lock (or we cannot tell: no write access)."""
    try:
        fd = os.open(pidfile, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    except OSError:
        return True
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    else:
        fcntl.lockf(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def drop_privileges(user: str) -> None:
    """Become `user` (its uid, primary group and supplementary groups) for good.

    Call it after everything that needs root is open (pidfile, logfile, listening sockets).
    """
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise DaemonError(f"no such user {user!r}; create it or pick another --user") from None
    if os.geteuid() != 0:
        if os.geteuid() == entry.pw_uid:
            return  # already that user: nothing to drop
        raise DaemonError("only root can switch users; start as root or leave out --user")
    groups = os.getgrouplist(entry.pw_name, entry.pw_gid)
    os.setgroups(groups)
    os.setgid(entry.pw_gid)
    os.setuid(entry.pw_uid)
    try:
        os.setuid(0)
    except PermissionError:
        pass
    else:  # pragma: no cover - a kernel that lets us back is a security bug, not a user error
        raise DaemonError(f"could not drop root for good while switching to {user!r}")
    os.environ.update(HOME=entry.pw_dir, USER=entry.pw_name, LOGNAME=entry.pw_name)
