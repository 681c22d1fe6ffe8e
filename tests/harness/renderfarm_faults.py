"""Fault scenarios about renderfarm.conf's directory, beside tests/harness/fault_scenarios.py's
read-only ones (same Rig, Run and Figures):

- `renderfarm_full`: the directory's file system full (a real one: a tmpfs of a few pages,
  filled) during a scale-out: the old file intact, the error reported, the fleet held;
- `teardown_read_only`: SIGTERM while the directory is read-only: the money rule wins, every
  instance is terminated although the file still lists them, and the controller says so once
  and exits 1.

`TinyFilesystem` makes the full one without touching the machine's mounts: a tmpfs mounted in
a private mount namespace that a sleeping process holds; the controller runs inside it (nsenter)
and the test reads it through /proc/PID/root.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from tests.harness.fault_scenarios import read_only, scale_out_blocked
from tests.harness.scenario_run import LOW_RPS, TWO_BANDS, Figures, Rig, Run, ScenarioError

PAGE = 4096


def renderfarm_full(rig: Rig, seconds: float) -> Figures:
    """renderfarm.conf's file system full during a scale-out from one slave to three: the old
    file stays whole, the error says the disk is full, nothing is terminated; once there is room
    again the three are listed."""
    run = Run(rig, "full", TWO_BANDS, rps=LOW_RPS, renderfarm_dir="www")
    try:
        with TinyFilesystem(run.farm.renderfarm.parent, pages=16) as fs:
            fs.attach(run)
            run.start()
            run.wait_converged(1)
            scale_out_blocked(run, fs.full(), seconds, hint="its file system is full")
            run.figures.notes["filled bytes"] = fs.filled
            return run.finish()
    finally:
        run.close()


def teardown_read_only(rig: Rig) -> Figures:
    """SIGTERM with two slaves listed and renderfarm.conf's directory read-only: the instances
    would bill on, so they are terminated anyway (the watcher sees them terminated while listed:
    the expected violations); the old file stays; one error, exit 1."""
    run = Run(rig, "teardown_read_only", "[[2.0, 2, 2]]", renderfarm_dir="www")
    try:
        run.start()
        run.wait_converged(2)
        before = run.farm.renderfarm.read_bytes()
        run.figures.notes["listed"] = sorted(_listed(before.decode()))
        with read_only(run.farm.renderfarm.parent):
            figures = run.finish()
        figures.notes["file intact"] = run.farm.renderfarm.read_bytes() == before
        figures.notes["not_cleared errors"] = run.log_text().count("renderfarm.not_cleared")
        return figures
    finally:
        run.close()


def _listed(text: str) -> set[str]:
    return {line.strip() for line in text.splitlines() if line.startswith("\t")}


class TinyFilesystem:
    """A tmpfs of `pages` pages on `directory`, seen only by the processes inside its mount
    namespace (the controller, through `prefix`) and, from outside, through `view`: no mount is
    left on the machine whatever happens to the test. Root is not needed where unprivileged user
    namespaces are allowed."""

    def __init__(self, directory: Path, pages: int = 16) -> None:
        self.directory = directory.resolve()
        self.pages = pages
        self.filled = 0
        self._holder: subprocess.Popen[bytes] | None = None
        self._user = [] if os.geteuid() == 0 else ["--user", "--map-root-user"]

    def __enter__(self) -> TinyFilesystem:
        size = self.pages * PAGE
        script = f'mount -t tmpfs -o size={size},mode=0755 tmpfs "$1" && exec sleep 1d'
        errors = self.directory.parent / "tiny-filesystem.err"
        with open(errors, "wb") as err:
            self._holder = subprocess.Popen(
                [
                    *("unshare", *self._user, "--mount", "--propagation", "private", "--"),
                    *("sh", "-c", script, "sh", str(self.directory)),
                ],
                stdin=subprocess.DEVNULL,
                stdout=err,
                stderr=err,
            )
        deadline = time.monotonic() + 10
        while not self._mounted():
            if self._holder.poll() is not None or time.monotonic() > deadline:
                self.__exit__()
                raise ScenarioError(
                    f"cannot mount a tmpfs on {self.directory} in a private mount namespace "
                    f"(unshare {' '.join(self._user)} --mount): {errors.read_text().strip()}; run "
                    "the tests as root or where unprivileged user namespaces are allowed"
                )
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._holder is not None and self._holder.poll() is None:
            self._holder.kill()
            self._holder.wait(timeout=10)

    def _mounted(self) -> bool:
        try:
            return os.stat(self.view).st_dev != os.stat(self.directory).st_dev
        except OSError:
            return False

    @property
    def view(self) -> Path:
        """The directory as the processes inside the namespace see it."""
        assert self._holder is not None
        return Path(f"/proc/{self._holder.pid}/root") / self.directory.relative_to("/")

    @property
    def prefix(self) -> list[str]:
        """Run a command inside the namespace (nsenter execs it: same PID, same argv)."""
        assert self._holder is not None
        join_user = ["--user", "--preserve-credentials"] if self._user else []
        return ["nsenter", f"--target={self._holder.pid}", *join_user, "--mount", "--"]

    def attach(self, run: Run) -> None:
        """Start `run`'s controller inside, and read its renderfarm.conf from outside."""
        run.prefix = self.prefix
        seen = self.view / run.farm.renderfarm.name
        run.farm = dataclasses.replace(run.farm, renderfarm=seen)
        run.watch.renderfarm = seen

    @contextlib.contextmanager
    def full(self) -> Iterator[None]:
        """Not one free page meanwhile: a file fills what renderfarm.conf leaves."""
        filler = self.view / ".filler"
        with open(filler, "wb", buffering=0) as f:
            try:
                while True:
                    self.filled += f.write(b"\0" * PAGE) or 0
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
        try:
            yield
        finally:
            filler.unlink()
