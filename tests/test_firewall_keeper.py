"""FirewallKeeper against moto's real EC2 server through the Ec2Cloud adapter.

Assertions read the group back with a plain boto3 client, so they check what EC2 holds, not what
the actor believes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest
import structlog.testing

from actors.firewall_keeper import DRY_RUN_GROUP_ID, FirewallError, FirewallKeeper
from controller.cloud.ec2_groups import DEPENDENCY_TIMEOUT
from controller.cloud.ec2cloud import Ec2Cloud
from controller.cloud.firewall_rules import ports_not_admitted, rule_drift, wanted_rules
from controller.cloud.port import IngressRule
from controller.config.schema import ClusterSection, Config, ControllerSection, SlaveSection
from controller.messages import ErrorKind, ProviderErrorSeen, SecurityGroupReady
from controller.runtime.bus import Bus
from tests.actor_runner import listen, next_of, running
from tests.harness.fault_proxy import FaultProxy
from tests.harness.moto_server import MotoEc2

MASTER = "203.0.113.7"
FLEET = "farm1"
NAME = f"controller-{FLEET}"


def make_config(moto: MotoEc2, *, on_exit: str = "teardown", **slave: object) -> Config:
    slave_fields = {"region": moto.region, "subnet": moto.subnet_id, "ports": (8101, 8102)}
    slave_fields.update(slave)
    return Config(
        controller=ControllerSection(fleet=FLEET, on_exit=on_exit),
        slave=SlaveSection(**slave_fields),
    )


@pytest.fixture
async def cloud(moto_ec2: MotoEc2) -> AsyncIterator[Ec2Cloud]:
    async with Ec2Cloud(moto_ec2.region, endpoint_url=moto_ec2.endpoint_url, max_attempts=1) as c:
        yield c


def keeper(config: Config, cloud: Ec2Cloud, bus: Bus | None = None, **kwargs) -> FirewallKeeper:
    return FirewallKeeper(config=config, bus=bus or Bus(), cloud=cloud, master_ip=MASTER, **kwargs)


def groups_named(moto: MotoEc2, name: str = NAME) -> list[dict]:
    return moto.client().describe_security_groups(
        Filters=[{"Name": "group-name", "Values": [name]}]
    )["SecurityGroups"]


def group(moto: MotoEc2, group_id: str) -> dict | None:
    found = moto.client().describe_security_groups(
        Filters=[{"Name": "group-id", "Values": [group_id]}]
    )["SecurityGroups"]
    return found[0] if found else None


def ingress(moto: MotoEc2, group_id: str) -> set[tuple[str, int, int, str]]:
    """Every ingress grant as (protocol, from, to, cidr)."""
    found = group(moto, group_id)
    assert found is not None, f"{group_id} does not exist"
    return {
        (perm["IpProtocol"], perm.get("FromPort", -1), perm.get("ToPort", -1), cidr)
        for perm in found["IpPermissions"]
        for cidr in [r["CidrIp"] for r in perm.get("IpRanges", [])]
        + [r["CidrIpv6"] for r in perm.get("Ipv6Ranges", [])]
    }


def master_only(*ports: int) -> set[tuple[str, int, int, str]]:
    return {("tcp", port, port, f"{MASTER}/32") for port in ports}


def open_to_world(moto: MotoEc2, group_id: str) -> None:
    moto.client().authorize_security_group_ingress(
        GroupId=group_id,
        IpPermissions=[
            {
                "IpProtocol": "tcp",
                "FromPort": 8101,
                "ToPort": 8101,
                "IpRanges": [{"CidrIp": "0.0.0.0/0"}],
            },
            {
                "IpProtocol": "tcp",
                "FromPort": 0,
                "ToPort": 65535,
                "IpRanges": [{"CidrIp": "10.0.0.0/8"}],
            },
        ],
    )


# pure rules


def test_wanted_rules_are_master_only_and_ssh_when_keyed() -> None:
    assert wanted_rules("192.0.2.1", [8101]) == {IngressRule(cidr="192.0.2.1/32", port=8101)}
    assert {r.port for r in wanted_rules("192.0.2.1", [8101], ssh=True)} == {22, 8101}
    assert wanted_rules("2001:db8::1", [8101]) == {IngressRule(cidr="2001:db8::1/128", port=8101)}


def test_rule_drift() -> None:
    want = wanted_rules("192.0.2.1", [8101, 8102])
    world = IngressRule(cidr="0.0.0.0/0", port=8101)
    actual = {IngressRule(cidr="192.0.2.1/32", port=8101), world}
    missing, extra = rule_drift(actual, want)
    assert missing == [IngressRule(cidr="192.0.2.1/32", port=8102)]
    assert extra == [world]


def test_ports_not_admitted_reads_ranges_and_all_traffic() -> None:
    ports = [8101, 8102, 22]
    assert ports_not_admitted([], "192.0.2.1", ports) == [22, 8101, 8102]
    ranged = [IngressRule(cidr="192.0.2.0/24", port=8000, protocol="tcp:8000-8101")]
    assert ports_not_admitted(ranged, "192.0.2.1", ports) == [22, 8102]
    elsewhere = [IngressRule(cidr="198.51.100.0/24", port=-1, protocol="-1")]
    assert ports_not_admitted(elsewhere, "192.0.2.1", ports) == [22, 8101, 8102]
    everything = [IngressRule(cidr="0.0.0.0/0", port=-1, protocol="-1")]
    assert ports_not_admitted(everything, "192.0.2.1", ports) == []


# against moto


async def test_creates_the_fleet_group_tagged_and_open_to_the_master_only(
    moto_ec2: MotoEc2, cloud: Ec2Cloud
) -> None:
    bus = Bus()
    ready = listen(bus, SecurityGroupReady)
    await keeper(make_config(moto_ec2), cloud, bus).setup()

    [made] = groups_named(moto_ec2)
    assert made["VpcId"] == moto_ec2.vpc_id
    tags = {t["Key"]: t["Value"] for t in made.get("Tags", [])}
    assert tags["controller:fleet"] == FLEET
    assert tags["controller:role"] == "slave"
    assert ingress(moto_ec2, made["GroupId"]) == master_only(8101, 8102)
    message = await next_of(ready, SecurityGroupReady)
    assert (message.group_id, message.created) == (made["GroupId"], True)


async def test_cluster_nodes_group_is_tagged_role_node(moto_ec2: MotoEc2, cloud: Ec2Cloud) -> None:
    """../shared/SPEC.md: every security group it creates carries controller:role=<slave|node>;
    a batch cluster's group (controller-<fleet>-nodes) is the nodes', so role=node."""
    cluster = ClusterSection(name="small", subnet=moto_ec2.subnet_id)
    config = replace(make_config(moto_ec2), clusters=(cluster,))
    await keeper(config, cloud, cluster=cluster).setup()

    [made] = groups_named(moto_ec2, f"{NAME}-nodes")
    tags = {t["Key"]: t["Value"] for t in made.get("Tags", [])}
    assert (tags["controller:fleet"], tags["controller:role"]) == (FLEET, "node")


async def test_ssh_key_opens_22_to_the_master_only(moto_ec2: MotoEc2, cloud: Ec2Cloud) -> None:
    actor = keeper(make_config(moto_ec2, ssh_key="admin-key"), cloud)
    await actor.setup()
    assert ingress(moto_ec2, actor.group_id) == master_only(22, 8101, 8102)


async def test_drift_is_revoked_and_restored_on_the_next_reconcile(
    moto_ec2: MotoEc2, cloud: Ec2Cloud
) -> None:
    actor = keeper(make_config(moto_ec2), cloud)
    await actor.setup()
    gid = actor.group_id
    open_to_world(moto_ec2, gid)
    moto_ec2.client().revoke_security_group_ingress(
        GroupId=gid,
        IpPermissions=[
            {
                "IpProtocol": "tcp",
                "FromPort": 8102,
                "ToPort": 8102,
                "IpRanges": [{"CidrIp": f"{MASTER}/32"}],
            }
        ],
    )
    assert ("tcp", 8101, 8101, "0.0.0.0/0") in ingress(moto_ec2, gid)

    with structlog.testing.capture_logs() as logs:
        await actor.reconcile()
    assert ingress(moto_ec2, gid) == master_only(8101, 8102)
    [revoked] = [e for e in logs if e["event"] == "security_group.revoking_foreign_rules"]
    assert "tcp/8101 from 0.0.0.0/0" in revoked["rules"]


async def test_running_keeper_reverts_drift_by_itself_and_deletes_its_group_at_stop(
    moto_ec2: MotoEc2, cloud: Ec2Cloud
) -> None:
    actor = keeper(make_config(moto_ec2), cloud, reconcile_interval=0.1)
    async with running(actor):
        gid = actor.group_id
        open_to_world(moto_ec2, gid)
        for _ in range(100):
            if ingress(moto_ec2, gid) == master_only(8101, 8102):
                break
            await asyncio.sleep(0.05)
        assert ingress(moto_ec2, gid) == master_only(8101, 8102)
    assert group(moto_ec2, gid) is None
    assert groups_named(moto_ec2) == []


async def test_restart_adopts_the_existing_group(moto_ec2: MotoEc2, cloud: Ec2Cloud) -> None:
    first = keeper(make_config(moto_ec2), cloud)
    await first.setup()  # then "killed": no stop()

    bus = Bus()
    ready = listen(bus, SecurityGroupReady)
    async with Ec2Cloud(
        moto_ec2.region, endpoint_url=moto_ec2.endpoint_url, max_attempts=1
    ) as other_cloud:
        second = keeper(make_config(moto_ec2), other_cloud, bus)
        await second.setup()
        assert second.group_id == first.group_id
        assert len(groups_named(moto_ec2)) == 1
        message = await next_of(ready, SecurityGroupReady)
        assert (message.group_id, message.created) == (first.group_id, True)
        await second.stop()
    assert groups_named(moto_ec2) == []


async def test_owned_group_deleted_at_stop_only_with_teardown(
    moto_ec2: MotoEc2, cloud: Ec2Cloud
) -> None:
    leaving = keeper(make_config(moto_ec2, on_exit="leave"), cloud)
    await leaving.setup()
    await leaving.stop()
    assert [g["GroupId"] for g in groups_named(moto_ec2)] == [leaving.group_id]

    tearing = keeper(make_config(moto_ec2, on_exit="teardown"), cloud)
    await tearing.setup()
    assert tearing.group_id == leaving.group_id  # adopted
    await tearing.stop()
    assert groups_named(moto_ec2) == []


async def test_configured_group_is_used_never_changed_nor_deleted(
    moto_ec2: MotoEc2, cloud: Ec2Cloud
) -> None:
    ec2 = moto_ec2.client()
    gid = ec2.create_security_group(
        GroupName="users-own", Description="mine", VpcId=moto_ec2.vpc_id
    )["GroupId"]
    open_to_world(moto_ec2, gid)
    before = ingress(moto_ec2, gid)
    bus = Bus()
    ready = listen(bus, SecurityGroupReady)
    actor = keeper(make_config(moto_ec2, security_group=gid), cloud, bus)

    with structlog.testing.capture_logs() as logs:
        await actor.setup()
        await actor.reconcile()
        await actor.stop()

    message = await next_of(ready, SecurityGroupReady)
    assert (message.group_id, message.created) == (gid, False)
    assert ingress(moto_ec2, gid) == before  # 0.0.0.0/0 on 8101 admits the master there
    assert groups_named(moto_ec2) == []  # no group of its own either
    [warning] = [e for e in logs if e["event"] == "security_group.master_not_admitted"]
    assert warning["ports"] == [8102]  # warned once, not on every cycle
    assert group(moto_ec2, gid) is not None


async def test_configured_group_by_name(moto_ec2: MotoEc2, cloud: Ec2Cloud) -> None:
    gid = moto_ec2.client().create_security_group(
        GroupName="users-own", Description="mine", VpcId=moto_ec2.vpc_id
    )["GroupId"]
    actor = keeper(make_config(moto_ec2, security_group="users-own"), cloud)
    await actor.setup()
    assert (actor.group_id, actor.owned) == (gid, False)


async def test_configured_group_that_does_not_exist_fails_setup(
    moto_ec2: MotoEc2, cloud: Ec2Cloud
) -> None:
    actor = keeper(make_config(moto_ec2, security_group="sg-0123456789abcdef0"), cloud)
    with pytest.raises(FirewallError, match=r"\[slave\] security_group 'sg-0123456789abcdef0'"):
        await actor.setup()


async def test_same_name_without_our_fleet_tag_is_refused(
    moto_ec2: MotoEc2, cloud: Ec2Cloud
) -> None:
    moto_ec2.client().create_security_group(
        GroupName=NAME, Description="someone else's", VpcId=moto_ec2.vpc_id
    )
    with pytest.raises(FirewallError, match="is not tagged controller:fleet=farm1"):
        await keeper(make_config(moto_ec2), cloud).setup()


async def test_vanished_group_is_made_again_and_announced(
    moto_ec2: MotoEc2, cloud: Ec2Cloud
) -> None:
    bus = Bus()
    ready = listen(bus, SecurityGroupReady)
    actor = keeper(make_config(moto_ec2), cloud, bus)
    await actor.setup()
    first = (await next_of(ready, SecurityGroupReady)).group_id
    moto_ec2.client().delete_security_group(GroupId=first)

    await actor.reconcile()
    second = await next_of(ready, SecurityGroupReady)
    assert second.group_id != first
    assert ingress(moto_ec2, second.group_id) == master_only(8101, 8102)


async def test_dry_run_creates_nothing(moto_ec2: MotoEc2, cloud: Ec2Cloud) -> None:
    bus = Bus()
    ready = listen(bus, SecurityGroupReady)
    actor = keeper(make_config(moto_ec2), cloud, bus, dry_run=True)
    with structlog.testing.capture_logs() as logs:
        await actor.setup()
        await actor.reconcile()
        await actor.stop()
    assert groups_named(moto_ec2) == []
    message = await next_of(ready, SecurityGroupReady)
    assert message.group_id == DRY_RUN_GROUP_ID
    [checked] = [e for e in logs if e["event"] == "dry_run.would_create_security_group"]
    assert checked["permitted"] is True  # EC2's DryRun answered DryRunOperation


async def test_dry_run_on_an_adopted_group_only_checks(moto_ec2: MotoEc2, cloud: Ec2Cloud) -> None:
    real = keeper(make_config(moto_ec2), cloud)
    await real.setup()
    gid = real.group_id
    open_to_world(moto_ec2, gid)
    drifted = ingress(moto_ec2, gid)

    dry = keeper(make_config(moto_ec2), cloud, dry_run=True)
    with structlog.testing.capture_logs() as logs:
        await dry.setup()
        await dry.reconcile()
        await dry.stop()
    assert dry.group_id == gid
    assert ingress(moto_ec2, gid) == drifted  # nothing revoked
    assert group(moto_ec2, gid) is not None  # nothing deleted
    events = {e["event"]: e for e in logs}
    assert events["dry_run.would_revoke_ingress"]["permitted"] is True
    assert events["dry_run.would_delete_security_group"]["permitted"] is True


async def test_dry_run_reports_a_missing_permission(
    moto_ec2: MotoEc2, fault_proxy: FaultProxy
) -> None:
    fault_proxy.fail("CreateSecurityGroup", "UnauthorizedOperation", "You are not authorized")
    async with Ec2Cloud(
        moto_ec2.region,
        endpoint_url=fault_proxy.endpoint_url,
        max_attempts=1,
        retry_mode="standard",
    ) as cloud:
        actor = keeper(make_config(moto_ec2), cloud, dry_run=True)
        with structlog.testing.capture_logs() as logs:
            await actor.setup()
    [report] = [e for e in logs if e["event"] == "dry_run.would_create_security_group"]
    assert report["permitted"] is False
    assert "ec2:CreateSecurityGroup" in report["hint"]


async def test_create_refused_fails_setup_with_one_clear_line(
    moto_ec2: MotoEc2, fault_proxy: FaultProxy
) -> None:
    fault_proxy.fail("CreateSecurityGroup", "UnauthorizedOperation", "You are not authorized")
    async with Ec2Cloud(
        moto_ec2.region,
        endpoint_url=fault_proxy.endpoint_url,
        max_attempts=1,
        retry_mode="standard",
    ) as cloud:
        with pytest.raises(FirewallError) as caught:
            await keeper(make_config(moto_ec2), cloud).setup()
    line = str(caught.value)
    assert "\n" not in line
    assert line.startswith(f"cannot create security group {NAME} in {moto_ec2.vpc_id}")
    assert "grant ec2:CreateSecurityGroup" in line


async def test_a_subnet_ec2_could_not_be_asked_about_is_not_called_missing(
    moto_ec2: MotoEc2, fault_proxy: FaultProxy
) -> None:
    fault_proxy.fail("DescribeSubnets", "InternalError", "We encountered an internal error")
    async with Ec2Cloud(
        moto_ec2.region, endpoint_url=fault_proxy.endpoint_url, max_attempts=1
    ) as cloud:
        with pytest.raises(FirewallError) as caught:
            await keeper(make_config(moto_ec2), cloud).setup()
    line = str(caught.value)
    assert line.startswith("cannot ask ") and "InternalError" in line, line
    assert "not found" not in line and "[aws] endpoint_url" in line


async def test_a_subnet_that_is_not_there_is_named(moto_ec2: MotoEc2, cloud: Ec2Cloud) -> None:
    config = make_config(moto_ec2, subnet="subnet-00000000000000000")
    with pytest.raises(FirewallError, match=r"\[slave\] subnet 'subnet-0+': not found"):
        await keeper(config, cloud).setup()


async def test_provider_error_in_a_cycle_is_reported_and_retried(
    moto_ec2: MotoEc2, fault_proxy: FaultProxy
) -> None:
    async with Ec2Cloud(
        moto_ec2.region,
        endpoint_url=fault_proxy.endpoint_url,
        max_attempts=1,
        retry_mode="standard",
    ) as cloud:
        bus = Bus()
        errors = listen(bus, ProviderErrorSeen)
        actor = keeper(make_config(moto_ec2), cloud, bus)
        await actor.setup()
        open_to_world(moto_ec2, actor.group_id)
        fault_proxy.fail("RevokeSecurityGroupIngress", "RequestLimitExceeded", times=1)

        await actor.reconcile()
        seen = await next_of(errors, ProviderErrorSeen)
        assert (seen.kind, seen.code) == (ErrorKind.THROTTLED, "RequestLimitExceeded")
        assert ("tcp", 8101, 8101, "0.0.0.0/0") in ingress(moto_ec2, actor.group_id)

        await actor.reconcile()
        assert ingress(moto_ec2, actor.group_id) == master_only(8101, 8102)


async def test_default_vpc_when_no_subnet(moto_ec2: MotoEc2, cloud: Ec2Cloud) -> None:
    default_vpc = moto_ec2.client().describe_vpcs(
        Filters=[{"Name": "isDefault", "Values": ["true"]}]
    )["Vpcs"][0]["VpcId"]
    actor = keeper(
        replace(make_config(moto_ec2), slave=SlaveSection(region=moto_ec2.region)), cloud
    )
    await actor.setup()
    [made] = groups_named(moto_ec2)
    assert made["VpcId"] == default_vpc


# a group EC2 does not know yet (eventual consistency)
# Real EC2 may answer InvalidGroup.NotFound to AuthorizeSecurityGroupIngress for a group it has
# just created; the fault proxy plays that. The retry delays are shortened (the defaults wait
# seconds between tries): looptime cannot fake the clock while real sockets are in use.

QUICK = {"authorize_delays": (0.01,), "authorize_retry_seconds": 5.0}


@pytest.fixture
async def proxied(moto_ec2: MotoEc2, fault_proxy: FaultProxy) -> AsyncIterator[Ec2Cloud]:
    async with Ec2Cloud(
        moto_ec2.region,
        endpoint_url=fault_proxy.endpoint_url,
        max_attempts=1,
        retry_mode="standard",
    ) as cloud:
        yield cloud


def announcements(bus: Bus, moto: MotoEc2) -> list[tuple[str, set]]:
    """(group id, its ingress in EC2 at that moment) for each SecurityGroupReady published."""
    seen: list[tuple[str, set]] = []

    def note(msg: object) -> None:
        if isinstance(msg, SecurityGroupReady):
            seen.append((msg.group_id, ingress(moto, msg.group_id)))

    bus.listen(note)
    return seen


async def test_new_group_unknown_to_ec2_at_first_gets_its_rules_before_it_is_announced(
    moto_ec2: MotoEc2, fault_proxy: FaultProxy, proxied: Ec2Cloud
) -> None:
    fault_proxy.fail("AuthorizeSecurityGroupIngress", "InvalidGroup.NotFound", times=2)
    bus = Bus()
    announced = announcements(bus, moto_ec2)

    actor = keeper(make_config(moto_ec2), proxied, bus, **QUICK)
    await actor.setup()

    assert fault_proxy.count("AuthorizeSecurityGroupIngress") == 3
    assert announced == [(actor.group_id, master_only(8101, 8102))]


async def test_new_group_still_unknown_fails_setup_and_is_never_announced(
    moto_ec2: MotoEc2, fault_proxy: FaultProxy, proxied: Ec2Cloud
) -> None:
    fault_proxy.fail("AuthorizeSecurityGroupIngress", "InvalidGroup.NotFound")
    bus = Bus()
    announced = announcements(bus, moto_ec2)
    actor = keeper(
        make_config(moto_ec2), proxied, bus, authorize_delays=(0.01,), authorize_retry_seconds=0.1
    )

    with pytest.raises(FirewallError) as caught:
        await actor.setup()

    line = str(caught.value)
    assert "\n" not in line
    assert line.startswith(f"security group {NAME} ({actor.group_id}) was created but admits")
    assert "InvalidGroup.NotFound" in line and "the next attempt adopts it" in line
    assert fault_proxy.count("AuthorizeSecurityGroupIngress") > 1
    assert announced == []


async def test_refused_ingress_on_a_new_group_is_not_retried_and_says_what_to_grant(
    moto_ec2: MotoEc2, fault_proxy: FaultProxy, proxied: Ec2Cloud
) -> None:
    fault_proxy.fail("AuthorizeSecurityGroupIngress", "UnauthorizedOperation", status=403)
    bus = Bus()
    announced = announcements(bus, moto_ec2)

    with pytest.raises(FirewallError, match="grant ec2:AuthorizeSecurityGroupIngress"):
        await keeper(make_config(moto_ec2), proxied, bus, **QUICK).setup()
    assert fault_proxy.count("AuthorizeSecurityGroupIngress") == 1
    assert announced == []


async def test_adopted_group_without_rules_is_announced_only_once_they_are_in(
    moto_ec2: MotoEc2, fault_proxy: FaultProxy, proxied: Ec2Cloud
) -> None:
    """A predecessor died between making the group and opening it; adding the rules fails at
    first: SpotPool must keep waiting until a later cycle gets them in."""
    gid = moto_ec2.client().create_security_group(
        GroupName=NAME,
        Description="made by a controller that died",
        VpcId=moto_ec2.vpc_id,
        TagSpecifications=[
            {
                "ResourceType": "security-group",
                "Tags": [{"Key": "controller:fleet", "Value": FLEET}],
            }
        ],
    )["GroupId"]
    fault_proxy.fail("AuthorizeSecurityGroupIngress", "RequestLimitExceeded", status=503, times=1)
    bus = Bus()
    announced = announcements(bus, moto_ec2)
    actor = keeper(make_config(moto_ec2), proxied, bus, **QUICK)

    await actor.setup()
    assert actor.group_id == gid
    assert announced == []

    await actor.reconcile()
    await actor.reconcile()
    assert announced == [(gid, master_only(8101, 8102))]  # once


async def test_recreated_group_unknown_to_ec2_at_first_is_announced_with_its_rules(
    moto_ec2: MotoEc2, fault_proxy: FaultProxy, proxied: Ec2Cloud
) -> None:
    bus = Bus()
    announced = announcements(bus, moto_ec2)
    actor = keeper(make_config(moto_ec2), proxied, bus, **QUICK)
    await actor.setup()
    first = actor.group_id
    moto_ec2.client().delete_security_group(GroupId=first)
    fault_proxy.fail("AuthorizeSecurityGroupIngress", "InvalidGroup.NotFound", times=2)

    await actor.reconcile()

    assert actor.group_id != first
    assert announced == [
        (first, master_only(8101, 8102)),
        (actor.group_id, master_only(8101, 8102)),
    ]


def test_stop_grace_outlasts_the_wait_for_the_group_to_be_free() -> None:
    """Deleting the group waits out DependencyViolation for DEPENDENCY_TIMEOUT (the instances'
    network interfaces go minutes after termination); the runtime must not cut that short."""
    assert FirewallKeeper.grace_seconds > DEPENDENCY_TIMEOUT
