"""QueueSampler: a batch cluster's demand, read from Grid Engine every poll interval.

Each poll runs `qstat -f -xml -r -u '*'` on the head (controller.gridengine.sge_client) and
publishes the QueueSample controller.gridengine.sge makes of it: pending jobs, slots and
mem_requested, the oldest wait, running jobs, busy and idle exec hosts. When qstat fails, times out
or prints something unreadable, it publishes SensorLost(source="sge") instead and retries after 1,
2, 4, ... seconds, capped at the poll interval; the node pool holds the cluster until samples come
back. An outage logs once when it starts and once when it ends.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from controller.config.schema import Config
from controller.gridengine.sge import MEM_CONSUMABLE, SgeParseError, parse_qstat, queue_sample
from controller.gridengine.sge_client import SgeClient, SgeError
from controller.messages import SensorLost
from controller.runtime.actor import Actor
from controller.runtime.bus import Bus


class QueueSampler(Actor):
    def __init__(
        self,
        *,
        config: Config,
        bus: Bus,
        client: SgeClient,
        poll_interval: float | None = None,
        consumable: str = MEM_CONSUMABLE,
        wall_clock: Callable[[], dt.datetime] = dt.datetime.now,
    ) -> None:
        super().__init__(name="queue_sampler", bus=bus)
        self.client = client
        self.poll_interval = config.master.poll_interval if poll_interval is None else poll_interval
        self.consumable = consumable
        # Grid Engine prints submission times in the head's local time, without a zone.
        self.wall_clock = wall_clock
        self._outage_since: float | None = None
        self._failures = 0

    async def run(self) -> None:
        await self.poll_forever(self.poll_once, failing=lambda: self._failures > 0)

    async def poll_once(self) -> float:
        """One qstat and what follows from it; the delay before the next one."""
        try:
            snapshot = parse_qstat(await self.client.qstat_jobs(), consumable=self.consumable)
        except SgeError as exc:
            return self._lost(str(exc))
        except SgeParseError as exc:
            return self._lost(f"unreadable qstat output: {exc}")
        now = self.clock()
        if self._outage_since is not None:
            self.log.info(
                "sensor.recovered", source="sge", down_for=round(now - self._outage_since, 3)
            )
            self._outage_since = None
        self._failures = 0
        sample = queue_sample(snapshot, at=now, now=self.wall_clock())
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
        if self._outage_since is None:
            self._outage_since = now
            self.log.warning(
                "sensor.lost",
                source="sge",
                reason=reason,
                hint="the cluster holds its size until qstat answers again",
            )
        self._failures += 1
        self.publish(SensorLost(at=now, since=self._outage_since, reason=reason, source="sge"))
        return min(self.poll_interval, 2.0 ** (self._failures - 1))
