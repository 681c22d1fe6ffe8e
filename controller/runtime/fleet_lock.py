"""One controller per fleet: a per-fleet lock file that `controller run` holds while it lives.

Two controllers of one fleet fight (each adopts the other's launches and scales them in), and a
`controller teardown` racing a live controller terminates what it relaunches. So `run` holds an
exclusive flock on `controller-<fleet>.lock` for its lifetime and writes its PID in it; teardown
holds a shared one while it works: it fails while a controller runs, and keeps a new `run` from
starting mid-teardown. flock works on a read-only descriptor, so a teardown run by another user
can take the shared lock on a file it may not write.

flock, not lockf: the lock belongs to the open file description, so it survives --background's
forks (a lockf lock stays with the parent, which exits) and dies with the last descriptor, so a
`kill -9` frees it. The descriptor is close-on-exec, so no child (an apache2ctl that daemonizes)
keeps it; it is never unlocked explicitly, since a forked copy doing so would free the daemon's
lock too. The file is never removed: removing races a second opener, and an unlocked file is only
a name.

Where: $CONTROLLER_LOCK_DIR when set; else /run/lock when writable, else the temp directory.
Both of the latter are checked, since a controller run as root and a teardown run as a user may
disagree on which is writable.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from dataclasses import dataclass

LOCK_DIR_ENV = "CONTROLLER_LOCK_DIR"
SYSTEM_LOCK_DIR = "/run/lock"


@dataclass(frozen=True, slots=True)
class Holder:
    """Who holds a fleet's lock against us: the lock file, and the PID when it is known."""

    path: str
    pid: int | None  # None: a teardown (it writes no PID) or a file we cannot read

    def __str__(self) -> str:
        who = f"PID {self.pid}" if self.pid else "another process"
        return f"{who}, lock {self.path}"


class FleetBusy(Exception):
    """The fleet's lock is held by another process."""

    def __init__(self, holder: Holder) -> None:
        super().__init__(str(holder))
        self.holder = holder


def lock_dirs() -> list[str]:
    """The directories a fleet's lock may be in, the one new locks go to first."""
    override = os.environ.get(LOCK_DIR_ENV)
    if override:
        return [override]
    system_ok = os.path.isdir(SYSTEM_LOCK_DIR) and os.access(SYSTEM_LOCK_DIR, os.W_OK)
    dirs = [SYSTEM_LOCK_DIR, tempfile.gettempdir()]
    return dirs if system_ok else dirs[::-1]


def lock_path(fleet: str, directory: str) -> str:
    return os.path.join(directory, f"controller-{fleet}.lock")


class FleetLock:
    """The lock of `fleet`: exclusive for `controller run`, `shared` for teardown.

    acquire() raises FleetBusy when another process holds it against us, OSError when the lock
    file cannot be opened. release() (or exiting the process) frees it.
    """

    def __init__(self, fleet: str, *, shared: bool = False) -> None:
        self.fleet = fleet
        self.shared = shared
        self.path = ""  # the lock file in the first of lock_dirs()
        self._fds: list[int] = []

    def acquire(self) -> None:
        if self._fds:
            return
        mode = (fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX) | fcntl.LOCK_NB
        first, *others = lock_dirs()
        self.path = lock_path(self.fleet, first)
        paths = [self.path] + [p for d in others if os.path.exists(p := lock_path(self.fleet, d))]
        try:
            for path in paths:
                fd = _open(path, create=path == self.path)
                self._fds.append(fd)
                try:
                    fcntl.flock(fd, mode)
                except BlockingIOError:
                    raise FleetBusy(Holder(path, _live_pid(fd))) from None
        except BaseException:
            self._close()
            raise
        if not self.shared:
            self.note_pid()

    def note_pid(self) -> None:
        """Write our PID in the file (again after --background's forks); skipped when the file
        is another user's: the lock still holds, only the PID in messages is unknown."""
        if self._fds and not self.shared:
            _write(self._fds[0], f"{os.getpid()}\n")

    def release(self) -> None:
        if self._fds and not self.shared:
            _write(self._fds[0], "")  # a PID left behind would be named for the next holder
        self._close()

    def _close(self) -> None:
        fds, self._fds = self._fds, []
        for fd in fds:
            os.close(fd)

    def __enter__(self) -> FleetLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _open(path: str, *, create: bool) -> int:
    """A descriptor of the lock file: read-write when allowed, else read-only (flock does not
    care); created world-readable when missing, whatever the umask, so any user can test it."""
    for flags in (os.O_RDWR, os.O_RDONLY):
        try:
            return os.open(path, flags | os.O_CLOEXEC)
        except FileNotFoundError:
            break
        except PermissionError:
            if flags == os.O_RDONLY:
                raise
    if not create:
        raise FileNotFoundError(2, "No such file or directory", path)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    except FileExistsError:
        return _open(path, create=False)  # another process created it just now
    os.fchmod(fd, 0o644)
    return fd


def _write(fd: int, text: str) -> None:
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, text.encode(), 0)
    except OSError:
        pass  # opened read-only: another user's file


def _live_pid(fd: int) -> int | None:
    """The PID written in the file, if that process exists (a teardown writes none, and a PID
    left by a `kill -9` names a dead process or a stranger)."""
    text = os.pread(fd, 32, 0).decode(errors="replace").strip()
    if not text.isdigit() or int(text) <= 0:
        return None
    pid = int(text)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # alive, another user's
    return pid
