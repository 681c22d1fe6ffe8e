"""Takes one node out of the head's Grid Engine: the sge plugin's deregistration calls, in order.

Shared by ClusterNodeSetup (a node scaled in, lost or torn down by `run --cluster`) and
`controller teardown --cluster` (a fleet whose controller is gone). Every step is tried even
after one fails, since a later one may still succeed; each tolerates the host being gone already,
so a node that was never registered passes.
"""

from __future__ import annotations

from controller.config.plugins import SgePlugin
from controller.gridengine.node_plugins import HeadCommand, deregister_commands
from controller.gridengine.sge_client import SgeClient, SgeError


async def run_head_command(sge: SgeClient, command: HeadCommand) -> None:
    """One Grid Engine call on the head; SgeError when it fails."""
    program, *args = command.argv
    if command.file_text is None:
        await sge.run(program, *args, ok_if=command.ok_if)
    else:
        await sge.run_with_file(program, *args, text=command.file_text, ok_if=command.ok_if)


async def deregister_node(sge: SgeClient, plugin: SgePlugin, hostname: str) -> list[str]:
    """Disable, unlist and delete `hostname`; the reasons of the steps that failed (empty: it
    is out of Grid Engine)."""
    failures = []
    for command in deregister_commands(plugin, hostname):
        try:
            await run_head_command(sge, command)
        except SgeError as exc:
            failures.append(f"{command.what} on the head: {exc}")
    return failures
