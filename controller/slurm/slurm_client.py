"""Runs Slurm's command-line clients (squeue, sinfo, scontrol) on the head, without blocking.

Every call gets a timeout after which the client is killed, and an error that names the command
and quotes Slurm's own words. `slurm_conf` sets SLURM_CONF for clients whose slurm.conf is not
where they look by default; `prefix` runs them through another command (e.g. `("sudo", "-u",
"slurm")`, or nsenter in the tests). Slurm writes errors to stderr and results to stdout; both
are read together for the error, only stdout is parsed.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from controller.runtime.client_command import ClientError, run_client

# What scontrol says about a node slurmctld does not have (never joined, or deleted already).
NODE_GONE = "Invalid node name specified"
NODE_BUSY = "Requested nodes are busy"


class SlurmError(ClientError):
    """A Slurm client failed, timed out or could not be run."""


class SlurmClient:
    """The head's Slurm, reached through its command-line clients."""

    def __init__(
        self,
        *,
        slurm_conf: str = "",
        prefix: Sequence[str] = (),
        bin_dir: str = "",
        timeout: float = 30.0,
    ) -> None:
        self.slurm_conf = slurm_conf  # "" = the clients' own default
        self.prefix = tuple(prefix)
        self.bin_dir = bin_dir  # "" = find the clients on PATH
        self.timeout = timeout

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.slurm_conf:
            env["SLURM_CONF"] = self.slurm_conf
        return env

    async def run(self, program: str, *args: str, ok_if: Sequence[str] = ()) -> str:
        """Run one client; its stdout. A non-zero exit whose output contains one of `ok_if`
        counts as success."""
        exe = os.path.join(self.bin_dir, program) if self.bin_dir else program
        return await run_client(
            (*self.prefix, exe, *args),
            shown=(program, *args),
            env=self.env,
            timeout=self.timeout,
            error=SlurmError,
            missing_hint="install the Slurm clients (slurm-client) or set bin_dir of the slurm"
            " plugin",
            silent_hint="is slurmctld running?",
            ok_if=ok_if,
        )

    async def squeue(self) -> str:
        """Every job slurmctld knows, as JSON."""
        return await self.run("squeue", "--json")

    async def sinfo(self) -> str:
        """Every node, as JSON."""
        return await self.run("sinfo", "--json")

    async def drain(self, node: str, reason: str) -> str:
        """No new job starts on `node`; what scontrol said (NODE_GONE when it has no such node)."""
        return await self.run(
            "scontrol", "update", f"nodename={node}", "state=drain", f"reason={reason}",
            ok_if=(NODE_GONE,),
        )  # fmt: skip

    async def down(self, node: str, reason: str) -> str:
        """`node` is out of service at once: Slurm requeues or ends the jobs running there."""
        return await self.run(
            "scontrol", "update", f"nodename={node}", "state=down", f"reason={reason}",
            ok_if=(NODE_GONE,),
        )  # fmt: skip

    async def resume(self, node: str) -> None:
        """`node` takes jobs again."""
        await self.run("scontrol", "update", f"nodename={node}", "state=resume")

    async def delete(self, node: str) -> str:
        """Take the dynamic node `node` out of Slurm; SlurmError (NODE_BUSY in its output) while
        a job holds it. A node Slurm does not have passes."""
        return await self.run("scontrol", "delete", f"nodename={node}", ok_if=(NODE_GONE,))
