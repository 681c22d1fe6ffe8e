"""The head's part for a batch node, for whichever scheduler the cluster's plugins name.

ClusterNodeSetup and `teardown --cluster` drive it the same way for Grid Engine (SgeSide) and
Slurm (SlurmSide): prepare the head at start, register a node before its own commands and wait
for it to join after them, release a scaled-in node only if it is empty, deregister a lost or
torn-down one whatever runs there. A failure raises one of the side's `errors`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from controller.config.plugins import Plugin, sge_plugin, slurm_plugin
from controller.gridengine.sge_client import SgeClient
from controller.gridengine.sge_side import SgeSide
from controller.slurm.slurm_client import SlurmClient
from controller.slurm.slurm_side import SlurmSide

Sleep = Callable[[float], Awaitable[None]]


class Released(Protocol):
    released: bool  # out of the scheduler: the node may be terminated
    reason: str  # why it was kept
    failures: list[str]  # steps that failed on a node that goes all the same


@dataclass(frozen=True, slots=True)
class Gone:
    """A lost or torn-down node's removal: released whatever ran there."""

    failures: list[str] = field(default_factory=list)
    released: bool = True
    reason: str = ""


class SchedulerSide(Protocol):
    name: str  # "sge" | "slurm", for the log
    scheduler: str  # "Grid Engine" | "Slurm", for people
    plugin: Plugin
    errors: tuple[type[Exception], ...]
    head_hint: str  # what stays broken while the head is not ready

    def head_host(self) -> str: ...
    async def answers(self) -> None: ...
    async def prepare_head(self, head: str) -> dict[str, object]: ...
    async def register(
        self, hostname: str, read_meminfo: Callable[[], Awaitable[str]]
    ) -> dict[str, object]: ...
    async def joined(self, hostname: str, sleep: Sleep) -> None: ...
    async def release(self, hostname: str, sleep: Sleep) -> Released: ...
    async def deregister(self, hostname: str, sleep: Sleep) -> list[str]: ...


def scheduler_side(
    plugins: Sequence[Plugin],
    *,
    sge: SgeClient | None = None,
    slurm: SlurmClient | None = None,
    timeout: float | None = None,
) -> SchedulerSide | None:
    """The side of the cluster's sge or slurm plugin (None: it has neither), with the client
    given or one made from the plugin (`timeout` per call, else the client's default)."""
    if (sge_p := sge_plugin(plugins)) is not None:
        if sge is None:
            sge = SgeClient(
                sge_root=sge_p.sge_root,
                cell=sge_p.cell,
                bin_dir=sge_p.bin_dir,
                prefix=sge_p.command_prefix,
            )
            sge.timeout = timeout or sge.timeout
        return SgeSide(sge, sge_p)
    if (slurm_p := slurm_plugin(plugins)) is not None:
        if slurm is None:
            slurm = SlurmClient(
                slurm_conf=slurm_p.slurm_conf,
                bin_dir=slurm_p.bin_dir,
                prefix=slurm_p.command_prefix,
            )
            slurm.timeout = timeout or slurm.timeout
        return SlurmSide(slurm, slurm_p)
    return None
