"""SpotPool's behaviour, driven through the Bus in fake loop time (looptime) against SimCloud.

The test plays the other actors: it publishes LoadSample / SensorLost (LoadSampler),
SecurityGroupReady (FirewallKeeper), SlaveReady / SlaveLost (SlaveHealth) and InterruptionWarning
(InterruptionWatcher), and reads what SpotPool publishes plus SimCloud's own state. SpotPool runs
under the real Runtime; SimCloud is the in-memory Cloud port on the loop's clock, with scripted
faults. Cycles come every POLL seconds from t=0, so every assertion names an exact loop time;
messages are published between cycles (t = x5) so that the next cycle sees them.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest
from structlog.testing import capture_logs

from actors.spot_pool import SpotPool
from controller.cloud.port import SPOT_INTERRUPTION_REASON, LaunchSpec
from controller.cloud.sim_records import SimInstance
from controller.cloud.simcloud import SimCloud
from controller.config.schema import (
    Config,
    ControllerSection,
    LoadRow,
    LoadTableSection,
    MasterSection,
    ScalingSection,
    SlaveSection,
)
from controller.messages import (
    Decision,
    DrainSlave,
    ErrorKind,
    FleetObserved,
    InstanceDown,
    InstanceId,
    InstanceUp,
    InterruptionWarning,
    LoadSample,
    LostReason,
    ProviderErrorSeen,
    RenderfarmWritten,
    Role,
    SecurityGroupReady,
    SensorLost,
    SlaveLost,
    SlaveReady,
)
from controller.policy.factory import make_policy
from controller.policy.fleet_plans import UNLIST_GRACE
from controller.runtime.bus import Bus, Mailbox
from tests.actor_runner import listen, running

# A broken pool fails the test at fake t=5000 instead of hanging it.
pytestmark = [pytest.mark.timeout(30)]
looptime = pytest.mark.looptime(end=5000)

FLEET = "farm-t"
POLL = 10.0
WALL = 1_700_000_000.0  # epoch seconds at loop time 0 (EC2's LaunchTime fields are epoch)
GROUP = "sg-farm"
BOOT = 5.0  # SimCloud boot: a launch at a cycle is running (InstanceUp) at the next one


def config(**sections: dict[str, Any]) -> Config:
    """A small farm: [1, 3] slaves from 1 rps, [2, 4] from 2 rps, ...; dwell 60 s, drain 30 s."""
    base = Config(
        controller=ControllerSection(fleet=FLEET, on_exit="teardown"),
        master=MasterSection(poll_interval=POLL),
        load_table=LoadTableSection(
            rows=tuple(
                LoadRow(rps=float(n), min_instances=n, max_instances=n + 2) for n in (1, 2, 3, 4)
            )
        ),
        scaling=ScalingSection(
            policy="table",
            scale_in_after=60.0,
            drain_seconds=30.0,
            request_timeout=1000.0,
            capacity_cooldown=300.0,
        ),
        slave=SlaveSection(
            instance_types=("m5.large", "c5.large"), image_id="ami-0123456789abcdef0"
        ),
    )
    return dataclasses.replace(
        base,
        **{name: dataclasses.replace(getattr(base, name), **kw) for name, kw in sections.items()},
    )


def now() -> float:
    return asyncio.get_running_loop().time()


async def until(t: float) -> None:
    assert t >= now(), f"the test is already at {now()}, past {t}"
    await asyncio.sleep(t - now())


class Farm:
    """SpotPool on a bus, SimCloud behind it, and everything SpotPool publishes."""

    def __init__(self, cfg: Config, *, dry_run: bool = False, **sim: Any) -> None:
        loop = asyncio.get_running_loop()
        sim.setdefault("boot_seconds", BOOT)
        self.sim = SimCloud(clock=loop.time, boot_spread=0.0, wall_offset=WALL, **sim)
        self.bus = Bus()
        self.out: Mailbox[Any] = listen(
            self.bus,
            InstanceUp,
            InstanceDown,
            DrainSlave,
            Decision,
            FleetObserved,
            ProviderErrorSeen,
        )
        self.history: list[Any] = []
        self.pool = SpotPool(
            config=cfg,
            bus=self.bus,
            cloud=self.sim,
            policy=make_policy(cfg.scaling.policy, cfg),
            dry_run=dry_run,
            wall_clock=lambda: loop.time() + WALL,
        )

    # what the other actors would publish

    def load(self, rps: float) -> None:
        self.bus.publish(LoadSample(at=now(), rps=rps, window_rps=rps))

    def group_ready(self, group_id: str = GROUP) -> None:
        self.bus.publish(SecurityGroupReady(at=now(), group_id=group_id, created=True))

    def ready(self, *instances: SimInstance) -> None:
        for inst in instances:
            iid = InstanceId(inst.instance_id)
            self.bus.publish(SlaveReady(at=now(), instance_id=iid, address=inst.private_ip))

    # what SpotPool published, and what SimCloud holds

    async def seen(self, *kinds: type) -> list[Any]:
        """Every message of `kinds` SpotPool published so far (all of them without kinds)."""
        while len(self.out):
            self.history.append(await self.out.get())
        return [m for m in self.history if not kinds or isinstance(m, kinds)]

    async def ups(self) -> list[tuple[float, str]]:
        return [(m.at, m.instance_id) for m in await self.seen(InstanceUp)]

    async def downs(self) -> list[tuple[float, str, LostReason]]:
        return [(m.at, m.instance_id, m.reason) for m in await self.seen(InstanceDown)]

    async def drains(self) -> list[tuple[float, str, LostReason]]:
        return [(m.at, m.instance_id, m.reason) for m in await self.seen(DrainSlave)]

    async def errors(self) -> list[tuple[float, ErrorKind, str]]:
        return [(m.at, m.kind, m.operation) for m in await self.seen(ProviderErrorSeen)]

    async def decisions(self) -> list[Decision]:
        return await self.seen(Decision)

    def launched(self) -> list[SimInstance]:
        """Every instance of the fleet SimCloud started (in launch order), ended ones too."""
        found = (self.sim.instance(i.instance_id) for i in self.sim.fleet_view(FLEET).instances)
        return [i for i in found if i is not None]

    def live(self) -> list[SimInstance]:
        return [i for i in self.sim.live() if i.fleet == FLEET]


def one(instances: list[SimInstance]) -> SimInstance:
    assert len(instances) == 1, instances
    return instances[0]


def events(logs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [e for e in logs if e["event"] == name]


# (1) adoption


@looptime
async def test_a_restart_adopts_the_tagged_fleet_and_launches_nothing_twice() -> None:
    # The old slaves were launched far longer than request_timeout ago: adoption must give
    # SlaveHealth time to find them ready, not take them for launches that never booted.
    farm = Farm(config(scaling={"request_timeout": 120.0}))
    sim = farm.sim

    def previous_launch(count: int, fleet: str = FLEET) -> None:
        spec = LaunchSpec(
            fleet=fleet,
            role=Role.SLAVE,
            image_id="ami-0123456789abcdef0",
            instance_type="c5.large",
            count=count,
            client_token="",
            zone="sim-1b",
            user_data=farm.pool.pool.launch.user_data,  # the same config: the same spec tag
        )
        assert sim.launch_now(spec).error is None

    # A previous controller launched two slaves long ago (one since terminated) and one just
    # before it was killed; another fleet shares the account.
    previous_launch(2)
    previous_launch(1, fleet="other-fleet")
    old, gone = farm.launched()
    sim.terminate_now([gone.instance_id])
    await until(998)
    previous_launch(1)
    booting = farm.launched()[-1]

    await until(1000)
    farm.group_ready()
    farm.load(2.0)  # band [2, 4]: the three the fleet holds are enough
    async with running(farm.pool):
        assert await farm.ups() == [(1000, old.instance_id)]  # at setup, before any cycle
        await until(1005)
        farm.ready(old)
        await until(1015)  # the booting one is running by 1003, announced at the 1010 cycle
        assert await farm.ups() == [(1000, old.instance_id), (1010, booting.instance_id)]
        farm.ready(booting)
        await until(1305)  # far past request_timeout, scale_in_after and drain_seconds

        decisions = await farm.decisions()
        assert [d.at for d in decisions] == [1000 + 10 * n for n in range(31)]
        assert {(d.launch, d.remove, d.desired) for d in decisions} == {(0, (), 2)}
        fleet = (await farm.seen(FleetObserved))[-1]
        assert {(s.instance_id, s.state, s.instance_type, s.zone) for s in fleet.members} == {
            (old.instance_id, "ready", "c5.large", "sim-1b"),
            (booting.instance_id, "ready", "c5.large", "sim-1b"),
        }
        assert len(farm.launched()) == 3  # nothing launched by the new process
        assert {i.instance_id for i in farm.live()} == {old.instance_id, booting.instance_id}
        assert await farm.downs() == await farm.drains() == []


# (2) launches wait for the security group


@looptime
async def test_launches_wait_for_the_security_group() -> None:
    farm = Farm(config())
    farm.load(1.0)
    with capture_logs() as logs:
        async with running(farm.pool):
            await until(25)
            assert [(d.at, d.launch) for d in await farm.decisions()] == [(0, 1), (10, 1), (20, 1)]
            assert farm.launched() == []
            assert len(events(logs, "launch.waiting")) == 3

            farm.group_ready()
            await until(35)
            launched = one(farm.launched())
            assert (launched.launched_at, launched.security_groups) == (30, (GROUP,))
            # announced at launch: SlaveHealth probes it until it answers
            assert await farm.ups() == [(30, launched.instance_id)]


@looptime
async def test_a_configured_security_group_needs_no_ready_message() -> None:
    farm = Farm(config(slave={"security_group": "sg-user"}))
    farm.load(1.0)
    async with running(farm.pool):
        await until(5)
        launched = one(farm.launched())
        assert (launched.launched_at, launched.security_groups) == (0, ("sg-user",))
        await until(15)
        assert await farm.ups() == [(0, launched.instance_id)]  # at launch


@looptime
async def test_messages_waiting_at_a_cycle_are_all_read_before_it_decides() -> None:
    farm = Farm(config())
    farm.group_ready()
    farm.load(1.0)  # queued behind SecurityGroupReady; the first cycle must see both
    async with running(farm.pool):
        await until(5)
        assert [(d.at, d.launch) for d in await farm.decisions()] == [(0, 1)]
        assert one(farm.launched()).launched_at == 0


# (3) capacity errors: next type now, first type again after the cooldown


@looptime
async def test_a_capacity_error_cools_the_type_down_and_the_next_type_launches_at_once() -> None:
    farm = Farm(config(), capacity_errors_for={"m5.large"})
    farm.group_ready()
    farm.load(1.0)
    async with running(farm.pool):
        await until(5)
        assert await farm.errors() == [(0, ErrorKind.CAPACITY, "RunInstances")]
        first = one(farm.launched())
        assert (first.instance_type, first.launched_at) == ("c5.large", 0)

        # m5.large has capacity again, but its cooldown (until 300) is not over yet.
        farm.sim.capacity_errors_for.clear()
        farm.load(2.0)  # a reading that calls for more: a cycle at once
        await until(15)
        second = farm.launched()[-1]
        assert (second.instance_type, second.launched_at) == ("c5.large", 5)
        await until(285)
        farm.load(3.0)
        await until(295)
        third = farm.launched()[-1]
        assert (third.instance_type, third.launched_at) == ("c5.large", 285)

        await until(301)
        farm.load(4.0)  # the cooldown ended at 300
        await until(305)
        fourth = farm.launched()[-1]
        assert (fourth.instance_type, fourth.launched_at) == ("m5.large", 301)
        assert len(farm.launched()) == 4
        assert farm.sim.counters.capacity_errors == 1  # the cooling type was not asked again
        assert await farm.errors() == [(0, ErrorKind.CAPACITY, "RunInstances")]


@looptime
async def test_every_type_refused_probes_capacity_on_a_growing_backoff() -> None:
    farm = Farm(config(), capacity_errors_for={"m5.large", "c5.large"})
    farm.group_ready()
    farm.load(1.0)
    with capture_logs() as logs:
        async with running(farm.pool):
            await until(105)
            # Both types refused at 0; then one probe at 10, 40 (+30) and 100 (+60).
            assert farm.launched() == []
            assert [e[0] for e in await farm.errors()] == [0, 0, 10, 40, 100]
            assert farm.sim.counters.capacity_errors == 5
            assert events(logs, "launch.no_type_available")
            farm.sim.capacity_errors_for.clear()
            await until(225)
    # Capacity is back: the next probe (100 + 120) launches the type that cools soonest (the
    # probes take turns, each refusal restarting that type's cooldown).
    assert [(i.instance_type, i.launched_at) for i in farm.launched()] == [("c5.large", 220)]


@looptime
@pytest.mark.parametrize(
    ("kind", "code"),
    [
        (ErrorKind.INVALID, "InvalidAMIID.NotFound"),
        (ErrorKind.AUTH, "UnauthorizedOperation"),
        (ErrorKind.LIMIT, "MaxSpotInstanceCountExceeded"),
    ],
)
async def test_a_refusal_that_would_repeat_is_not_asked_every_cycle(kind, code) -> None:
    # A wrong image id, a missing permission or an account limit: asking again each poll would
    # only be refused again. Each type is asked once, then the growing probe backoff applies;
    # a SIGHUP with new launch settings is tried at once.
    cfg = config()
    farm = Farm(cfg)
    farm.sim.launch_refusal = (kind, code)
    farm.group_ready()
    farm.load(1.0)
    async with running(farm.pool):
        await until(105)
        assert [(e[0], e[1]) for e in await farm.errors()] == [
            (t, kind) for t in (0, 0, 10, 40, 100)
        ]
        assert farm.launched() == []

        farm.sim.launch_refusal = None
        fixed = dataclasses.replace(
            cfg, slave=dataclasses.replace(cfg.slave, image_id="ami-0fedcba9876543210")
        )
        farm.pool.reconfigure(fixed)
        farm.load(1.0)
        await until(115)
    # the new settings were tried at the next cycle (110), not at the probe due at 220
    assert [(i.instance_type, i.launched_at) for i in farm.launched()] == [("m5.large", 110)]


@looptime
async def test_an_image_ec2_does_not_have_is_an_error_naming_the_setting() -> None:
    farm = Farm(config())
    farm.sim.launch_refusal = (ErrorKind.INVALID, "InvalidAMIID.NotFound")
    farm.group_ready()
    farm.load(1.0)
    with capture_logs() as logs:
        async with running(farm.pool):
            await until(5)
    refused = events(logs, "ec2.error")
    assert refused and all(e["log_level"] == "error" for e in refused)
    assert "[slave] image_id" in refused[0]["hint"] and "no such image" in refused[0]["hint"]


@looptime
async def test_a_capacity_error_is_a_warning_without_a_hint() -> None:
    farm = Farm(config(), capacity_errors_for={"m5.large"})
    farm.group_ready()
    farm.load(1.0)
    with capture_logs() as logs:
        async with running(farm.pool):
            await until(5)
    (refused,) = events(logs, "ec2.error")
    assert refused["log_level"] == "warning" and "hint" not in refused


# (4) spot price above the bid


@looptime
async def test_a_spot_price_above_the_bid_waits_and_launches_once_it_drops() -> None:
    farm = Farm(config(slave={"spot_bid": 0.05}), spot_price=0.10)
    farm.group_ready()
    farm.load(1.0)
    with capture_logs() as logs:
        async with running(farm.pool):
            await until(25)
            assert farm.launched() == []
            assert [(d.at, d.launch) for d in await farm.decisions()] == [(0, 1), (10, 1), (20, 1)]
            waits = events(logs, "launch.waiting_for_price")
            assert {(w["instance_type"], w["spot_price"], w["spot_bid"]) for w in waits} == {
                ("m5.large", 0.10, 0.05),
                ("c5.large", 0.10, 0.05),
            }
            assert len(waits) == 6  # both types, every cycle

            farm.sim.price = 0.03
            await until(35)
            launched = one(farm.launched())
            assert (launched.instance_type, launched.launched_at) == ("m5.large", 30)
    assert await farm.errors() == []  # waiting is not an error: EC2 was never asked


# (5) boot timeout


@pytest.mark.parametrize("zone", ["", "sim-1a"])
@looptime
async def test_an_instance_never_ready_is_terminated_and_its_type_cooled_down(zone: str) -> None:
    farm = Farm(config(scaling={"request_timeout": 120.0}, slave={"availability_zone": zone}))
    farm.group_ready()
    farm.load(1.0)
    async with running(farm.pool):
        await until(125)
        stuck = one(farm.launched())
        assert (stuck.instance_type, stuck.launched_at, stuck.ended_at) == ("m5.large", 0, None)

        await until(135)  # 130 - 0 > 120: given up, and replaced by the next type at once
        assert (stuck.ended_at, stuck.state_reason) == (130, "Client.UserInitiatedShutdown")
        replacement = farm.launched()[-1]
        assert (replacement.instance_type, replacement.launched_at) == ("c5.large", 130)
        await until(145)
        assert await farm.downs() == [(140, stuck.instance_id, LostReason.UNREACHABLE)]
        assert await farm.drains() == []  # never listed, so nothing to drain
        farm.ready(replacement)
        assert len(farm.launched()) == 2


@looptime
async def test_an_unfilled_spot_request_is_cancelled_and_the_next_type_tried() -> None:
    farm = Farm(config(scaling={"request_timeout": 120.0}), unfilled_rate=1.0)
    farm.group_ready()
    farm.load(1.0)
    async with running(farm.pool):
        await until(125)
        (request,) = farm.sim.open_requests()
        assert (request.instance_type, request.created_at) == ("m5.large", 0)
        fleet = (await farm.seen(FleetObserved))[-1]
        assert fleet.pending_requests == 1  # counted as capacity: no second launch meanwhile

        await until(135)
        assert request.state == "cancelled"
        (retry,) = farm.sim.open_requests()
        assert (retry.instance_type, retry.created_at) == ("c5.large", 130)
    assert farm.launched() == []


# (6) scale-in


@looptime
async def test_scale_in_drains_first_and_terminates_after_the_drain_period() -> None:
    farm = Farm(config())
    farm.group_ready()
    farm.load(1.0)
    async with running(farm.pool):
        await until(15)
        slave = one(farm.launched())
        farm.ready(slave)

        await until(45)
        farm.load(0.0)  # below the table: the band is [0, 0]
        await until(105)  # asked for fewer since the 50 cycle: no removal before 50 + 60
        assert await farm.drains() == []
        reasons = [d.reason for d in await farm.decisions() if d.at >= 50]
        assert all("holding surplus" in r for r in reasons), reasons

        await until(111)
        assert await farm.drains() == [(110, slave.instance_id, LostReason.SCALE_IN)]
        assert [d.remove for d in await farm.decisions() if d.at == 110] == [(slave.instance_id,)]
        await until(112)
        # RenderfarmWriter rewrote renderfarm.conf without it and Apache reloaded: the
        # drain runs from here, so GBrowse has stopped sending it renders for drain_seconds
        farm.bus.publish(RenderfarmWritten(at=112, addresses=(), reloaded=True))
        await until(141)
        assert slave.ended_at is None  # still rendering what it had
        await until(143)
        assert slave.ended_at == 142  # 112 + drain_seconds
        assert await farm.downs() == []  # EC2 confirms at the next describe
        await until(155)
        assert await farm.downs() == [(150, slave.instance_id, LostReason.SCALE_IN)]
        assert len(farm.launched()) == 1
        assert (await farm.seen(FleetObserved))[-1].members == ()


async def scaled_in_at_110(farm: Farm) -> SimInstance:
    """One slave, ready at 15; the load goes at 45; after the 60 s dwell it is drained at 110
    (the set-up of the scale-in test above). Returns it at 115."""
    farm.group_ready()
    farm.load(1.0)
    await until(15)
    slave = one(farm.launched())
    farm.ready(slave)
    await until(45)
    farm.load(0.0)
    await until(115)
    assert await farm.drains() == [(110, slave.instance_id, LostReason.SCALE_IN)]
    return slave


@looptime
async def test_a_drained_slave_waits_for_renderfarm_conf_to_drop_it() -> None:
    """With drain_seconds = 0 it goes as soon as renderfarm.conf no longer lists it, never
    before; a rewrite that still lists it does not count."""
    farm = Farm(config(scaling={"drain_seconds": 0.0}))
    async with running(farm.pool):
        slave = await scaled_in_at_110(farm)
        url = f"http://{slave.private_ip}:8101"
        farm.bus.publish(RenderfarmWritten(at=115, addresses=(url,), reloaded=True))
        await until(118)
        assert slave.ended_at is None
        farm.bus.publish(RenderfarmWritten(at=118, addresses=(), reloaded=True))
        await until(119)
        assert slave.ended_at == 118


@looptime
async def test_a_drain_never_confirmed_still_ends_after_a_grace() -> None:
    """No RenderfarmWritten (the writer cannot write or reload): terminated UNLIST_GRACE
    after the drain delay anyway, never left running."""
    farm = Farm(config())
    async with running(farm.pool):
        slave = await scaled_in_at_110(farm)
        await until(110 + 30 + UNLIST_GRACE - 1)
        assert slave.ended_at is None
        await until(110 + 30 + UNLIST_GRACE + 1)
        assert slave.ended_at == 110 + 30 + UNLIST_GRACE


# (7) a lost slave


async def lose_a_ready_slave(farm: Farm) -> tuple[SimInstance, InstanceId]:
    """One slave launched at 0 (the farm was given its group and a load before it ran), ready,
    then reported lost (unreachable) at 25."""
    await until(15)
    lost = one(farm.launched())
    farm.ready(lost)
    await until(25)
    iid = InstanceId(lost.instance_id)
    farm.bus.publish(
        SlaveLost(at=now(), instance_id=iid, address=lost.private_ip, reason=LostReason.UNREACHABLE)
    )
    return lost, iid


@looptime
async def test_a_lost_slave_is_unlisted_then_terminated_at_once_and_replaced() -> None:
    farm = Farm(config())
    farm.group_ready()
    farm.load(1.0)
    async with running(farm.pool):
        lost, iid = await lose_a_ready_slave(farm)
        await until(26)
        assert await farm.drains() == [(25, iid, LostReason.UNREACHABLE)]
        replacement = farm.launched()[-1]
        assert replacement.launched_at == 25  # replaced at once
        # still listed: its address could go to another instance while GBrowse sends to it
        assert lost.ended_at is None
        farm.bus.publish(RenderfarmWritten(at=26, addresses=(), reloaded=True))
        await until(27)
        assert lost.ended_at == 26  # no drain delay once unlisted: it serves nothing any more
        await until(36)  # the urgent cycle did not describe; the poll at 30 sees it gone
        assert await farm.downs() == [(30, iid, LostReason.UNREACHABLE)]
        assert await farm.ups() == [(0, iid), (25, replacement.instance_id)]


@looptime
async def test_a_lost_slave_the_writer_never_unlists_still_goes_after_the_grace() -> None:
    farm = Farm(config())
    farm.group_ready()
    farm.load(1.0)
    async with running(farm.pool):
        lost, _ = await lose_a_ready_slave(farm)
        await until(25 + UNLIST_GRACE + 1)
        assert lost.ended_at == 25 + UNLIST_GRACE  # a broken writer never leaks an instance


# (8) interruption warnings


@looptime
async def test_an_interruption_warning_drains_at_once_and_launches_the_replacement_first() -> None:
    farm = Farm(config())
    farm.group_ready()
    farm.load(1.0)
    async with running(farm.pool):
        await until(15)
        warned = one(farm.launched())
        farm.ready(warned)
        farm.sim.reclaim_at(warned.instance_id, 25 + 120)
        await until(25)
        iid = InstanceId(warned.instance_id)
        farm.bus.publish(InterruptionWarning(at=now(), instance_id=iid, kind="interruption"))
        await until(26)
        assert await farm.drains() == [(25, iid, LostReason.INTERRUPTION_WARNING)]
        replacement = farm.launched()[-1]
        assert replacement.launched_at == 25
        assert warned.ended_at is None  # renders in flight may still finish
        farm.bus.publish(RenderfarmWritten(at=26, addresses=(), reloaded=True))

        await until(57)
        assert (
            warned.ended_at == 56
        )  # drain_seconds after it left renderfarm.conf, before the reclaim
        await until(66)  # the urgent cycle did not move the polls: 60 sees it ended
        assert await farm.downs() == [(60, iid, LostReason.INTERRUPTION_WARNING)]
        assert len(farm.launched()) == 2


@looptime
async def test_a_rebalance_recommendation_launches_a_replacement_without_draining() -> None:
    farm = Farm(config())
    farm.group_ready()
    farm.load(1.0)
    async with running(farm.pool):
        await until(15)
        warned = one(farm.launched())
        farm.ready(warned)
        await until(25)
        iid = InstanceId(warned.instance_id)
        farm.bus.publish(InterruptionWarning(at=now(), instance_id=iid, kind="rebalance"))
        await until(26)
        replacement = farm.launched()[-1]
        assert replacement.launched_at == 25
        assert await farm.drains() == []
        assert warned.ended_at is None

        # The surplus goes after the dwell, and the warned slave is the one that goes.
        farm.ready(replacement)
        await until(91)  # at the first poll after the dwell (from 25)
        assert await farm.drains() == [(90, iid, LostReason.SCALE_IN)]
        assert len(farm.launched()) == 2


# (9) spot reclaims an instance


@looptime
async def test_an_interrupted_instance_is_reported_and_replaced() -> None:
    farm = Farm(config())
    farm.group_ready()
    farm.load(1.0)
    async with running(farm.pool):
        await until(15)
        victim = one(farm.launched())
        farm.ready(victim)
        farm.sim.reclaim_at(victim.instance_id, 22)
        await until(35)
        assert victim.state_reason == SPOT_INTERRUPTION_REASON
        assert await farm.downs() == [(30, victim.instance_id, LostReason.INTERRUPTED)]
        replacement = farm.launched()[-1]
        assert replacement.launched_at == 30
        assert farm.sim.counters.terminated == 0  # nothing left for SpotPool to terminate
        assert await farm.drains() == []


# (10) a failed describe holds the fleet


@looptime
async def test_a_failed_describe_holds_the_fleet() -> None:
    farm = Farm(config())
    farm.group_ready()
    farm.load(1.0)
    async with running(farm.pool):
        await until(15)
        slave = one(farm.launched())
        farm.ready(slave)
        await until(25)
        farm.sim.describe_fails = True
        await until(35)
        farm.load(2.0)  # would launch one more, at once, had the last describe worked
        await until(105)
        assert await farm.errors() == [
            (t, ErrorKind.UNAVAILABLE, "DescribeInstances") for t in range(30, 101, 10)
        ]
        assert [d.at for d in await farm.decisions()] == [0, 10, 20]  # no decision on no data
        assert len(farm.launched()) == 1
        assert slave.ended_at is None
        assert await farm.downs() == []  # an empty answer is not an empty fleet

        farm.sim.describe_fails = False
        await until(115)
        assert [(d.at, d.launch) for d in (await farm.decisions())[-1:]] == [(110, 1)]
        assert farm.launched()[-1].launched_at == 110


# (11) a lost load sensor holds the fleet


@looptime
async def test_before_the_first_reading_the_sensor_is_not_called_lost() -> None:
    farm = Farm(config())
    farm.group_ready()
    async with running(farm.pool):
        await until(5)
        farm.load(2.0)
        await until(15)
        reasons = [d.reason for d in await farm.decisions()]
    assert reasons[0].startswith("no load reading yet: holding at 0"), reasons
    assert not any("sensor lost" in r for r in reasons), reasons


@looptime
async def test_a_lost_sensor_never_scales_in() -> None:
    farm = Farm(config())
    farm.group_ready()
    farm.load(2.0)
    async with running(farm.pool):
        await until(15)
        slaves = farm.launched()
        assert len(slaves) == 2
        farm.ready(*slaves)
        await until(25)
        farm.bus.publish(SensorLost(at=now(), since=now(), reason="connection refused"))
        await until(305)  # five times scale_in_after
        assert await farm.drains() == []
        held = [d for d in await farm.decisions() if d.at >= 30]
        assert {(d.load_rps, d.desired, d.launch, d.remove) for d in held} == {(None, 2, 0, ())}
        assert all(d.reason.startswith("load sensor lost: holding at 2") for d in held)
        assert len(farm.live()) == 2

        # Data again, and it says zero: the dwell counts from the first sample, not the outage.
        farm.load(0.0)
        await until(365)
        assert await farm.drains() == []
        await until(375)
        assert {(t, r) for t, _, r in await farm.drains()} == {(370, LostReason.SCALE_IN)}


# (12) stop: teardown, leave, dry run


@looptime
async def test_stop_with_on_exit_teardown_terminates_the_whole_fleet() -> None:
    farm = Farm(config())
    farm.group_ready()
    farm.load(2.0)
    async with running(farm.pool):
        await until(15)
        farm.ready(*farm.launched())
        ids = {i.instance_id for i in farm.launched()}
        assert len(farm.live()) == 2
    assert farm.live() == []
    assert farm.sim.counters.terminated == 2
    downs = await farm.downs()
    assert {(iid, reason) for _, iid, reason in downs} == {
        (iid, LostReason.TEARDOWN) for iid in ids
    }


@looptime
async def test_stop_with_on_exit_leave_terminates_nothing() -> None:
    farm = Farm(config(controller={"on_exit": "leave"}))
    farm.group_ready()
    farm.load(2.0)
    with capture_logs() as logs:
        async with running(farm.pool):
            await until(15)
    assert len(farm.live()) == 2
    assert farm.sim.counters.terminated == 0
    assert await farm.downs() == []
    assert [e["instances"] for e in events(logs, "fleet.left_running")] == [2]


@looptime
async def test_a_dry_run_creates_nothing_and_logs_what_it_would_do() -> None:
    farm = Farm(config(), dry_run=True)
    farm.group_ready("sg-dryrun")  # what FirewallKeeper publishes in a dry run
    farm.load(2.0)
    with capture_logs() as logs:
        async with running(farm.pool):
            await until(25)
    assert farm.launched() == [] and farm.sim.counters.launched == 0
    would = events(logs, "dry_run.would_launch")
    assert [(w["count"], w["instance_type"], w["check"]) for w in would] == [
        (2, "m5.large", "permitted")
    ] * 3
    decisions = await farm.decisions()
    assert {(d.launch, d.dry_run) for d in decisions} == {(2, True)}
    assert [e["instances"] for e in events(logs, "dry_run.would_teardown")] == [[]]
    assert await farm.errors() == []  # DryRunOperation is the good answer, not an error


@pytest.mark.parametrize(
    ("kind", "code", "words"),
    [
        (ErrorKind.INVALID, "InvalidAMIID.Malformed", "[cluster.small] image_id 'ami-1'"),
        (ErrorKind.INVALID, "InvalidSubnetID.NotFound", "[cluster.small] subnet 'subnet-9'"),
        (ErrorKind.INVALID, "InvalidKeyPair.NotFound", "[cluster.small] key pair 'k'"),
        (ErrorKind.INVALID, "InvalidSnapshot.NotFound", "snap-1"),
        (ErrorKind.AUTH, "UnauthorizedOperation", "controller iam-policy"),
        (ErrorKind.CAPACITY, "InsufficientInstanceCapacity", None),
        (ErrorKind.INVALID, "IdempotentParameterMismatch", None),
    ],
)
def test_which_launch_refusals_name_a_setting(kind, code, words) -> None:
    from controller.cloud.port import ProviderError
    from controller.policy.launch_plans import launch_error_hint
    from controller.policy.pool_profile import LaunchSettings

    launch = LaunchSettings(
        instance_types=("m5.large",),
        image_id="ami-1",
        image_key="[cluster.small] image_id",
        availability_zone="",
        subnet="subnet-9",
        key_name="k",
        spot_bid=None,
        snapshots=("snap-1",),
        user_data="",
    )
    error = ProviderError(kind=kind, code=code, message="", operation="RunInstances")
    hint = launch_error_hint(error, launch)
    assert (hint is None) if words is None else (words in (hint or ""))
