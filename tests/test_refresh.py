"""Slaves on an old image or data snapshot are replaced gradually after SIGHUP, by the reconciler.

A farm of three slaves (band [3, 5]) gets a new `image_id` and `data_snapshots` by a reload, as
SIGHUP gives it (`reconfigure` on each actor, what controller.app does):

- through `controller simulate`'s executor (controller.simulation.fleet_executor) in virtual time,
  looked at every second: new launches carry the new spec, the old slaves go one at a time, each
  only once its replacement is ready, the slaves that serve never fewer than the band's min, the
  fleet never more than one over what the policy wants; a scale-in in the meantime takes old
  slaves first; a restart in the middle goes on from the tags, launching nothing twice;
- through the daemon's actors in loop time, as tests/test_one_controller.py drives them
  (SpotPool, RenderfarmWriter, and its stand-ins for the sampler and the probe): the same
  decisions, launches, unlistings and terminations as the executor's, and renderfarm.conf, read
  every half second, never lists fewer than three slaves, across a restart in the middle too.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from actors.renderfarm_writer import RenderfarmWriter
from actors.spot_pool import SpotPool
from controller.cloud.port import launch_digest
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
from controller.messages import Decision, DrainSlave, LostReason, SecurityGroupReady
from controller.policy.factory import make_policy
from controller.policy.lifecycle import Phase
from controller.policy.pool_profile import SlaveProfile
from controller.runtime.bus import Bus
from controller.simulation.fleet_executor import SIM_GROUP, FleetExecutor, record_of
from controller.simulation.trace import Trace, load_rate
from tests.actor_runner import running
from tests.test_one_controller import SAMPLE_LEAD, ProbePasses, TraceSampler, same_times

pytestmark = [pytest.mark.timeout(120)]

POLL = 10.0
BUCKET = 60.0
SEED = 11
RELOAD_AT = 305.0  # between two polls
MIN = 3  # the band's min at the load of the trace


def farm_config(policy: str = "table", *, image: str = "ami-0000000000000old") -> Config:
    return Config(
        controller=ControllerSection(fleet="refresh", on_exit="leave"),
        master=MasterSection(poll_interval=POLL, window_seconds=30.0, reload_command=()),
        load_table=LoadTableSection(
            rows=(
                LoadRow(rps=0.1, min_instances=1, max_instances=2),
                LoadRow(rps=2.0, min_instances=MIN, max_instances=5),
            )
        ),
        scaling=ScalingSection(
            policy=policy,
            scale_in_after=60.0,
            drain_seconds=20.0,
            request_timeout=300.0,
            slave_capacity_rps=1.0,
            boot_seconds=40.0,
        ),
        slave=SlaveSection(image_id=image, data_snapshots=("snap-0000000000000old",)),
        simulate=SimulateSection(boot_spread=0.2),
    )


def reloaded(config: Config) -> Config:
    """What `controller sync-data --image-id` writes, read again on SIGHUP."""
    slave = dataclasses.replace(
        config.slave, image_id="ami-0000000000000new", data_snapshots=("snap-0000000000000new",)
    )
    return dataclasses.replace(config, slave=slave)


def spec_of(config: Config) -> str:
    launch = SlaveProfile(config).launch_settings()
    return launch_digest(launch.image_id, launch.snapshots, launch.user_data)


def steady(rps: float, minutes: int = 40) -> Trace:
    return Trace(path="scripted", start=0.0, bucket_seconds=BUCKET, rps=(rps,) * minutes)


class SimRun:
    """The executor `controller simulate` runs, on SimCloud, stepped by the test."""

    def __init__(self, config: Config, trace: Trace) -> None:
        self.now = 0.0
        self.rate = load_rate(trace)
        self.cloud = SimCloud.from_config(config, clock=self.clock, seed=SEED)
        self.executor = self.start(config)

    def clock(self) -> float:
        return self.now

    def set_clock(self, t: float) -> None:
        self.now = t

    def start(self, config: Config) -> FleetExecutor:
        """A controller process: adopts what carries the fleet's tag."""
        return FleetExecutor(
            config=config,
            policy=make_policy(config.scaling.policy, config),
            cloud=self.cloud,
            clock=self.clock,
            set_clock=self.set_clock,
            rate=self.rate,
        )


@dataclasses.dataclass
class Watch:
    """What the test reads of the pool every second."""

    old_spec: str
    new_spec: str
    min_serving: int = 1_000
    max_over: int = -1_000  # while replacing: alive (not leaving) minus the desired count
    max_billed_over: int = -1_000  # the same, draining and terminating ones included
    retired_early: list[str] = dataclasses.field(default_factory=list)
    retired: set[str] = dataclasses.field(default_factory=set)

    def look(self, executor: FleetExecutor, floor: int) -> None:
        pool = executor.pool
        tracked = list(pool.tracked.values())
        serving = [t for t in tracked if t.phase is Phase.READY and not t.interrupted]
        alive = [t for t in tracked if t.phase in (Phase.BOOTING, Phase.READY)]
        self.min_serving = min(self.min_serving, len(serving) - floor)
        if any(t.spec == self.old_spec for t in alive):  # replacing: the surge
            self.max_over = max(self.max_over, len(alive) - executor.desired)
            billed = len(tracked) - executor.desired
            self.max_billed_over = max(self.max_billed_over, billed)
        for t in tracked:
            if t.down_reason is LostReason.REPLACED and t.instance_id not in self.retired:
                self.retired.add(t.instance_id)
                ready_new = sum(1 for s in serving if s.spec == self.new_spec)
                if ready_new < len(self.retired):
                    self.retired_early.append(t.instance_id)


def step(run: SimRun, watch: Watch, until: float, floor: Callable[[], int]) -> None:
    t = run.now
    while t < until:
        t += 1.0
        run.executor.run_until(t)
        watch.look(run.executor, floor())


def specs(run: SimRun, config: Config) -> list[str]:
    """The spec tag of each slave alive, oldest first."""
    live = sorted(run.cloud.live(), key=lambda i: (i.launched_at, i.instance_id))
    return [run.cloud.spec_of(i.instance_id) for i in live]


@pytest.mark.parametrize("policy", ["table", "ours"])
def test_a_reload_replaces_the_old_slaves_one_by_one_never_below_the_band(policy: str) -> None:
    config = farm_config(policy)
    new = reloaded(config)
    old_spec, new_spec = spec_of(config), spec_of(new)
    run = SimRun(config, steady(3.0))
    watch = Watch(old_spec, new_spec)
    run.executor.run_until(RELOAD_AT)
    before = {i.instance_id for i in run.cloud.live()}
    assert specs(run, config) == [old_spec] * len(before) and len(before) >= MIN

    run.executor.pool.reconfigure(new)  # SIGHUP
    step(run, watch, 1000.0, lambda: run.executor.desired)

    assert specs(run, config) == [new_spec] * len(before)  # every old slave replaced
    launched = [i for i in run.cloud.instances("refresh") if i.launched_at > RELOAD_AT]
    assert len(launched) == len(before)  # one launch each: nothing launched twice
    assert all(run.cloud.spec_of(i.instance_id) == new_spec for i in launched)
    drains = run.executor.drains
    assert {d.instance_id for d in drains} == before
    assert {d.reason for d in drains} == {LostReason.REPLACED}
    assert watch.retired_early == []  # each went once a replacement served
    assert watch.min_serving >= 0  # never fewer serving than the band's min
    assert watch.max_over == 1  # a surge of one, never more
    assert watch.max_billed_over == 1  # the next starts once the one before has gone
    times = [d.at for d in drains]
    assert times == sorted(times) and len(set(times)) == len(times)  # one at a time
    # the reason of the decisions says what goes on, until it is done
    reasons = [d.reason for d in run.executor.decisions if d.at > RELOAD_AT]
    assert "on an older image or data: replacing" in reasons[0]
    assert not any("older image" in r for r in reasons[-3:])


def test_a_scale_in_in_the_meantime_takes_old_slaves_first() -> None:
    config = farm_config("table")
    new = reloaded(config)
    # the load falls at 360, while the first slave is being replaced: band [1, 2]
    trace = Trace(path="scripted", start=0.0, bucket_seconds=BUCKET, rps=(3.0,) * 6 + (0.5,) * 30)
    run = SimRun(config, trace)
    watch = Watch(spec_of(config), spec_of(new))
    run.executor.run_until(RELOAD_AT)
    before = {i.instance_id for i in run.cloud.live()}
    run.executor.pool.reconfigure(new)
    step(run, watch, 1500.0, lambda: run.executor.decisions[-1].band[0])

    assert specs(run, config) == [spec_of(new)] * 2
    old_gone = [d for d in run.executor.drains if d.instance_id in before]
    assert {d.instance_id for d in old_gone} == before
    new_removed = [d for d in run.executor.drains if d.instance_id not in before]
    # while old slaves were left, no new one was removed
    last_old = max(d.at for d in old_gone)
    assert all(d.at > last_old for d in new_removed), (old_gone, new_removed)
    assert len([i for i in run.cloud.instances("refresh") if i.launched_at > RELOAD_AT]) <= 2
    assert watch.min_serving >= 0 and watch.max_over <= 1


def test_a_restart_in_the_middle_knows_the_old_slaves_by_their_tag() -> None:
    config = farm_config("table")
    new = reloaded(config)
    run = SimRun(config, steady(3.0))
    watch = Watch(spec_of(config), spec_of(new))
    run.executor.run_until(RELOAD_AT)
    before = {i.instance_id for i in run.cloud.live()}
    run.executor.pool.reconfigure(new)
    step(run, watch, RELOAD_AT + 90.0, lambda: MIN)  # one replaced, the next one booting
    mid = specs(run, config)
    assert mid.count(spec_of(new)) >= 1 and mid.count(spec_of(config)) >= 2

    run.executor = run.start(new)  # kill -9 and start with the new config
    step(run, watch, 1500.0, lambda: MIN)

    assert specs(run, config) == [spec_of(new)] * len(before)
    launched = [i for i in run.cloud.instances("refresh") if i.launched_at > RELOAD_AT]
    assert len(launched) == len(before)  # the restart launched nothing twice
    assert watch.max_over <= 1 and watch.retired_early == []


def test_untagged_slaves_count_as_current() -> None:
    """A fleet launched by a controller from before the tag is not replaced by an upgrade."""
    config = farm_config("table")
    run = SimRun(config, steady(3.0))
    run.cloud.tag_specs = False
    run.executor.run_until(RELOAD_AT)
    before = {i.instance_id for i in run.cloud.live()}
    assert {run.cloud.spec_of(i) for i in before} == {""}
    run.cloud.tag_specs = True
    run.executor = run.start(reloaded(config))  # the upgraded controller, a new image too
    run.executor.run_until(900.0)
    assert {i.instance_id for i in run.cloud.live()} == before
    assert run.executor.drains == []


# the daemon's actors through the same reload


async def run_daemon(
    config: Config, trace: Trace, tmp_path: Path, *, restart_at: float | None = None
) -> tuple[Any, list[int]]:
    """SpotPool and RenderfarmWriter as `controller run` builds them, reloaded at RELOAD_AT
    (and, with `restart_at`, stopped and started again with the new config then); the record,
    and the count of URLs renderfarm.conf listed at each look (every half second)."""
    loop = asyncio.get_running_loop()
    cloud = SimCloud.from_config(config, clock=loop.time, seed=SEED)
    conf = tmp_path / "renderfarm.conf"
    config = dataclasses.replace(
        config, master=dataclasses.replace(config.master, renderfarm_conf=str(conf))
    )
    new = reloaded(config)
    said: list[Any] = []
    listed: list[int] = []

    def process(cfg: Config) -> tuple[Bus, list[Any]]:
        bus = Bus()
        bus.listen(said.append)
        pool = SpotPool(
            config=cfg,
            bus=bus,
            cloud=cloud,
            policy=make_policy(cfg.scaling.policy, cfg),
            wall_clock=loop.time,
        )
        writer = RenderfarmWriter(config=cfg, bus=bus, settle_seconds=0.0)
        sampler = TraceSampler(bus=bus, config=cfg, trace=trace)
        probe = ProbePasses(bus=bus, cloud=cloud, config=cfg)
        bus.publish(SecurityGroupReady(at=loop.time(), group_id=SIM_GROUP, created=True))
        return bus, [writer, probe, sampler, pool]

    async def look() -> None:
        while True:
            await asyncio.sleep(0.5)
            text = conf.read_text() if conf.exists() else ""
            listed.append(sum(1 for line in text.splitlines() if line.startswith("\t")))

    end = trace.end - SAMPLE_LEAD
    watcher = asyncio.create_task(look())
    _, actors = process(config)
    async with running(*actors):
        await asyncio.sleep(RELOAD_AT - loop.time())
        for actor in actors:  # SIGHUP
            if hasattr(actor, "reconfigure"):
                actor.reconfigure(new)
        await asyncio.sleep((restart_at or end) - loop.time())
    if restart_at is not None:
        _, actors = process(new)
        async with running(*actors):
            await asyncio.sleep(end - loop.time())
    watcher.cancel()
    decisions = [m for m in said if isinstance(m, Decision)]
    drains = [m for m in said if isinstance(m, DrainSlave)]
    return record_of(cloud, config.controller.fleet, decisions, drains), listed


@pytest.mark.looptime(end=10_000)
async def test_the_daemon_replaces_as_simulate_does(tmp_path: Path) -> None:
    config = farm_config("ours")
    trace = steady(3.0, minutes=25)
    daemon, listed = await run_daemon(config, trace, tmp_path)

    run = SimRun(config, trace)
    run.executor.run_until(RELOAD_AT)
    run.executor.pool.reconfigure(reloaded(config))
    run.executor.run_until(trace.end - SAMPLE_LEAD)
    simulated = run.executor.record()

    replaced = [iid for _, iid, reason in simulated.unlisted if reason == LostReason.REPLACED]
    assert len(replaced) == 5  # the whole farm
    assert same_times(daemon.decisions) == same_times(simulated.decisions)
    assert same_times(daemon.unlisted) == same_times(simulated.unlisted)
    assert same_times(daemon.instances) == same_times(simulated.instances)
    settled = listed[int(200 / 0.5) :]  # the fleet was up by 200 s
    assert min(settled) >= MIN, listed


@pytest.mark.looptime(end=10_000)
async def test_the_daemon_restarted_in_the_middle_finishes_the_replacement(tmp_path: Path) -> None:
    config = farm_config("table")
    trace = steady(3.0, minutes=25)
    record, listed = await run_daemon(config, trace, tmp_path, restart_at=RELOAD_AT + 90.0)

    before = {i[0] for i in record.instances if i[3] < RELOAD_AT}
    after = [i for i in record.instances if i[3] > RELOAD_AT]
    assert len(before) == MIN and len(after) == MIN  # one replacement each, nothing twice
    assert {iid for _, iid, _ in record.unlisted} == before
    assert all(ended is not None for iid, _, _, _, ended, _ in record.instances if iid in before)
    assert min(listed[int(200 / 0.5) :]) >= MIN, listed
