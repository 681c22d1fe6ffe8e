"""Runs Grid Engine's command-line clients (qstat, qconf, qmod) on the head, without blocking.

Every call gets SGE_ROOT and SGE_CELL, a timeout after which the client is killed, and an error
that names the command and quotes Grid Engine's own words. `prefix` runs the clients through
another command, e.g. `("ip", "netns", "exec", "sge")` where Grid Engine lives in a network
namespace (the tests), or `("sudo", "-u", "sgeadmin")`. EDITOR is set to `false` so that a call
which would open an editor fails instead of hanging. Grid Engine writes its messages to stdout or
stderr as it pleases, so both are read together.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from controller.runtime.client_command import ClientError, run_client

DEFAULT_SGE_ROOT = "/var/lib/gridengine"
DEFAULT_CELL = "default"


class SgeError(ClientError):
    """A Grid Engine client failed, timed out or could not be run."""


class SgeClient:
    """The head's Grid Engine, reached through its command-line clients."""

    def __init__(
        self,
        *,
        sge_root: str = DEFAULT_SGE_ROOT,
        cell: str = DEFAULT_CELL,
        prefix: Sequence[str] = (),
        bin_dir: str = "",
        timeout: float = 30.0,
        tmp_dir: str | None = None,
    ) -> None:
        self.sge_root = sge_root
        self.cell = cell
        self.prefix = tuple(prefix)
        self.bin_dir = bin_dir  # "" = find the clients on PATH
        self.timeout = timeout
        self.tmp_dir = tmp_dir  # where files for `qconf -A*/-M*` are written

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "SGE_ROOT": self.sge_root, "SGE_CELL": self.cell, "EDITOR": "false"}

    def master_host(self) -> str:
        """The qmaster's host name as Grid Engine spells it (the cell's act_qmaster file)."""
        path = Path(self.sge_root, self.cell, "common", "act_qmaster")
        try:
            return path.read_text().strip()
        except OSError as exc:
            raise SgeError(
                ("cat", str(path)),
                f"failed: {exc.strerror or exc}; check sge_root and cell of the sge plugin",
            ) from None

    async def run(self, program: str, *args: str, ok_if: Sequence[str] = ()) -> str:
        """Run one client; its output. A non-zero exit whose output contains one of `ok_if`
        (e.g. "already exists") counts as success."""
        exe = os.path.join(self.bin_dir, program) if self.bin_dir else program
        return await run_client(
            (*self.prefix, exe, *args),
            shown=(program, *args),
            env=self.env,
            timeout=self.timeout,
            error=SgeError,
            missing_hint="install the Grid Engine clients (gridengine-client) or set bin_dir of"
            " the sge plugin",
            silent_hint="is sge_qmaster running?",
            ok_if=ok_if,
            merge_stderr=True,
        )

    async def run_with_file(
        self, program: str, *args: str, text: str, ok_if: Sequence[str] = ()
    ) -> str:
        """Run `program *args FILE` where FILE holds `text` (qconf -Ae, -Mc, ...)."""
        fd, path = tempfile.mkstemp(prefix="controller-sge-", suffix=".txt", dir=self.tmp_dir)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(text)
            return await self.run(program, *args, path, ok_if=ok_if)
        finally:
            with contextlib.suppress(OSError):
                os.unlink(path)

    async def qstat_jobs(self) -> str:
        """Queue instances, running and pending jobs with their requests, of every user."""
        return await self.run("qstat", "-f", "-xml", "-r", "-u", "*")
