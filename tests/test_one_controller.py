"""`controller simulate` and the daemon are one controller.

One scripted trace, with a capacity error, an unfilled spot request and a spot interruption in it,
is driven twice on SimCloud with the same seed:

- through the daemon's actors in loop time: SpotPool and RenderfarmWriter as `controller run`
  builds them, and for what needs real servers (Apache's mod_status, the slaves' readiness probe,
  the SQS interruption queue) small actors that publish what LoadSampler, SlaveHealth and
  InterruptionWatcher publish, by the rules the simulator's executor models them with;
- through `simulate()`, what `controller simulate` runs.

Both must take the same decisions and make the same launches, unlistings and terminations at the
same times: SimCloud draws its faults from one seeded stream in call order, so any difference in
what the two controllers ask would show as different instances, requests and faults too.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
from pathlib import Path
from typing import Any

import pytest

from actors.renderfarm_writer import RenderfarmWriter
from actors.spot_pool import SpotPool
from controller.cloud.sim_records import NOTICE_SECONDS
from controller.cloud.simcloud import SimCloud
from controller.config.schema import (
    Config,
    ControllerSection,
    LoadRow,
    LoadTableSection,
    MasterSection,
    ScalingSection,
    SimulateSection,
    SlaveSection,
)
from controller.messages import (
    Decision,
    DrainSlave,
    FleetObserved,
    InstanceId,
    InstanceUp,
    InterruptionWarning,
    LostReason,
    SecurityGroupReady,
    SlaveReady,
)
from controller.policy.factory import make_policy
from controller.runtime.actor import Actor
from controller.runtime.bus import Bus
from controller.simulation.fleet_executor import SIM_GROUP, FleetRecord, record_of, trace_reading
from controller.simulation.replay import simulate
from controller.simulation.trace import Trace, load_rate
from tests.actor_runner import listen, running

pytestmark = [pytest.mark.timeout(60)]

POLL = 10.0
SAMPLE_LEAD = 0.0001  # the sampler's reading lands just before the pool's regular cycle
BUCKET = 60.0
# requests/sec per minute: a rise, a plateau, a fall, a second rise and the end
LOAD = (0.0, 0.5, 1.5, 3.0, 3.0, 3.0, 2.5, 1.0, 0.2, 0.0, 0.0, 2.0, 4.0, 4.0, 1.0, 0.0)
SEED = 7


def farm_config() -> Config:
    return Config(
        controller=ControllerSection(fleet="one", on_exit="leave"),
        master=MasterSection(poll_interval=POLL, window_seconds=30.0, reload_command=()),
        load_table=LoadTableSection(
            rows=(
                LoadRow(rps=0.1, min_instances=1, max_instances=3),
                LoadRow(rps=1.0, min_instances=2, max_instances=5),
                LoadRow(rps=2.5, min_instances=4, max_instances=8),
            )
        ),
        scaling=ScalingSection(
            policy="ours",
            scale_in_after=60.0,
            drain_seconds=20.0,
            request_timeout=100.0,
            capacity_cooldown=200.0,
            slave_capacity_rps=1.0,
            boot_seconds=40.0,
        ),
        slave=SlaveSection(
            instance_types=("m5.large", "c5.large"), image_id="ami-0123456789abcdef0"
        ),
        simulate=SimulateSection(
            boot_spread=0.2,
            capacity_error_rate=0.15,
            unfilled_rate=0.1,
            interruption_rate_per_hour=1.5,
        ),
    )


def trace() -> Trace:
    return Trace(path="scripted", start=0.0, bucket_seconds=BUCKET, rps=LOAD)


class TraceSampler(Actor):
    """LoadSampler's part: a reading every poll, and one a sample_interval after each change of
    the trace's rate (where a burst is first seen), as the simulator's executor models it."""

    def __init__(self, *, bus: Bus, config: Config, trace: Trace) -> None:
        super().__init__(name="load_sampler", bus=bus)
        self.trace, self.config = trace, config
        self.rate = load_rate(trace)

    def schedule(self) -> list[tuple[float, float]]:
        """(publish at, reading at): the polls' readings land just before the pool's cycle."""
        tr, master = self.trace, self.config.master
        count = math.ceil((tr.end - tr.start) / master.poll_interval)
        polls = [
            (t - SAMPLE_LEAD, t)
            for k in range(count)
            for t in [tr.start + k * master.poll_interval]
        ]
        changes = [
            (t, t)
            for j in range(1, len(tr.rps))
            if tr.rps[j] != tr.rps[j - 1]
            for t in [tr.time(j) + master.reading_interval]
        ]
        return sorted(polls + changes)

    async def run(self) -> None:
        for publish_at, t in self.schedule():
            if not await self.sleep(max(0.0, publish_at - self.now())):
                return
            self.publish(trace_reading(self.rate, self.config, float(t)))
        await self.stopping.wait()  # an actor runs until it is stopped


class ProbePasses(Actor):
    """SlaveHealth's part: a slave announced up is probed every sample_interval and passes at
    the first probe after its boot."""

    def __init__(self, *, bus: Bus, cloud: SimCloud, config: Config) -> None:
        super().__init__(name="slave_health", bus=bus)
        self.cloud = cloud
        self.every = config.master.reading_interval
        self.up = listen(bus, InstanceUp)

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tasks:
            while True:
                msg = await self.up.get()
                if not isinstance(msg, InstanceUp):
                    return
                if self.cloud.booted(msg.instance_id):
                    self._ready(msg)
                else:
                    tasks.create_task(self._probe(msg))

    async def _probe(self, msg: InstanceUp) -> None:
        inst = self.cloud.instance(msg.instance_id)
        if inst is None:
            return
        wait = math.ceil(max(0.0, inst.ready_at - self.now()) / self.every - 1e-9) * self.every
        await asyncio.sleep(wait)
        if self.cloud.booted(msg.instance_id):
            self._ready(msg)

    def _ready(self, msg: InstanceUp) -> None:
        self.publish(SlaveReady(at=self.now(), instance_id=msg.instance_id, address=msg.address))


class Warnings(Actor):
    """InterruptionWatcher's part: each spot warning at its notice time."""

    def __init__(self, *, bus: Bus, cloud: SimCloud, fleet: str) -> None:
        super().__init__(name="interruption_watcher", bus=bus)
        self.cloud, self.fleet = cloud, fleet
        self.cycles = listen(bus, FleetObserved)
        self.sent: set[str] = set()

    def _next(self) -> tuple[float, str] | None:
        due = []
        for view in self.cloud.fleet_view(self.fleet).instances:
            inst = self.cloud.instance(view.instance_id)
            if inst and inst.interrupt_at is not None and inst.instance_id not in self.sent:
                due.append(
                    (max(inst.launched_at, inst.interrupt_at - NOTICE_SECONDS), inst.instance_id)
                )
        return min(due, default=None)

    async def run(self) -> None:
        while True:
            nxt = self._next()
            wait = math.inf if nxt is None else max(0.0, nxt[0] - self.now())
            msg = await self.cycles.get(timeout=None if math.isinf(wait) else wait)
            if msg is not None and not isinstance(msg, FleetObserved):
                return
            nxt = self._next()
            if nxt is not None and nxt[0] <= self.now():
                self.sent.add(nxt[1])
                self.publish(
                    InterruptionWarning(
                        at=self.now(), instance_id=InstanceId(nxt[1]), kind="interruption"
                    )
                )


async def run_daemon(config: Config, tmp_path: Path) -> FleetRecord:
    loop = asyncio.get_running_loop()
    tr = trace()
    cloud = SimCloud.from_config(config, clock=loop.time, seed=SEED)
    config = dataclasses.replace(
        config, master=dataclasses.replace(config.master, renderfarm_conf=str(tmp_path / "rf.conf"))
    )
    bus = Bus()
    said: list[Any] = []
    bus.listen(said.append)
    pool = SpotPool(
        config=config,
        bus=bus,
        cloud=cloud,
        policy=make_policy("ours", config),
        wall_clock=loop.time,  # SimCloud's epoch is its clock here (wall_offset 0)
    )
    writer = RenderfarmWriter(config=config, bus=bus, settle_seconds=0.0)
    actors = [
        writer,
        ProbePasses(bus=bus, cloud=cloud, config=config),
        Warnings(bus=bus, cloud=cloud, fleet=config.controller.fleet),
        TraceSampler(bus=bus, config=config, trace=tr),
        pool,
    ]
    bus.publish(SecurityGroupReady(at=0.0, group_id=SIM_GROUP, created=True))
    async with running(*actors):
        await asyncio.sleep(tr.end - SAMPLE_LEAD - loop.time())  # simulate stops before the end
    decisions = [m for m in said if isinstance(m, Decision)]
    drains = [m for m in said if isinstance(m, DrainSlave)]
    return record_of(cloud, config.controller.fleet, decisions, drains)


@pytest.mark.looptime(end=10_000)
async def test_the_daemon_and_simulate_take_the_same_actions(tmp_path: Path) -> None:
    config = farm_config()
    daemon = await run_daemon(config, tmp_path)
    simulated = simulate(trace(), config, "ours", seed=SEED, warm=False).record
    assert simulated is not None

    # The script has what it should: a capacity error, an unfilled request, an interruption.
    assert any(
        reason == str(LostReason.INTERRUPTION_WARNING) for _, _, reason in simulated.unlisted
    )
    assert simulated.capacity_errors > 0 and simulated.unfilled > 0
    # ... and a rise acted on a reading after it came, between polls (no describe)
    reading = config.master.reading_interval
    assert any(
        launch and math.isclose((at - reading) % BUCKET, 0.0, abs_tol=1e-6)
        for at, _, launch, _, _ in simulated.decisions
    )

    # loop time keeps microseconds (looptime's resolution), virtual time every digit
    assert same_times(daemon.decisions) == same_times(simulated.decisions)
    assert same_times(daemon.unlisted) == same_times(simulated.unlisted)
    assert same_times(daemon.instances) == same_times(simulated.instances)
    assert (daemon.capacity_errors, daemon.unfilled, daemon.cancelled) == (
        simulated.capacity_errors,
        simulated.unfilled,
        simulated.cancelled,
    )


def same_times(value: Any) -> Any:
    """`value` with every time rounded to the millisecond."""
    if isinstance(value, float):
        return round(value, 3)
    if isinstance(value, tuple):
        return tuple(same_times(v) for v in value)
    return value
