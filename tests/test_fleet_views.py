"""The reconciler's fleet views (controller.policy.fleet_views) are built again only when its
fleet changed; at every change a replay scores, and across a reload that makes slaves old, each
must equal the same view built afresh from the tracked set."""

from __future__ import annotations

import contextlib
import dataclasses
import math

import pytest

from controller.cloud.port import CloudInstance, FleetView, InstanceState, OpResult
from controller.cloud.simcloud import SimCloud
from controller.config.schema import Config, LoadRow, LoadTableSection
from controller.messages import (
    FleetObserved,
    InstanceId,
    InstanceUp,
    InterruptionWarning,
    LoadSample,
    Role,
    SlaveView,
)
from controller.policy.factory import make_policy
from controller.policy.fleet_plans import DescribeFleet, PriceCall, Publish
from controller.policy.lifecycle import Phase
from controller.policy.pool_profile import PoolMember, SlaveProfile
from controller.policy.reconciler import FleetReconciler
from controller.simulation.fleet_executor import FleetExecutor
from controller.simulation.trace import Trace, load_rate

# requests/sec per minute: quiet, a climb, a plateau, a drop, a burst, quiet
RATES = [1.0] * 20 + [1.0 + 0.5 * k for k in range(24)] + [13.0] * 50 + [2.0] * 40 + [9.0] * 20


def faulty_config() -> Config:
    cfg = Config(
        load_table=LoadTableSection(
            rows=(
                LoadRow(rps=0.1, min_instances=1, max_instances=4),
                LoadRow(rps=4.0, min_instances=4, max_instances=30),
            )
        )
    )
    return dataclasses.replace(
        cfg,
        scaling=dataclasses.replace(cfg.scaling, slave_capacity_rps=0.5, drain_seconds=20.0),
        slave=dataclasses.replace(
            cfg.slave,
            image_id="ami-0123456789abcdef0",
            instance_types=("m5.large", "c5.large"),
            spot_bid=0.08,
        ),
        simulate=dataclasses.replace(
            cfg.simulate,
            interruption_rate_per_hour=1.5,
            unfilled_rate=0.15,
            capacity_error_rate=0.15,
            boot_spread=0.3,
        ),
    )


def fresh_members(pool: FleetReconciler) -> tuple[PoolMember, ...]:
    return tuple(
        PoolMember(
            instance_id=t.instance_id,
            address=t.address,
            hostname=t.hostname,
            launched_at=t.launched_at,
            ready=t.phase is Phase.READY,
            draining=t.phase in (Phase.DRAINING, Phase.TERMINATING),
            interrupted=t.interrupted,
        )
        for t in pool.tracked.values()
    )


def fresh_views(pool: FleetReconciler) -> tuple[SlaveView, ...]:
    return tuple(
        SlaveView(
            instance_id=t.instance_id,
            address=t.address,
            state=str(t.phase),
            healthy=t.phase is Phase.READY,
            since=t.since_wall,
            instance_type=t.instance_type,
            zone=t.zone,
        )
        for t in pool.tracked.values()
    )


def fresh_drain_due(pool: FleetReconciler) -> float:
    return min(
        (
            t.drain_until
            for t in pool.tracked.values()
            if t.phase is Phase.DRAINING
            and t.drain_until is not None
            and t.drain_until > pool._terminate_tried_at
        ),
        default=math.inf,
    )


def fresh_cost(pool: FleetReconciler) -> float:
    return sum(pool._price(t.instance_type, t.zone) for t in pool.tracked.values())


@pytest.mark.parametrize("seed", [1, 5])
def test_every_cached_view_equals_a_fresh_one_at_every_change(seed):
    cfg = faulty_config()
    trace = Trace(path="ramp", start=0.0, bucket_seconds=60.0, rps=tuple(RATES))
    clock = [trace.start]
    cloud = SimCloud.from_config(cfg, clock=lambda: clock[0], seed=seed)
    executor: list[FleetExecutor] = []
    checks = {"changes": 0, "draining": 0, "old": 0}

    def check(t: float) -> None:
        if not executor:
            return
        pool = executor[0].pool
        assert pool.members() == fresh_members(pool)
        assert pool._cost_per_hour() == fresh_cost(pool)
        assert pool._any_zone() == next((t.zone for t in pool.tracked.values() if t.zone), "")
        assert pool.next_drain_due() == fresh_drain_due(pool)
        staying = [t for t in pool.tracked.values() if t.phase in (Phase.BOOTING, Phase.READY)]
        staying = [t for t in staying if not t.interrupted]
        assert pool._scale_out_count() == len(staying) + pool.pending_requests
        current = pool.current_spec()
        pool.marked(pool.members())
        old = sum(1 for t in pool.tracked.values() if t.spec and t.spec != current)
        assert pool._old_count == old
        pool.publish_fleet()
        published = pool.outbox[-1]
        assert isinstance(published, Publish) and isinstance(published.message, FleetObserved)
        assert published.message.members == fresh_views(pool)
        checks["changes"] += 1
        checks["draining"] += any(t.phase is Phase.DRAINING for t in pool.tracked.values())
        checks["old"] += old > 0

    executor.append(
        FleetExecutor(
            config=cfg,
            policy=make_policy("ours", cfg),
            cloud=cloud,
            clock=lambda: clock[0],
            set_clock=lambda t: clock.__setitem__(0, t),
            rate=load_rate(trace),
            on_change=check,
        )
    )
    ex = executor[0]
    half = len(RATES) // 2
    for j in range(len(RATES)):
        if j == half:  # a new image: every slave launched so far is old and is replaced
            new = dataclasses.replace(cfg.slave, image_id="ami-0fedcba9876543210")
            ex.pool.reconfigure(dataclasses.replace(cfg, slave=new))
        ex.run_until(trace.time(j))
        if j > 0 and RATES[j] != RATES[j - 1]:
            ex.rate_changed(trace.time(j))
        check(trace.time(j))
    assert checks["changes"] > 300
    assert checks["draining"] > 10  # drains were looked at, not only an idle fleet
    assert checks["old"] > 10  # and a fleet being replaced
    assert cloud.counters.capacity_errors > 0 and cloud.counters.unfilled > 0


def test_an_address_ec2_gives_after_the_launch_reaches_the_members_and_the_status():
    """EC2 may describe a new instance without its private address; the views built then are not
    shown again once a describe gives the address (the daemon's case: SimCloud gives it at once)."""
    cfg = faulty_config()
    now = [100.0]
    pool = FleetReconciler(
        config=cfg,
        policy=make_policy("gbrowse", cfg),
        profile=SlaveProfile(cfg),
        clock=lambda: now[0],
        wall_clock=lambda: 1e9 + now[0],
    )
    pool.handle(LoadSample(at=now[0], rps=1.0, window_rps=1.0))  # the table keeps 1 to 4
    iid = InstanceId("i-0000000000000001")

    def describe(state: InstanceState, ip: str | None) -> None:
        instance = CloudInstance(
            instance_id=iid,
            state=state,
            private_ip=ip,
            instance_type="m5.large",
            zone="us-east-1a",
            launched_at=1e9 + 90.0,
            role=Role.SLAVE,
        )
        plan = pool.reconcile()
        call = next(plan)
        assert isinstance(call, DescribeFleet)
        with contextlib.suppress(StopIteration):
            call = plan.send(FleetView(instances=(instance,)))
            while True:
                call = plan.send(0.035 if isinstance(call, PriceCall) else OpResult())

    describe(InstanceState.PENDING, None)
    assert [m.address for m in pool.members()] == [""]
    now[0] += 30.0
    describe(InstanceState.RUNNING, "10.0.0.7")
    published = [p.message for p in pool.take_outbox() if isinstance(p, Publish)]
    assert [m.address for m in pool.members()] == ["10.0.0.7"]
    assert [m.address for m in published[-1].members] == ["10.0.0.7"]
    assert any(isinstance(m, InstanceUp) for m in published)
    assert pool._scale_out_count() == 1
    # a rebalance recommendation drains nothing, but the slave no longer counts as staying
    pool.handle(InterruptionWarning(at=now[0], instance_id=iid, kind="rebalance"))
    assert [m.interrupted for m in pool.members()] == [True]
    assert pool._scale_out_count() == 0
