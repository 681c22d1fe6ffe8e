"""Slurm's side of ClusterNodeSetup: what the head does for a node, in the shape the actor drives
for any scheduler (the Grid Engine one is controller.gridengine.sge_side).

Nothing is registered on the head: the node's own slurmd joins as a dynamic node under the
node's EC2 name (the slurm plugin's command, controller.gridengine.node_plugins), so after the
node's commands the node is ready once sinfo lists it (slurmd goes to the background before it
has registered). At start the head's clients are tried once (sinfo), so a wrong slurm_conf or a
slurmctld that does not answer is said at once. A scale-in releases the node only if it is empty
(slurm_release); a lost or torn-down node goes whatever runs there: set DOWN (Slurm requeues or
ends its jobs), then deleted, a few times while its jobs are still completing.
"""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable

from controller.config.plugins import SlurmPlugin
from controller.slurm.slurm_client import NODE_BUSY, NODE_GONE, SlurmClient, SlurmError
from controller.slurm.slurm_queue import SlurmParseError, find_node, parse_sinfo
from controller.slurm.slurm_release import Release, release_node

Sleep = Callable[[float], Awaitable[None]]
JOIN_TIMEOUT = 120.0  # seconds from slurmd's start until sinfo lists the node
JOIN_POLL = 1.0
DELETE_TRIES = 5  # a node set DOWN is busy until its jobs finished completing
DOWN_REASON = "controller: instance removed"


class SlurmJoinTimeout(Exception):
    """A node's slurmd started but Slurm does not list the node."""


class SlurmSide:
    name = "slurm"
    scheduler = "Slurm"
    errors: tuple[type[Exception], ...] = (SlurmError, SlurmParseError, SlurmJoinTimeout)
    head_hint = "squeue and sinfo must answer on the head; check the slurm plugin's slurm_conf"

    def __init__(
        self, client: SlurmClient, plugin: SlurmPlugin, *, join_timeout: float = JOIN_TIMEOUT
    ) -> None:
        self.client = client
        self.plugin = plugin
        self.join_timeout = join_timeout

    def head_host(self) -> str:
        """slurmctld's host: conf_server's, else this machine (the controller runs on the head)."""
        server = self.plugin.conf_server
        if server:
            return server.rpartition(":")[0] if ":" in server else server
        return socket.gethostname()

    async def answers(self) -> None:
        """SlurmError unless slurmctld answers."""
        await self.client.sinfo()

    async def prepare_head(self, head: str) -> dict[str, object]:
        """Nothing to change on the head; sinfo must answer. What to log."""
        nodes = parse_sinfo(await self.client.sinfo())
        return {"nodes": len(nodes)}

    async def register(
        self, hostname: str, read_meminfo: Callable[[], Awaitable[str]]
    ) -> dict[str, object]:
        """Before the node's commands: nothing (its slurmd registers itself)."""
        return {}

    async def joined(self, hostname: str, sleep: Sleep) -> None:
        """After the node's commands: wait until sinfo lists `hostname`."""
        waited = 0.0
        while find_node(parse_sinfo(await self.client.sinfo()), hostname) is None:
            if waited >= self.join_timeout:
                raise SlurmJoinTimeout(
                    f"slurmd started on {hostname}, but Slurm does not list the node after"
                    f" {self.join_timeout:g}s: see the node's slurmd log, and check that"
                    " slurmctld has room for it (MaxNodeCount) and reaches it on SlurmdPort"
                )
            await sleep(JOIN_POLL)
            waited += JOIN_POLL

    async def release(self, hostname: str, sleep: Sleep) -> Release:
        """A scale-in: drained, looked at again, deleted only if empty."""
        return await release_node(self.client, hostname)

    async def deregister(self, hostname: str, sleep: Sleep) -> list[str]:
        """A lost or torn-down node: DOWN, then deleted; the steps that failed."""
        try:
            said = await self.client.down(hostname, DOWN_REASON)
        except SlurmError as exc:
            return [f"set {hostname} DOWN in Slurm: {exc}"]
        if NODE_GONE in said:
            return []
        failure = ""
        for attempt in range(DELETE_TRIES):
            if attempt:
                await sleep(float(attempt))
            try:
                await self.client.delete(hostname)
                return []
            except SlurmError as exc:
                failure = (
                    f"delete {hostname} from Slurm: {exc}; delete it later with"
                    f" `scontrol delete nodename={hostname}`"
                )
                if NODE_BUSY not in exc.output:
                    break
        return [failure]
