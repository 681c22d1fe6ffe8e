"""Slurm as a batch cluster's load source: squeue and sinfo, read into a QueueSample.

QueueSampler polls a source and publishes what it reads; this one runs `squeue --json` and
`sinfo --json` on the head (SlurmClient) and reads them with controller.slurm.slurm_queue.
Slurm gives times in epoch seconds, so how long a job waited is measured against the wall clock
(time.time), not Grid Engine's naive local time. A failure is returned as the reason (one line)
rather than raised, so the sampler needs to know no Slurm error type.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from controller.messages import QueueSample
from controller.slurm.slurm_client import SlurmClient, SlurmError
from controller.slurm.slurm_queue import SlurmParseError, parse_sinfo, parse_squeue, queue_sample


class SlurmQueueSource:
    name = "slurm"  # the sensor's name in SensorLost and the log
    command = "squeue and sinfo"

    def __init__(self, client: SlurmClient, *, wall_clock: Callable[[], float] = time.time) -> None:
        self.client = client
        self.wall_clock = wall_clock

    async def read(self, at: float) -> QueueSample | str:
        """The queue now (`at`: the loop time of the reading), or why it cannot be read."""
        try:
            jobs = parse_squeue(await self.client.squeue())
            nodes = parse_sinfo(await self.client.sinfo())
        except SlurmError as exc:
            return str(exc)
        except SlurmParseError as exc:
            return f"unreadable Slurm output: {exc}"
        return queue_sample(jobs, nodes, at=at, now=self.wall_clock())
