"""Grid Engine's side of ClusterNodeSetup: what the head does for a node, in the shape the actor
drives for any scheduler (the Slurm one is controller.slurm.slurm_side).

At start the head is made ready (the consumable; the head's capacity or its 0 slots: sge_head).
A node is registered on the head (exec host with its memory, in the queue's hostlist) before
its own commands start its execd; nothing is awaited after them. A scale-in releases the node
only if it is empty, a lost or torn-down node is deregistered whatever runs there
(sge_deregister).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from controller.config.plugins import SgePlugin
from controller.gridengine.node_plugins import node_memory
from controller.gridengine.sge_client import SgeClient, SgeError
from controller.gridengine.sge_deregister import Release, deregister_node, release_node
from controller.gridengine.sge_head import HeadStepFailed, head_memory, prepare_head, register_node


class SgeSide:
    name = "sge"
    scheduler = "Grid Engine"
    errors: tuple[type[Exception], ...] = (HeadStepFailed, SgeError, OSError)

    def __init__(self, client: SgeClient, plugin: SgePlugin) -> None:
        self.client = client
        self.plugin = plugin
        self.head_hint = f"jobs asking for {plugin.consumable} are refused until this works"

    def head_host(self) -> str:
        """The qmaster's name, as Grid Engine spells it."""
        return self.client.master_host()

    async def answers(self) -> None:
        """SgeError unless the qmaster answers (the admin host list is never empty)."""
        await self.client.run("qconf", "-sh")

    async def prepare_head(self, head: str) -> dict[str, object]:
        """The head made ready; what to log about it."""
        ready = await prepare_head(self.client, self.plugin, head, head_memory())
        return {
            "consumable": self.plugin.consumable,
            "consumable_added": ready.consumable_added,
            "head_memory": ready.head_memory or None,
            "note": ready.note or None,
        }

    async def register(
        self, hostname: str, read_meminfo: Callable[[], Awaitable[str]]
    ) -> dict[str, object]:
        """Before the node's commands: `hostname` an exec host with its memory; what to log."""
        memory = self.plugin.node_memory or node_memory(self.plugin, await read_meminfo())
        await register_node(self.client, self.plugin, hostname, memory)
        return {"memory": memory}

    async def joined(self, hostname: str, sleep: Callable[[float], Awaitable[None]]) -> None:
        """After the node's commands: its execd needs no wait (the qmaster knows the host)."""

    async def release(self, hostname: str, sleep: Callable[[float], Awaitable[None]]) -> Release:
        """A scale-in: out of Grid Engine only if empty."""
        return await release_node(self.client, self.plugin, hostname)

    async def deregister(
        self, hostname: str, sleep: Callable[[float], Awaitable[None]]
    ) -> list[str]:
        """A lost or torn-down node: out whatever runs there; the steps that failed."""
        return await deregister_node(self.client, self.plugin, hostname)
