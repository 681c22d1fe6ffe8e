"""QueueSampler: a batch cluster's demand, read from its scheduler every poll interval.

The scheduler is a source (controller.scheduler.source) with a `name` ("sge" or "slurm": the
sensor's name) and `read(at)`, which gives a QueueSample or why it could not read one: Grid
Engine's qstat (controller.gridengine.sge_source) or Slurm's squeue and sinfo
(controller.slurm.slurm_source).
Each poll publishes the sample: pending jobs, slots and memory, the oldest wait, running jobs,
busy and idle hosts. When the source fails, times out or prints something unreadable, it
publishes SensorLost(source=name) instead and retries after 1, 2, 4, ... seconds, capped at the
poll interval; the node pool holds the cluster until samples come back. An outage logs once when
it starts and once when it ends.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from controller.config.schema import Config
from controller.gridengine.sge import MEM_CONSUMABLE
from controller.gridengine.sge_client import SgeClient
from controller.gridengine.sge_source import SgeQueueSource
from controller.messages import SensorLost
from controller.runtime.actor import Actor
from controller.runtime.bus import Bus
from controller.scheduler.source import QueueSource


class QueueSampler(Actor):
    def __init__(
        self,
        *,
        config: Config,
        bus: Bus,
        source: QueueSource | None = None,
        client: SgeClient | None = None,  # Grid Engine's qstat, when no source is given
        poll_interval: float | None = None,
        consumable: str = MEM_CONSUMABLE,
        wall_clock: Callable[[], dt.datetime] = dt.datetime.now,
    ) -> None:
        super().__init__(name="queue_sampler", bus=bus)
        if source is None:
            if client is None:
                raise TypeError("QueueSampler needs a source (or Grid Engine's client)")
            source = SgeQueueSource(client, consumable=consumable, wall_clock=wall_clock)
        self.source = source
        self.poll_interval = config.master.poll_interval if poll_interval is None else poll_interval
        self._outage_since: float | None = None
        self._failures = 0

    async def run(self) -> None:
        await self.poll_forever(self.poll_once, failing=lambda: self._failures > 0)

    async def poll_once(self) -> float:
        """One reading and what follows from it; the delay before the next one."""
        sample = await self.source.read(self.clock())
        if isinstance(sample, str):
            return self._lost(sample)
        now = self.clock()
        if self._outage_since is not None:
            self.log.info(
                "sensor.recovered",
                source=self.source.name,
                down_for=round(now - self._outage_since, 3),
            )
            self._outage_since = None
        self._failures = 0
        self.log.debug(
            "queue.sampled",
            pending_jobs=sample.pending_jobs,
            pending_slots=sample.pending_slots,
            running_jobs=sample.running_jobs,
        )
        self.publish(sample)
        return self.poll_interval

    def _lost(self, reason: str) -> float:
        now = self.clock()
        name = self.source.name
        if self._outage_since is None:
            self._outage_since = now
            self.log.warning(
                "sensor.lost",
                source=name,
                reason=reason,
                hint=f"the cluster holds its size until {self.source.command} answers again",
            )
        self._failures += 1
        self.publish(SensorLost(at=now, since=self._outage_since, reason=reason, source=name))
        return min(self.poll_interval, 2.0 ** (self._failures - 1))
