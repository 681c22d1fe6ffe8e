"""Ec2Cloud against moto's EC2 server, with the fault proxy where EC2 must misbehave.

moto stands in for EC2 (instances in the 127.0.20.0/24 test subnet get loopback addresses); the
proxy answers chosen Actions with EC2 error XML, delays them, or drops the endpoint, so each
error reaches Ec2Cloud through botocore exactly as from EC2.
"""

from __future__ import annotations

import base64
import shutil
import subprocess
from collections.abc import AsyncIterator

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError
from moto.core import DEFAULT_ACCOUNT_ID
from moto.ec2.models import ec2_backends
from moto.ec2.models.instances import StateReason

from controller.cloud.ec2_groups import DEPENDENCY_TIMEOUT
from controller.cloud.ec2_shapes import DATA_DEVICES, launch_params
from controller.cloud.ec2cloud import Ec2Cloud, make_ec2_cloud
from controller.cloud.ec2errors import CODE_KINDS, classify, kind_of
from controller.cloud.port import (
    SPOT_INTERRUPTION_REASON,
    IngressRule,
    InstanceState,
    LaunchSpec,
    launch_digest,
)
from controller.config.schema import AwsSection, Config, SlaveSection
from controller.gbrowse.userdata import render_slave_user_data
from controller.messages import ErrorKind, InstanceId, Role
from tests.harness.fault_proxy import FaultProxy
from tests.harness.moto_server import MotoEc2

FLEET = "gb-test"
OTHER = "other-fleet"
AMI = "ami-12345678"
QUICK_RETRIES = (0.01, 0.01, 0.01)  # launch's own retries, without the seconds between them


def spec(moto: MotoEc2, **changes) -> LaunchSpec:
    fields = {
        "fleet": FLEET,
        "role": Role.SLAVE,
        "image_id": AMI,
        "instance_type": "m5.large",
        "count": 1,
        "client_token": "token-1",
        "subnet": moto.subnet_id,
    }
    fields.update(changes)
    return LaunchSpec(**fields)


@pytest.fixture
async def cloud(moto_ec2: MotoEc2) -> AsyncIterator[Ec2Cloud]:
    async with Ec2Cloud(
        moto_ec2.region, endpoint_url=moto_ec2.endpoint_url, max_attempts=1, call_timeout=5
    ) as cloud:
        yield cloud


@pytest.fixture
async def proxied(moto_ec2: MotoEc2, fault_proxy: FaultProxy) -> AsyncIterator[Ec2Cloud]:
    """An Ec2Cloud talking to moto through the fault proxy, without retries."""
    async with Ec2Cloud(
        moto_ec2.region,
        endpoint_url=fault_proxy.endpoint_url,
        max_attempts=1,
        call_timeout=2,
        launch_retry_delays=QUICK_RETRIES,
    ) as cloud:
        yield cloud


def launch_raw(moto: MotoEc2, fleet: str, count: int = 1) -> list[str]:
    """Launch `count` one-instance reservations tagged with `fleet`, straight into moto."""
    ec2 = moto.client()
    tags = [
        {"Key": "controller:fleet", "Value": fleet},
        {"Key": "controller:role", "Value": "slave"},
    ]
    ids = []
    for _ in range(count):
        reservation = ec2.run_instances(
            ImageId=AMI,
            MinCount=1,
            MaxCount=1,
            SubnetId=moto.subnet_id,
            TagSpecifications=[{"ResourceType": "instance", "Tags": tags}],
        )
        ids.append(reservation["Instances"][0]["InstanceId"])
    return ids


# launch


async def test_launch_into_loopback_subnet_tags_instance_and_volumes(
    cloud: Ec2Cloud, moto_ec2: MotoEc2
) -> None:
    ec2 = moto_ec2.client()
    volume = ec2.create_volume(Size=1, AvailabilityZone=moto_ec2.zone)["VolumeId"]
    snapshot = ec2.create_snapshot(VolumeId=volume)["SnapshotId"]
    group = ec2.create_security_group(
        GroupName="slaves", Description="test", VpcId=moto_ec2.vpc_id
    )["GroupId"]
    user_data = render_slave_user_data([8101, 8102])

    result = await cloud.launch(
        spec(
            moto_ec2,
            security_group_ids=(group,),
            snapshots=(snapshot,),
            user_data=user_data,
            extra_tags=(("owner", "lab"),),
        )
    )

    assert result.error is None
    (instance,) = result.instances
    assert instance.private_ip is not None and instance.private_ip.startswith("127.0.20.")
    assert instance.spot and instance.role is Role.SLAVE and instance.zone == moto_ec2.zone
    described = ec2.describe_instances(InstanceIds=[instance.instance_id])
    item = described["Reservations"][0]["Instances"][0]
    tags = {t["Key"]: t["Value"] for t in item["Tags"]}
    launched_from = launch_digest(AMI, (snapshot,), user_data)
    assert tags == {
        "controller:fleet": FLEET,
        "controller:role": "slave",
        "controller:spec": launched_from,
        "Name": f"{FLEET}-slave",
        "owner": "lab",
    }
    assert instance.spec == launched_from
    assert item["InstanceLifecycle"] == "spot"
    assert [g["GroupId"] for g in item["SecurityGroups"]] == [group]
    data = [m for m in item["BlockDeviceMappings"] if m["DeviceName"] == "/dev/sdf"]
    assert len(data) == 1 and data[0]["Ebs"]["DeleteOnTermination"] is True
    attribute = ec2.describe_instance_attribute(
        InstanceId=instance.instance_id, Attribute="userData"
    )
    assert base64.b64decode(attribute["UserData"]["Value"]).decode() == user_data
    volumes = ec2.describe_volumes(
        Filters=[
            {"Name": "tag:controller:fleet", "Values": [FLEET]},
            {"Name": "attachment.instance-id", "Values": [instance.instance_id]},
        ]
    )["Volumes"]
    # moto makes no root volume when mappings are given: the data volume carries the tags.
    assert [(v["SnapshotId"], v["Attachments"][0]["Device"]) for v in volumes] == [
        (snapshot, "/dev/sdf")
    ]


async def test_launch_sends_client_token(cloud: Ec2Cloud, moto_ec2: MotoEc2) -> None:
    """The ClientToken reaches EC2. moto records it but does not dedupe a repeated token
    (real EC2 answers the same instances again), so only its arrival is checked here."""
    first = await cloud.launch(spec(moto_ec2, client_token="same-token"))
    assert first.error is None
    backend = ec2_backends[DEFAULT_ACCOUNT_ID][moto_ec2.region]
    (instance,) = first.instances
    assert backend.get_instance(instance.instance_id).client_token == "same-token"


async def test_dry_run_launch_reports_dry_run_ok_and_creates_nothing(
    cloud: Ec2Cloud, moto_ec2: MotoEc2
) -> None:
    result = await cloud.launch(spec(moto_ec2, dry_run=True, count=3))

    assert result.instances == ()
    assert result.error is not None and result.error.kind is ErrorKind.DRY_RUN_OK
    assert moto_ec2.client().describe_instances()["Reservations"] == []


async def test_capacity_error_is_data_naming_type_and_zone(
    proxied: Ec2Cloud, moto_ec2: MotoEc2, fault_proxy: FaultProxy
) -> None:
    fault_proxy.fail("RunInstances", "InsufficientInstanceCapacity", "no m5.large in 1a")

    result = await proxied.launch(spec(moto_ec2, zone=moto_ec2.zone))

    assert result.instances == ()
    error = result.error
    assert error is not None
    assert (error.kind, error.code, error.message) == (
        ErrorKind.CAPACITY,
        "InsufficientInstanceCapacity",
        "no m5.large in 1a",
    )
    assert (error.operation, error.instance_type, error.zone) == (
        "RunInstances",
        "m5.large",
        moto_ec2.zone,
    )


@pytest.mark.parametrize("mode", ["standard", "adaptive"])
async def test_a_capacity_error_is_asked_once_whatever_botocore_retries(
    moto_ec2: MotoEc2, fault_proxy: FaultProxy, mode: str
) -> None:
    # EC2 answers InsufficientInstanceCapacity with HTTP 500, which botocore's modes retry:
    # ten attempts on a type that has no room would cost a minute and the shared retry quota.
    fault_proxy.fail("RunInstances", "InsufficientInstanceCapacity", status=500)
    async with Ec2Cloud(
        moto_ec2.region,
        endpoint_url=fault_proxy.endpoint_url,
        retry_mode=mode,
        max_attempts=10,
        call_timeout=5,
        launch_retry_delays=QUICK_RETRIES,
    ) as cloud:
        result = await cloud.launch(spec(moto_ec2))

    assert result.error is not None and result.error.kind is ErrorKind.CAPACITY
    assert fault_proxy.count("RunInstances") == 1


async def test_a_throttled_launch_is_retried_and_launches_once(
    proxied: Ec2Cloud, moto_ec2: MotoEc2, fault_proxy: FaultProxy
) -> None:
    fault_proxy.fail("RunInstances", "RequestLimitExceeded", status=503, times=2)

    result = await proxied.launch(spec(moto_ec2))

    assert result.error is None and len(result.instances) == 1
    # the same token each time: had a throttled call launched after all, EC2 would answer the
    # retry with its instances instead of launching again
    assert [p["ClientToken"] for p in fault_proxy.params("RunInstances")] == ["token-1"] * 3
    assert len(moto_ec2.client().describe_instances()["Reservations"]) == 1


async def test_a_launch_failing_on_throttling_gives_up_after_its_retries(
    proxied: Ec2Cloud, moto_ec2: MotoEc2, fault_proxy: FaultProxy
) -> None:
    fault_proxy.fail("RunInstances", "RequestLimitExceeded", status=503)

    result = await proxied.launch(spec(moto_ec2))

    assert result.error is not None and result.error.kind is ErrorKind.THROTTLED
    assert fault_proxy.count("RunInstances") == 1 + len(QUICK_RETRIES)


async def test_throttling_surfaces_as_throttled_once_retries_are_spent(
    proxied: Ec2Cloud, moto_ec2: MotoEc2, fault_proxy: FaultProxy
) -> None:
    fault_proxy.fail("DescribeInstances", "RequestLimitExceeded", "slow down", status=503)

    view = await proxied.describe_fleet(FLEET)

    assert view.error is not None and view.error.kind is ErrorKind.THROTTLED
    assert fault_proxy.count("DescribeInstances") == 1


async def test_botocore_retries_throttling_before_it_surfaces(
    moto_ec2: MotoEc2, fault_proxy: FaultProxy
) -> None:
    launch_raw(moto_ec2, FLEET)
    fault_proxy.fail("DescribeInstances", "RequestLimitExceeded", status=503, times=2)
    async with Ec2Cloud(
        moto_ec2.region,
        endpoint_url=fault_proxy.endpoint_url,
        retry_mode="standard",
        max_attempts=3,
        call_timeout=5,
    ) as cloud:
        view = await cloud.describe_fleet(FLEET)

    assert view.error is None and len(view.instances) == 1
    assert fault_proxy.count("DescribeInstances") == 3


async def test_endpoint_down_is_unavailable(
    proxied: Ec2Cloud, moto_ec2: MotoEc2, fault_proxy: FaultProxy
) -> None:
    fault_proxy.down()

    view = await proxied.describe_fleet(FLEET)
    launched = await proxied.launch(spec(moto_ec2))
    terminated = await proxied.terminate([InstanceId("i-12345678")])

    assert view.instances == () and view.error is not None
    assert view.error.kind is ErrorKind.UNAVAILABLE
    assert launched.error is not None and launched.error.kind is ErrorKind.UNAVAILABLE
    assert not terminated.ok and terminated.error is not None
    assert terminated.error.kind is ErrorKind.UNAVAILABLE
    assert await proxied.spot_price("m5.large", "") is None
    assert await proxied.subnet_vpc(moto_ec2.subnet_id) is None
    vpc, error = await proxied.find_vpc(moto_ec2.subnet_id)  # not "no such subnet": no answer
    assert vpc is None and error is not None and error.kind is ErrorKind.UNAVAILABLE


async def test_slow_endpoint_times_out_as_unavailable(
    moto_ec2: MotoEc2, fault_proxy: FaultProxy
) -> None:
    fault_proxy.delay("DescribeInstances", 1.0)
    async with Ec2Cloud(
        moto_ec2.region, endpoint_url=fault_proxy.endpoint_url, max_attempts=1, call_timeout=0.3
    ) as cloud:
        view = await cloud.describe_fleet(FLEET)

    assert view.error is not None and view.error.kind is ErrorKind.UNAVAILABLE
    assert view.error.operation == "DescribeInstances"


async def test_server_error_is_unavailable(
    proxied: Ec2Cloud, moto_ec2: MotoEc2, fault_proxy: FaultProxy
) -> None:
    fault_proxy.fail("RunInstances", "InternalError", status=500)

    result = await proxied.launch(spec(moto_ec2))

    assert result.error is not None and result.error.kind is ErrorKind.UNAVAILABLE


# the fleet


async def test_describe_fleet_reads_only_its_fleet_in_pages_of_a_thousand(
    proxied: Ec2Cloud, moto_ec2: MotoEc2, fault_proxy: FaultProxy
) -> None:
    # moto pages by 100 reservations unless asked for more; 120 fit in one page of 1000
    ours = launch_raw(moto_ec2, FLEET, 120)
    theirs = launch_raw(moto_ec2, OTHER, 3)
    fault_proxy.clear()

    view = await proxied.describe_fleet(FLEET)

    assert view.error is None
    assert sorted(i.instance_id for i in view.instances) == sorted(ours)
    assert not set(theirs) & {i.instance_id for i in view.instances}
    assert all(i.private_ip and i.private_ip.startswith("127.0.20.") for i in view.instances)
    assert fault_proxy.calls == ["DescribeInstances", "DescribeSpotInstanceRequests"]
    assert fault_proxy.params("DescribeInstances")[0]["MaxResults"] == "1000"


async def test_describe_fleet_shows_terminated_and_interrupted_instances(
    cloud: Ec2Cloud, moto_ec2: MotoEc2
) -> None:
    stopped_by_us, interrupted, running = launch_raw(moto_ec2, FLEET, 3)
    ec2 = moto_ec2.client()
    ec2.terminate_instances(InstanceIds=[stopped_by_us, interrupted])
    # EC2 reclaiming a spot instance cannot be asked of moto's API: set its state reason.
    backend = ec2_backends[DEFAULT_ACCOUNT_ID][moto_ec2.region]
    backend.get_instance(interrupted).state_reason = StateReason(
        f"{SPOT_INTERRUPTION_REASON}: Spot instance termination", SPOT_INTERRUPTION_REASON
    )

    view = await cloud.describe_fleet(FLEET)

    by_id = {i.instance_id: i for i in view.instances}
    assert by_id[running].state is InstanceState.RUNNING and by_id[running].state_reason is None
    assert by_id[stopped_by_us].state is InstanceState.TERMINATED
    assert by_id[stopped_by_us].state_reason == "Client.UserInitiatedShutdown"
    assert by_id[interrupted].state is InstanceState.TERMINATED
    assert by_id[interrupted].state_reason == SPOT_INTERRUPTION_REASON


async def test_spot_requests_of_the_fleet_are_read_and_cancelled(
    cloud: Ec2Cloud, moto_ec2: MotoEc2
) -> None:
    ec2 = moto_ec2.client()

    def request(fleet: str) -> str:
        answer = ec2.request_spot_instances(
            SpotPrice="0.05",
            InstanceCount=1,
            LaunchSpecification={"ImageId": AMI, "InstanceType": "m5.large"},
            TagSpecifications=[
                {
                    "ResourceType": "spot-instances-request",
                    "Tags": [{"Key": "controller:fleet", "Value": fleet}],
                }
            ],
        )
        return answer["SpotInstanceRequests"][0]["SpotInstanceRequestId"]

    ours, theirs = request(FLEET), request(OTHER)

    view = await cloud.describe_fleet(FLEET)
    assert [r.request_id for r in view.requests] == [ours]
    assert view.requests[0].instance_type == "m5.large"

    assert (await cloud.cancel_requests([view.requests[0].request_id])).ok
    remaining = ec2.describe_spot_instance_requests()["SpotInstanceRequests"]
    assert [r["SpotInstanceRequestId"] for r in remaining] == [theirs]


async def test_terminate_skips_unknown_ids_and_wait_terminated_returns_nothing_alive(
    cloud: Ec2Cloud, moto_ec2: MotoEc2
) -> None:
    ids = [InstanceId(i) for i in launch_raw(moto_ec2, FLEET, 3)]

    result = await cloud.terminate([*ids, InstanceId("i-0000000000000dead")])
    left = await cloud.wait_terminated(ids, timeout=10, poll_interval=0.1)

    assert result.error is None
    assert result.not_found == ("i-0000000000000dead",)  # said, not taken for "terminated"
    assert left == ()
    view = await cloud.describe_fleet(FLEET)
    assert {i.state for i in view.instances} == {InstanceState.TERMINATED}


async def test_wait_terminated_gives_up_at_the_timeout(cloud: Ec2Cloud, moto_ec2: MotoEc2) -> None:
    ids = [InstanceId(i) for i in launch_raw(moto_ec2, FLEET, 2)]

    left = await cloud.wait_terminated(ids, timeout=0.3, poll_interval=0.1)

    assert left == tuple(ids)


async def test_dry_run_terminate_checks_without_terminating(
    cloud: Ec2Cloud, moto_ec2: MotoEc2
) -> None:
    ids = [InstanceId(i) for i in launch_raw(moto_ec2, FLEET, 2)]

    result = await cloud.terminate(ids, dry_run=True)

    assert result.ok and result.error is not None
    assert result.error.kind is ErrorKind.DRY_RUN_OK
    view = await cloud.describe_fleet(FLEET)
    assert {i.state for i in view.instances} == {InstanceState.RUNNING}


async def test_terminate_reports_a_real_failure(
    proxied: Ec2Cloud, moto_ec2: MotoEc2, fault_proxy: FaultProxy
) -> None:
    ids = [InstanceId(i) for i in launch_raw(moto_ec2, FLEET, 2)]
    fault_proxy.fail("TerminateInstances", "UnauthorizedOperation", "not allowed")

    result = await proxied.terminate(ids)

    assert not result.ok and result.error is not None
    assert (result.error.kind, result.error.operation) == (ErrorKind.AUTH, "TerminateInstances")


async def test_spot_price_is_a_float(cloud: Ec2Cloud, moto_ec2: MotoEc2) -> None:
    in_zone = await cloud.spot_price("m5.large", moto_ec2.zone)
    anywhere = await cloud.spot_price("m5.large", "")

    assert isinstance(in_zone, float) and in_zone > 0
    assert isinstance(anywhere, float) and anywhere <= in_zone


# security groups


async def test_security_group_lifecycle(cloud: Ec2Cloud, moto_ec2: MotoEc2) -> None:
    vpc = await cloud.subnet_vpc(moto_ec2.subnet_id)
    assert vpc == moto_ec2.vpc_id
    group_id, error = await cloud.create_security_group(
        name=f"{FLEET}-slaves", description="render slaves", vpc_id=vpc, fleet=FLEET
    )
    assert error is None and group_id

    found = await cloud.find_security_group(f"{FLEET}-slaves", vpc)
    assert found is not None and found.group_id == group_id and found.fleet == FLEET
    tags = moto_ec2.client().describe_security_groups(GroupIds=[group_id])["SecurityGroups"][0]
    assert {t["Key"]: t["Value"] for t in tags["Tags"]}["controller:role"] == "slave"

    master = "203.0.113.7/32"
    wanted = [IngressRule(cidr=master, port=8101), IngressRule(cidr=master, port=22)]
    assert (await cloud.authorize_ingress(group_id, wanted)).ok
    assert (await cloud.authorize_ingress(group_id, wanted)).ok  # already there: fine
    group = await cloud.describe_security_group(group_id)
    assert group is not None and group.rules == frozenset(wanted)

    assert (await cloud.revoke_ingress(group_id, [wanted[1]])).ok
    assert (await cloud.revoke_ingress(group_id, [wanted[1]])).ok  # already gone: fine
    group = await cloud.describe_security_group(group_id)
    assert group is not None and group.rules == frozenset(wanted[:1])

    groups, error = await cloud.fleet_security_groups(FLEET)
    assert error is None and [g.group_id for g in groups] == [group_id]

    assert (await cloud.delete_security_group(group_id)).ok
    assert await cloud.describe_security_group(group_id) is None
    assert await cloud.find_security_group(f"{FLEET}-slaves", vpc) is None
    assert (await cloud.delete_security_group(group_id)).ok  # already gone: fine


async def test_foreign_rules_are_read_and_revoked_exactly(
    cloud: Ec2Cloud, moto_ec2: MotoEc2
) -> None:
    ec2 = moto_ec2.client()
    group_id = ec2.create_security_group(
        GroupName="hand-made", Description="d", VpcId=moto_ec2.vpc_id
    )["GroupId"]
    ec2.authorize_security_group_ingress(
        GroupId=group_id,
        IpPermissions=[
            {
                "IpProtocol": "tcp",
                "FromPort": 8000,
                "ToPort": 8200,
                "IpRanges": [{"CidrIp": "0.0.0.0/0"}],
            },
            {"IpProtocol": "-1", "IpRanges": [{"CidrIp": "10.0.0.0/8"}]},
        ],
    )

    group = await cloud.describe_security_group(group_id)
    assert group is not None and group.fleet == ""
    assert group.rules == {
        IngressRule(cidr="0.0.0.0/0", port=8000, protocol="tcp:8000-8200"),
        IngressRule(cidr="10.0.0.0/8", port=-1, protocol="-1"),
    }
    assert (await cloud.revoke_ingress(group_id, sorted(group.rules, key=str))).ok
    group = await cloud.describe_security_group(group_id)
    assert group is not None and group.rules == frozenset()


async def test_delete_security_group_waits_out_dependency_violation(
    proxied: Ec2Cloud, moto_ec2: MotoEc2, fault_proxy: FaultProxy
) -> None:
    group_id, _ = await proxied.create_security_group(
        name="busy", description="d", vpc_id=moto_ec2.vpc_id, fleet=FLEET
    )
    assert group_id is not None
    fault_proxy.fail("DeleteSecurityGroup", "DependencyViolation", "in use", times=1)

    result = await proxied.delete_security_group(group_id)

    assert result.ok
    assert fault_proxy.count("DeleteSecurityGroup") == 2
    assert await proxied.describe_security_group(group_id) is None


async def test_delete_security_group_gives_up_on_lasting_dependency_violation(
    proxied: Ec2Cloud, moto_ec2: MotoEc2, fault_proxy: FaultProxy
) -> None:
    group_id, _ = await proxied.create_security_group(
        name="busy", description="d", vpc_id=moto_ec2.vpc_id, fleet=FLEET
    )
    assert group_id is not None
    fault_proxy.fail("DeleteSecurityGroup", "DependencyViolation", "in use")

    result = await proxied.delete_security_group(group_id, retry_for=0.0)

    assert not result.ok and result.error is not None
    assert result.error.code == "DependencyViolation"
    assert await proxied.describe_security_group(group_id) is not None


def test_deleting_a_group_waits_out_lingering_network_interfaces() -> None:
    # Network interfaces of terminated instances go minutes later; EC2 refuses the group's
    # deletion with DependencyViolation until then (Terraform waits 5 minutes too).
    assert DEPENDENCY_TIMEOUT >= 300


async def test_subnet_vpc_default_and_unknown(cloud: Ec2Cloud, moto_ec2: MotoEc2) -> None:
    default = moto_ec2.client().describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])[
        "Vpcs"
    ][0]["VpcId"]

    assert await cloud.subnet_vpc("") == default
    assert await cloud.subnet_vpc("subnet-00000000000000000") is None
    assert await cloud.find_vpc("subnet-00000000000000000") == (None, None)  # an answer: none


# credentials and construction


async def test_seed_credentials_are_the_fallback(
    moto_ec2: MotoEc2, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("EC2_ACCESS_KEY", "AKIASEEDFALLBACK0001")
    monkeypatch.setenv("EC2_SECRET_KEY", "seed-secret-value")
    launch_raw(moto_ec2, FLEET)

    async with Ec2Cloud(moto_ec2.region, endpoint_url=moto_ec2.endpoint_url) as cloud:
        view = await cloud.describe_fleet(FLEET)

    assert view.error is None and len(view.instances) == 1


async def test_no_credentials_at_all_is_an_auth_error(
    moto_ec2: MotoEc2, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "EC2_ACCESS_KEY", "EC2_SECRET_KEY"):
        monkeypatch.delenv(name, raising=False)

    async with Ec2Cloud(moto_ec2.region, endpoint_url=moto_ec2.endpoint_url) as cloud:
        view = await cloud.describe_fleet(FLEET)

    assert view.error is not None and view.error.kind is ErrorKind.AUTH
    assert "EC2_ACCESS_KEY" in view.error.message


async def test_make_ec2_cloud_reads_region_and_aws_section(moto_ec2: MotoEc2) -> None:
    config = Config(
        slave=SlaveSection(region=moto_ec2.region),
        aws=AwsSection(endpoint_url=moto_ec2.endpoint_url, max_attempts=2, call_timeout=3),
    )
    launch_raw(moto_ec2, FLEET)

    async with make_ec2_cloud(config) as cloud:
        view = await cloud.describe_fleet(FLEET)

    assert cloud.region == moto_ec2.region and cloud.endpoint_url == moto_ec2.endpoint_url
    assert view.error is None and len(view.instances) == 1


async def test_unopened_cloud_says_how_to_open_it() -> None:
    with pytest.raises(RuntimeError, match="async with"):
        await Ec2Cloud("us-east-1").describe_fleet(FLEET)


# pure parts


def test_launch_params_spot_options_and_devices() -> None:
    base = LaunchSpec(
        fleet=FLEET,
        role=Role.NODE,
        image_id=AMI,
        instance_type="m5.xlarge",
        count=4,
        client_token="tok",
        snapshots=("snap-1", "snap-2"),
        zone="us-east-1b",
    )

    params = launch_params(base)
    priced = launch_params(LaunchSpec(**{**_fields(base), "max_price": 0.08}))

    assert (params["MinCount"], params["MaxCount"], params["ClientToken"]) == (1, 4, "tok")
    assert params["InstanceMarketOptions"] == {
        "MarketType": "spot",
        "SpotOptions": {
            "SpotInstanceType": "one-time",
            "InstanceInterruptionBehavior": "terminate",
        },
    }
    assert priced["InstanceMarketOptions"]["SpotOptions"]["MaxPrice"] == "0.08"
    assert [m["DeviceName"] for m in params["BlockDeviceMappings"]] == ["/dev/sdf", "/dev/sdg"]
    assert {m["Ebs"]["SnapshotId"] for m in params["BlockDeviceMappings"]} == {"snap-1", "snap-2"}
    assert params["Placement"] == {"AvailabilityZone": "us-east-1b"}
    assert "SubnetId" not in params and "KeyName" not in params and "UserData" not in params
    kinds = [t["ResourceType"] for t in params["TagSpecifications"]]
    assert kinds == ["instance", "volume", "spot-instances-request"]
    role_tags = [t for t in params["TagSpecifications"][0]["Tags"] if t["Key"] == "controller:role"]
    assert role_tags == [{"Key": "controller:role", "Value": "node"}]


async def test_too_many_snapshots_is_refused_before_calling(cloud: Ec2Cloud, moto_ec2) -> None:
    snapshots = tuple(f"snap-{n}" for n in range(len(DATA_DEVICES) + 1))

    result = await cloud.launch(spec(moto_ec2, snapshots=snapshots))

    assert result.error is not None and result.error.kind is ErrorKind.INVALID


def _fields(launch: LaunchSpec) -> dict:
    return {name: getattr(launch, name) for name in LaunchSpec.__dataclass_fields__}


@pytest.mark.parametrize(
    ("code", "status", "kind"),
    [
        ("InsufficientInstanceCapacity", 500, ErrorKind.CAPACITY),
        ("InsufficientCapacity", 400, ErrorKind.CAPACITY),
        ("SpotMaxPriceTooLow", 400, ErrorKind.PRICE),
        ("MaxSpotInstanceCountExceeded", 400, ErrorKind.LIMIT),
        ("VcpuLimitExceeded", 400, ErrorKind.LIMIT),
        ("RequestLimitExceeded", 503, ErrorKind.THROTTLED),
        ("UnauthorizedOperation", 403, ErrorKind.AUTH),
        ("AuthFailure", 401, ErrorKind.AUTH),
        ("InvalidAMIID.NotFound", 400, ErrorKind.INVALID),
        ("InvalidAMIID.Malformed", 400, ErrorKind.INVALID),
        ("InvalidSubnetID.NotFound", 400, ErrorKind.INVALID),
        ("InvalidGroup.NotFound", 400, ErrorKind.INVALID),
        ("InvalidKeyPair.NotFound", 400, ErrorKind.INVALID),
        ("DryRunOperation", 412, ErrorKind.DRY_RUN_OK),
        ("InternalError", 500, ErrorKind.UNAVAILABLE),
        ("SomethingNew", 503, ErrorKind.UNAVAILABLE),
        ("SomethingNew", 400, ErrorKind.INVALID),
    ],
)
def test_error_codes_classify(code: str, status: int, kind: ErrorKind) -> None:
    exc = ClientError(
        {"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "RunInstances",
    )

    error = classify(exc, "RunInstances", instance_type="m5.large")

    assert (error.kind, error.code, error.operation, error.instance_type) == (
        kind,
        code,
        "RunInstances",
        "m5.large",
    )
    assert kind_of(code, status) is kind


def test_transport_errors_classify_as_unavailable() -> None:
    refused = EndpointConnectionError(endpoint_url="http://127.0.0.1:9")
    slow = ReadTimeoutError(endpoint_url="http://127.0.0.1:9")

    assert classify(refused, "DescribeInstances").kind is ErrorKind.UNAVAILABLE
    assert classify(slow, "DescribeInstances").kind is ErrorKind.UNAVAILABLE
    assert classify(TimeoutError(), "DescribeInstances").kind is ErrorKind.UNAVAILABLE


def test_every_error_kind_but_none_is_reachable_from_the_table() -> None:
    assert set(CODE_KINDS.values()) == set(ErrorKind)


# user data


def test_user_data_is_valid_bash_and_starts_one_slave_per_port(tmp_path) -> None:
    script = render_slave_user_data([8101, 8102], extra='echo extra-ran > "$MARKER"')
    fake = tmp_path / "bin" / "gbrowse_slave"
    fake.parent.mkdir()
    fake.write_text('#!/bin/sh\necho "$@" >> "$GBROWSE_LOGDIR/started"\n')
    fake.chmod(0o755)
    user = subprocess.run(["id", "-un"], capture_output=True, text=True, check=True).stdout
    env = {
        "PATH": f"{fake.parent}:/usr/bin:/bin",
        "SLAVE_USER": user.strip(),
        "GBROWSE_RUNDIR": str(tmp_path / "run"),
        "GBROWSE_LOGDIR": str(tmp_path / "log"),
        "MARKER": str(tmp_path / "extra"),
    }

    bash = shutil.which("bash")
    assert bash is not None
    subprocess.run([bash, "-n"], input=script, text=True, check=True)
    subprocess.run([bash], input=script, text=True, check=True, env=env, timeout=30)

    started = (tmp_path / "log" / "started").read_text().splitlines()
    assert [line.split()[:2] for line in started] == [["--port", "8101"], ["--port", "8102"]]
    assert f"--pid {tmp_path}/run/gbrowse-slave.8101.pid" in started[0]
    assert (tmp_path / "extra").read_text() == "extra-ran\n"
    assert script.startswith("#!/bin/bash\n")


@pytest.mark.parametrize("ports", [[], [0], [70000], ["8101"]])
def test_user_data_refuses_bad_ports(ports) -> None:
    with pytest.raises(ValueError):
        render_slave_user_data(ports)
