"""A batch cluster's queue as QueueSampler's load source, for whichever scheduler drives it.

A source has a `name` ("sge" or "slurm": the sensor's name in SensorLost and the log), the
`command` it runs (for the hint while it fails) and `read(at)`: a QueueSample, or why none could
be read. Grid Engine's is qstat (SgeQueueSource), Slurm's squeue and sinfo (SlurmQueueSource).
"""

from __future__ import annotations

from typing import Protocol

from controller.gridengine.sge_side import SgeSide
from controller.gridengine.sge_source import SgeQueueSource
from controller.messages import QueueSample
from controller.scheduler.side import SchedulerSide
from controller.slurm.slurm_side import SlurmSide
from controller.slurm.slurm_source import SlurmQueueSource


class QueueSource(Protocol):
    name: str
    command: str

    async def read(self, at: float) -> QueueSample | str: ...


def queue_source(side: SchedulerSide) -> QueueSource:
    """The queue of the scheduler whose side this is, read through the same client."""
    if isinstance(side, SlurmSide):
        return SlurmQueueSource(side.client)
    if isinstance(side, SgeSide):
        return SgeQueueSource(side.client, consumable=side.plugin.consumable)
    raise TypeError(f"no queue source for {side!r}")
