"""The head's Grid Engine made ready for a batch cluster, and each node registered with it.

`prepare_head` runs when `run --cluster` starts, before any node exists, so that a Segway job
submitted with `-l mem_requested=4G` is accepted (Grid Engine refuses a request for an unknown
attribute) and waits as demand the node pool sees:
- the consumable (`mem_requested`) is added to the complex list if missing; an existing
  definition is left as the operator made it;
- with head_is_exec_host, the head gets its memory as that consumable's capacity unless it has
  a value already; without, the head keeps no slots in the queue (node_plugins.head_commands:
  a queue without any host would make Grid Engine refuse every job).

`register_node` makes a node an exec host of the queue (controller.gridengine.node_plugins'
register_commands); every call tolerates having been made before, so a node set up again
after a restart passes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from controller.config.plugins import SgePlugin
from controller.gridengine.node_plugins import (
    HeadCommand,
    consumable_line,
    head_commands,
    register_commands,
)
from controller.gridengine.sge import format_memory, with_consumable
from controller.gridengine.sge_client import SgeClient, SgeError
from controller.gridengine.sge_deregister import run_head_command


class HeadStepFailed(Exception):
    """A head-side call failed; the message names it and quotes Grid Engine."""


@dataclass(frozen=True, slots=True)
class HeadReady:
    """What `prepare_head` found or changed, for the log."""

    consumable_added: bool
    head_memory: str  # the capacity given to the head now; "" = none given
    note: str = ""  # why the head got no capacity, when it did not


async def ensure_consumable(sge: SgeClient, plugin: SgePlugin) -> bool:
    """Add the plugin's consumable to the complex list if missing; True when it was added."""
    try:
        complexes = await sge.run("qconf", "-sc")
        updated = with_consumable(complexes, consumable_line(plugin))
        if updated is None:
            return False
        await sge.run_with_file("qconf", "-Mc", text=updated)
    except SgeError as exc:
        what = f"adding the {plugin.consumable} consumable on the head"
        raise HeadStepFailed(f"{what}: {exc}") from None
    return True


async def prepare_head(sge: SgeClient, plugin: SgePlugin, head: str, memory: str) -> HeadReady:
    """The consumable, and the head's capacity of it or its 0 slots (module docstring).
    `memory` is the head's own, in Grid Engine's notation."""
    added = await ensure_consumable(sge, plugin)
    if not plugin.head_is_exec_host:
        for command in head_commands(plugin, head):
            await _head(sge, command)
        return HeadReady(added, "", f"the head {head} has no slots in {plugin.queue}")
    value = f"{plugin.consumable}={memory}"
    try:
        said = await sge.run("qconf", "-aattr", "exechost", "complex_values", value, head)
    except SgeError as exc:
        if "not an execution host" in exc.output or "does not exist" in exc.output:
            return HeadReady(added, "", f"the head {head} is not an execution host")
        raise HeadStepFailed(f"set complex_values {value} of the head {head}: {exc}") from None
    if "No modification" in said:  # the operator's value stays
        return HeadReady(added, "", f"the head {head} has its {plugin.consumable} already")
    return HeadReady(added, memory)


async def register_node(sge: SgeClient, plugin: SgePlugin, hostname: str, memory: str) -> None:
    """Make `hostname` an exec host of the plugin's queue with `memory` of the consumable."""
    await ensure_consumable(sge, plugin)
    for command in register_commands(plugin, hostname, memory):
        await _head(sge, command)


async def _head(sge: SgeClient, command: HeadCommand) -> None:
    try:
        await run_head_command(sge, command)
    except SgeError as exc:
        raise HeadStepFailed(f"{command.what} on the head: {exc}") from None


def head_memory() -> str:
    """This machine's memory (the controller runs on the head), in Grid Engine's notation."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return format_memory(int(line.split()[1]) * 1024)
    raise OSError("no MemTotal in /proc/meminfo")
