"""The head's own motd banner (MASTER), as the seed's plugin wrote it on StarCluster's master.

The controller runs on the head, so a cluster's `motd` plugins are applied here, locally, when
`run --cluster` starts; the nodes get theirs (COMPUTE) over SSH with the rest of their setup.
The command is the one a node runs (node_plugins), so the block is replaced, never repeated.
A head where the file cannot be written (the controller's user may not own /etc) is told in the
log and the start goes on: a banner is no reason to stop a cluster.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from controller.config.plugins import MotdPlugin, Plugin
from controller.gridengine.node_plugins import NodeInfo, remote_commands


async def write_head_banners(
    plugins: Sequence[Plugin], head: str, cluster: str, timeout: float = 30.0
) -> list[str]:
    """Apply the motd plugins on this machine as the MASTER; one line per failure."""
    node = NodeInfo(instance_id="", address="", hostname=head, node_type="MASTER", cluster=cluster)
    problems = []
    for plugin in plugins:
        if not isinstance(plugin, MotdPlugin):
            continue
        for command in remote_commands(plugin, node):
            process = await asyncio.create_subprocess_shell(
                command.command,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
            )
            try:
                async with asyncio.timeout(timeout):
                    _, err = await process.communicate((command.input or "").encode())
            except TimeoutError:
                process.kill()
                await process.wait()
                problems.append(f"plugin.{plugin.name}: {command.what} on the head took too long")
                continue
            if process.returncode != 0:
                said = " ".join(err.decode(errors="replace").split())[-300:] or "no output"
                problems.append(f"plugin.{plugin.name}: {command.what} on the head: {said}")
    return problems
