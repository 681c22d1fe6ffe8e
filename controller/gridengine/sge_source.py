"""Grid Engine as a batch cluster's load source: one qstat, read into a QueueSample.

QueueSampler polls a source and publishes what it reads; this one runs `qstat -f -xml -r -u '*'`
on the head (SgeClient) and reads it with controller.gridengine.sge. A failure is returned as
the reason (one line) rather than raised, so the sampler needs to know no Grid Engine error type.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from controller.gridengine.sge import MEM_CONSUMABLE, SgeParseError, parse_qstat, queue_sample
from controller.gridengine.sge_client import SgeClient, SgeError
from controller.messages import QueueSample


class SgeQueueSource:
    name = "sge"  # the sensor's name in SensorLost and the log
    command = "qstat"

    def __init__(
        self,
        client: SgeClient,
        *,
        consumable: str = MEM_CONSUMABLE,
        wall_clock: Callable[[], dt.datetime] = dt.datetime.now,
    ) -> None:
        self.client = client
        self.consumable = consumable
        # Grid Engine prints submission times in the head's local time, without a zone.
        self.wall_clock = wall_clock

    async def read(self, at: float) -> QueueSample | str:
        """The queue now (`at`: the loop time of the reading), or why it cannot be read."""
        try:
            snapshot = parse_qstat(await self.client.qstat_jobs(), consumable=self.consumable)
        except SgeError as exc:
            return str(exc)
        except SgeParseError as exc:
            return f"unreadable qstat output: {exc}"
        return queue_sample(snapshot, at=at, now=self.wall_clock())
