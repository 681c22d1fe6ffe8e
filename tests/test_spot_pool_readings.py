"""SpotPool between polls: every load reading may launch at once, and EC2 is still described once
a poll (issue: a burst seen within about a second, whatever poll_interval is).

LoadSampler reads mod_status every `[master] sample_interval`; these tests publish its readings
by hand, in loop time, against SimCloud.
"""

from __future__ import annotations

from typing import Any

import pytest

from controller.cloud.port import FleetView
from controller.cloud.simcloud import SimCloud
from controller.messages import LoadSample
from tests.actor_runner import running
from tests.test_spot_pool import Farm, config, now, until

pytestmark = [pytest.mark.timeout(30)]
looptime = pytest.mark.looptime(end=5000)


class CountingCloud(SimCloud):
    """SimCloud that notes the loop time of every describe (EC2's DescribeInstances)."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.describes: list[float] = []

    async def describe_fleet(self, fleet: str, *, with_requests: bool = True) -> FleetView:
        self.describes.append(self.clock())
        return await super().describe_fleet(fleet, with_requests=with_requests)


def counting_farm(**sim: Any) -> Farm:
    farm = Farm(config(), **sim)
    counting = CountingCloud(clock=farm.sim.clock, boot_spread=0.0, boot_seconds=5.0, **sim)
    counting.wall_offset = farm.sim.wall_offset
    farm.sim = farm.pool.cloud = counting
    return farm


def reading(farm: Farm, rps: float) -> None:
    farm.bus.publish(LoadSample(at=now(), rps=rps, window_rps=rps))


@looptime
async def test_a_reading_that_calls_for_more_launches_at_once_without_a_describe() -> None:
    farm = counting_farm()
    farm.group_ready()
    reading(farm, 0.0)
    async with running(farm.pool):
        await until(13)
        reading(farm, 3.0)  # band [3, 5]: three slaves, now, not at the poll at 20
        await until(14)
        assert [i.launched_at for i in farm.launched()] == [13, 13, 13]
        assert farm.sim.describes == [0, 10]  # adoption (the first poll uses it), 10; none at 13
        decisions = await farm.decisions()
        assert [(d.at, d.launch) for d in decisions][-1] == (13, 3)


@looptime
async def test_readings_every_second_that_call_for_nothing_new_wait_for_the_poll() -> None:
    farm = counting_farm()
    farm.group_ready()
    reading(farm, 1.0)
    async with running(farm.pool):
        for t in range(1, 40):
            await until(t + 0.5)
            reading(farm, 1.0)
        await until(41)
    assert [d.at for d in await farm.decisions()] == [0, 10, 20, 30, 40]
    assert [t for t in farm.sim.describes if t < 41] == [0, 10, 20, 30, 40]  # then teardown
    assert len(farm.launched()) == 1


@looptime
async def test_a_burst_is_acted_on_once_even_when_no_type_has_capacity() -> None:
    farm = counting_farm(capacity_errors_for={"m5.large", "c5.large"})
    farm.group_ready()
    reading(farm, 0.0)
    async with running(farm.pool):
        await until(2.5)
        for t in range(3, 9):  # the same burst read six times
            await until(t)
            reading(farm, 2.0)
        await until(9)
    burst_cycles = [d.at for d in await farm.decisions() if 0 < d.at < 10]
    assert burst_cycles == [3]  # one cycle for the burst, not one a reading
    assert farm.sim.counters.capacity_errors == 2  # each type refused once


@looptime
async def test_a_higher_reading_calls_again_and_a_fall_rearms() -> None:
    farm = counting_farm()
    farm.group_ready()
    reading(farm, 0.0)
    async with running(farm.pool):
        await until(2)
        reading(farm, 1.0)  # band [1, 3]: one
        await until(3)
        reading(farm, 2.0)  # band [2, 4]: one more
        await until(4)
        assert [i.launched_at for i in farm.launched()] == [2, 3]


@looptime
async def test_a_burst_just_before_the_poll_brings_the_poll_forward() -> None:
    farm = counting_farm()
    farm.group_ready()
    reading(farm, 0.0)
    async with running(farm.pool):
        await until(9.5)
        reading(farm, 1.0)  # the poll due at 10 is within a reading (1 s): it runs now
        await until(21)
    assert [d.at for d in await farm.decisions()] == [0, 9.5, 20]  # one cycle, not two
    assert [i.launched_at for i in farm.launched()] == [9.5]
    assert [t for t in farm.sim.describes if t < 21] == [0, 9.5, 20]  # the polls keep their cadence
