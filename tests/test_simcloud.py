"""SimCloud through the Cloud port, on a clock the test moves."""

from __future__ import annotations

import dataclasses
import ipaddress

import pytest

from controller.cloud.port import SPOT_INTERRUPTION_REASON, IngressRule, InstanceState, LaunchSpec
from controller.cloud.sim_records import NOTICE_SECONDS
from controller.cloud.simcloud import SimCloud
from controller.config.schema import Config
from controller.messages import ErrorKind, Role


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def spec(count: int = 1, token: str = "", **kw) -> LaunchSpec:
    return LaunchSpec(
        fleet="f1",
        role=Role.SLAVE,
        image_id="ami-1",
        instance_type="m5.large",
        count=count,
        client_token=token,
        **kw,
    )


def cloud(clock: Clock, **kw) -> SimCloud:
    kw.setdefault("boot_spread", 0.0)
    return SimCloud(clock=clock, **kw)


async def test_instances_boot_then_run_and_bill_per_second():
    clock = Clock()
    sim = cloud(clock, boot_seconds=90, spot_price=0.036)
    result = await sim.launch(spec(2))
    assert result.error is None and len(result.instances) == 2
    assert {i.state for i in result.instances} == {InstanceState.PENDING}
    ids = [i.instance_id for i in result.instances]
    for inst in result.instances:
        assert ipaddress.ip_address(inst.private_ip).is_loopback

    clock.now += 89
    assert not sim.booted(ids[0])
    clock.now += 1
    assert sim.booted(ids[0])
    view = await sim.describe_fleet("f1")
    assert {i.state for i in view.instances} == {InstanceState.RUNNING}
    assert (await sim.describe_fleet("other")).instances == ()

    clock.now += 3600 - 90
    assert sim.cost() == pytest.approx(2 * 0.036)
    assert (await sim.terminate(ids)).ok
    clock.now += 600
    assert sim.cost() == pytest.approx(2 * 0.036)  # billing stopped at termination
    assert await sim.wait_terminated(ids, timeout=10) == ()
    states = {i.state for i in (await sim.describe_fleet("f1")).instances}
    assert states == {InstanceState.TERMINATED}


async def test_billing_has_a_one_minute_minimum():
    clock = Clock()
    sim = cloud(clock, spot_price=3.6)
    ids = [i.instance_id for i in (await sim.launch(spec())).instances]
    clock.now += 10
    await sim.terminate(ids)
    assert sim.billed_seconds() == pytest.approx(60)


async def test_boot_times_spread_around_the_mean():
    clock = Clock()
    sim = SimCloud(clock=clock, boot_seconds=100, boot_spread=0.2, seed=7)
    result = await sim.launch(spec(50))
    boots = [sim.instance(i.instance_id).ready_at - clock.now for i in result.instances]
    assert min(boots) >= 80 and max(boots) <= 120
    assert max(boots) - min(boots) > 10


async def test_capacity_errors_and_unfilled_requests():
    clock = Clock()
    refused = await cloud(clock, capacity_error_rate=1.0).launch(spec(3))
    assert refused.instances == ()
    assert refused.error is not None and refused.error.kind is ErrorKind.CAPACITY
    assert refused.error.code == "InsufficientInstanceCapacity"

    sim = cloud(clock, unfilled_rate=1.0)
    result = await sim.launch(spec(2))
    assert result.error is None and result.instances == ()
    view = await sim.describe_fleet("f1")
    assert [r.state for r in view.requests] == ["open", "open"]
    assert (await sim.cancel_requests([r.request_id for r in view.requests])).ok
    assert (await sim.describe_fleet("f1")).requests == ()
    assert sim.open_requests() == []


async def test_spot_interruption_comes_with_a_two_minute_notice():
    clock = Clock()
    sim = cloud(clock, interruption_rate_per_hour=1.0, seed=3)  # about one an hour
    [inst] = (await sim.launch(spec())).instances
    record = sim.instance(inst.instance_id)
    assert record is not None and record.interrupt_at is not None
    assert record.interrupt_at - clock.now > NOTICE_SECONDS
    clock.now = record.interrupt_at - NOTICE_SECONDS - 1
    assert sim.notices() == ()
    clock.now = record.interrupt_at - 1
    [notice] = sim.notices()
    assert notice.instance_id == inst.instance_id
    assert notice.action_at - notice.notice_at == NOTICE_SECONDS
    clock.now = record.interrupt_at + 1
    [gone] = (await sim.describe_fleet("f1")).instances
    assert gone.state is InstanceState.TERMINATED
    assert gone.state_reason == SPOT_INTERRUPTION_REASON
    assert sim.counters.interrupted == 1
    assert sim.billed_count() == 0


async def test_bid_below_the_spot_price_is_refused():
    sim = cloud(Clock(), spot_price=0.05)
    result = await sim.launch(spec(max_price=0.01))
    assert result.error is not None and result.error.kind is ErrorKind.PRICE


async def test_dry_run_and_idempotent_client_token():
    sim = cloud(Clock())
    dry = await sim.launch(spec(dry_run=True))
    assert dry.error is not None and dry.error.kind is ErrorKind.DRY_RUN_OK
    assert (await sim.describe_fleet("f1")).instances == ()
    first = await sim.launch(spec(2, token="t-1"))
    again = await sim.launch(spec(2, token="t-1"))
    assert first == again
    assert len((await sim.describe_fleet("f1")).instances) == 2
    assert (await sim.terminate([first.instances[0].instance_id], dry_run=True)).ok
    assert sim.billed_count() == 2


async def test_terminating_an_unknown_instance_reports_it_not_found():
    sim = cloud(Clock())
    known = (await sim.launch(spec(1))).instances[0].instance_id
    result = await sim.terminate(["i-nope", known])
    assert result.ok and result.not_found == ("i-nope",)
    assert sim.billed_count() == 0  # the known one was terminated all the same


async def test_a_just_launched_instance_is_unseen_and_unknown_for_the_visibility_lag():
    clock = Clock()
    sim = SimCloud(clock=clock, boot_seconds=1.0, boot_spread=0.0, visibility_lag=8.0)
    iid = (await sim.launch(spec(1))).instances[0].instance_id
    clock.now += 7.0
    assert (await sim.describe_fleet("f1")).instances == ()
    assert (await sim.terminate([iid])).not_found == (iid,)
    assert sim.billed_count() == 1  # EC2 did not know it, so it runs on
    clock.now += 1.0
    assert [i.instance_id for i in (await sim.describe_fleet("f1")).instances] == [iid]
    assert (await sim.terminate([iid])).not_found == ()
    assert sim.billed_count() == 0


async def test_security_groups_in_memory():
    sim = cloud(Clock())
    vpc = await sim.subnet_vpc("")
    assert vpc is not None
    group_id, err = await sim.create_security_group(
        name="controller-f1", description="slaves", vpc_id=vpc, fleet="f1"
    )
    assert err is None and group_id
    _, dup = await sim.create_security_group(
        name="controller-f1", description="slaves", vpc_id=vpc, fleet="f1"
    )
    assert dup is not None and dup.code == "InvalidGroup.Duplicate"
    rule = IngressRule(cidr="127.0.0.1/32", port=8101)
    assert (await sim.authorize_ingress(group_id, [rule])).ok
    assert not (await sim.authorize_ingress(group_id, [rule])).ok
    found = await sim.find_security_group("controller-f1", vpc)
    assert found is not None and found.rules == frozenset({rule})
    groups, err = await sim.fleet_security_groups("f1")
    assert err is None and [g.group_id for g in groups] == [group_id]

    [inst] = (await sim.launch(spec(security_group_ids=(group_id,)))).instances
    in_use = await sim.delete_security_group(group_id)
    assert not in_use.ok and in_use.error.code == "DependencyViolation"
    await sim.terminate([inst.instance_id])
    assert (await sim.revoke_ingress(group_id, [rule])).ok
    assert (await sim.delete_security_group(group_id)).ok
    assert await sim.describe_security_group(group_id) is None


async def test_from_config_uses_the_simulate_section_and_wall_offset():
    clock = Clock()
    base = Config()
    cfg = dataclasses.replace(
        base,
        scaling=dataclasses.replace(base.scaling, boot_seconds=30),
        simulate=dataclasses.replace(base.simulate, boot_spread=0.0),
    )
    sim = SimCloud.from_config(cfg, clock=clock, wall_offset=1.7e9)
    [inst] = (await sim.launch(spec())).instances
    assert inst.launched_at == pytest.approx(clock.now + 1.7e9)
    assert sim.instance(inst.instance_id).ready_at == pytest.approx(clock.now + 30)
    assert await sim.spot_price("m5.large", "") == cfg.simulate.spot_price
