"""Fleet teardown (controller.cloud.teardown), `controller teardown`, and renderfarm.conf writing.

Against moto's EC2 server through the fault proxy, whose call log shows the order of the steps:
moto would delete a group still in use, so the order is checked by what the code does.
"""

from __future__ import annotations

import os
import stat
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from controller.cli import main
from controller.cloud.ec2cloud import Ec2Cloud
from controller.cloud.port import LaunchSpec
from controller.cloud.teardown import teardown_fleet
from controller.gbrowse.renderfarm import render_renderfarm, write_atomic
from controller.messages import ErrorKind, Role
from tests.harness.fault_proxy import FaultProxy
from tests.harness.moto_server import MotoEc2

FLEET = "gb-test"
OTHER = "other-fleet"
EMPTY_RENDERFARM = "[GENERAL]\nrenderfarm = 0\nremote renderer =\n"


@pytest.fixture
async def cloud(moto_ec2: MotoEc2, fault_proxy: FaultProxy) -> AsyncIterator[Ec2Cloud]:
    async with Ec2Cloud(
        moto_ec2.region, endpoint_url=fault_proxy.endpoint_url, max_attempts=1, call_timeout=5
    ) as cloud:
        yield cloud


async def make_fleet(cloud: Ec2Cloud, moto: MotoEc2, fleet: str, count: int) -> tuple[list, str]:
    """`count` instances of `fleet` behind a group created for it, as the controller makes them."""
    group_id, error = await cloud.create_security_group(
        name=f"{fleet}-slaves", description="slaves", vpc_id=moto.vpc_id, fleet=fleet
    )
    assert error is None and group_id is not None
    ids = []
    for n in range(count):  # moto launches MinCount instances per call
        result = await cloud.launch(
            LaunchSpec(
                fleet=fleet,
                role=Role.SLAVE,
                image_id="ami-12345678",
                instance_type="m5.large",
                count=1,
                client_token=f"{fleet}-{n}",
                subnet=moto.subnet_id,
                security_group_ids=(group_id,),
            )
        )
        assert result.error is None
        ids += [i.instance_id for i in result.instances]
    return ids, group_id


def open_spot_request(moto: MotoEc2, fleet: str) -> str:
    answer = moto.client().request_spot_instances(
        SpotPrice="0.05",
        InstanceCount=1,
        LaunchSpecification={"ImageId": "ami-12345678", "InstanceType": "m5.large"},
        TagSpecifications=[
            {
                "ResourceType": "spot-instances-request",
                "Tags": [{"Key": "controller:fleet", "Value": fleet}],
            }
        ],
    )
    return answer["SpotInstanceRequests"][0]["SpotInstanceRequestId"]


def states(moto: MotoEc2, ids: list[str]) -> set[str]:
    reservations = moto.client().describe_instances(InstanceIds=ids)["Reservations"]
    return {i["State"]["Name"] for r in reservations for i in r["Instances"]}


def group_ids(moto: MotoEc2) -> set[str]:
    return {g["GroupId"] for g in moto.client().describe_security_groups()["SecurityGroups"]}


# teardown_fleet


async def test_teardown_ends_launches_ec2_does_not_show_yet(
    cloud: Ec2Cloud, moto_ec2: MotoEc2, fault_proxy: FaultProxy
) -> None:
    # Right after RunInstances, EC2 may show nothing and not know the ids (the proxy hides them
    # for 3 s): a teardown trusting the read would say "nothing left" while they run on.
    fault_proxy.hide_new_instances(3.0)
    ids, _ = await make_fleet(cloud, moto_ec2, FLEET, 2)
    lines: list[str] = []

    report = await teardown_fleet(
        cloud, FLEET, known_ids=ids, progress=lines.append, poll_interval=0.1
    )

    assert report.clean, (str(report), lines)
    assert states(moto_ec2, ids) == {"terminated"}
    assert any("does not know" in line for line in lines), lines
    asked = fault_proxy.instance_ids("TerminateInstances")
    assert len(asked) >= 2 and set(asked[-1]) <= set(ids)


async def test_teardown_removes_the_fleet_in_order_and_nothing_else(
    cloud: Ec2Cloud, moto_ec2: MotoEc2, fault_proxy: FaultProxy
) -> None:
    ours, our_group = await make_fleet(cloud, moto_ec2, FLEET, 3)
    theirs, their_group = await make_fleet(cloud, moto_ec2, OTHER, 2)
    request = open_spot_request(moto_ec2, FLEET)
    untagged = moto_ec2.client().create_security_group(
        GroupName="hand-made", Description="not ours", VpcId=moto_ec2.vpc_id
    )["GroupId"]
    fault_proxy.clear()
    lines: list[str] = []

    report = await teardown_fleet(cloud, FLEET, progress=lines.append, poll_interval=0.1)

    assert report.clean, str(report)
    assert str(report) == "nothing left"
    # (moto fills the legacy request at once but does not pass its tags on to the instance,
    # so that instance is not the fleet's; the request itself is, and is cancelled.)
    assert states(moto_ec2, ours) == {"terminated"}
    assert states(moto_ec2, theirs) == {"running"}
    requests = moto_ec2.client().describe_spot_instance_requests()["SpotInstanceRequests"]
    assert request not in {r["SpotInstanceRequestId"] for r in requests}
    assert our_group not in group_ids(moto_ec2)
    assert {their_group, untagged} <= group_ids(moto_ec2)
    calls = fault_proxy.calls
    assert calls.index("CancelSpotInstanceRequests") < calls.index("TerminateInstances")
    assert calls.index("TerminateInstances") < calls.index("DeleteSecurityGroup")
    assert calls.count("DeleteSecurityGroup") == 1
    assert any(line.startswith("cancelling 1 spot request") for line in lines)
    assert any(line.startswith("terminating 3 instance") for line in lines)
    assert any(line.startswith(f"deleting security group {our_group}") for line in lines)


async def test_teardown_of_an_empty_fleet_is_clean(cloud: Ec2Cloud, fault_proxy) -> None:
    report = await teardown_fleet(cloud, FLEET)

    assert report.clean
    assert "TerminateInstances" not in fault_proxy.calls


async def test_groups_stay_while_instances_remain(
    cloud: Ec2Cloud, moto_ec2: MotoEc2, fault_proxy: FaultProxy
) -> None:
    ours, group = await make_fleet(cloud, moto_ec2, FLEET, 2)
    fault_proxy.fail("TerminateInstances", "UnauthorizedOperation", "no ec2:TerminateInstances")

    report = await teardown_fleet(cloud, FLEET, timeout=0.5, poll_interval=0.1)

    assert not report.clean
    assert sorted(report.instances) == sorted(ours)
    assert report.security_groups == (group,)
    assert [e.kind for e in report.errors] == [ErrorKind.AUTH]
    assert "DeleteSecurityGroup" not in fault_proxy.calls
    assert group in group_ids(moto_ec2)
    assert states(moto_ec2, ours) == {"running"}


async def test_unreadable_fleet_deletes_nothing(
    cloud: Ec2Cloud, moto_ec2: MotoEc2, fault_proxy: FaultProxy
) -> None:
    ours, _ = await make_fleet(cloud, moto_ec2, FLEET, 1)
    fault_proxy.fail("DescribeInstances", "InternalError", status=500)

    report = await teardown_fleet(cloud, FLEET, timeout=4.0)  # asked again until the deadline

    assert fault_proxy.count("DescribeInstances") >= 2
    assert not report.clean and not report.verified
    assert "could not be read" in str(report)
    assert "TerminateInstances" not in fault_proxy.calls
    assert "DeleteSecurityGroup" not in fault_proxy.calls
    assert states(moto_ec2, ours) == {"running"}


async def test_only_groups_tagged_with_the_fleet_are_deleted(
    cloud: Ec2Cloud, moto_ec2: MotoEc2
) -> None:
    _, fleet_group = await make_fleet(cloud, moto_ec2, FLEET, 0)
    untagged = moto_ec2.client().create_security_group(
        GroupName="users-own", Description="not ours", VpcId=moto_ec2.vpc_id
    )["GroupId"]
    lines: list[str] = []

    report = await teardown_fleet(
        cloud,
        FLEET,
        owned_group_id=untagged,
        keep_group_ids=(fleet_group,),
        progress=lines.append,
    )

    assert report.clean
    assert {untagged, fleet_group} <= group_ids(moto_ec2)
    assert any("not tagged controller:fleet" in line for line in lines)
    assert any("configured security_group" in line for line in lines)


async def test_owned_group_alone_when_fleet_groups_are_left_to_others(
    cloud: Ec2Cloud, moto_ec2: MotoEc2
) -> None:
    _, owned = await make_fleet(cloud, moto_ec2, FLEET, 1)
    second, _ = await cloud.create_security_group(
        name="second", description="d", vpc_id=moto_ec2.vpc_id, fleet=FLEET
    )

    report = await teardown_fleet(
        cloud, FLEET, owned_group_id=owned, delete_fleet_groups=False, poll_interval=0.1
    )

    assert report.clean
    assert owned not in group_ids(moto_ec2)
    assert second in group_ids(moto_ec2)


async def test_dry_run_teardown_changes_nothing(
    cloud: Ec2Cloud, moto_ec2: MotoEc2, fault_proxy: FaultProxy
) -> None:
    ours, group = await make_fleet(cloud, moto_ec2, FLEET, 2)

    report = await teardown_fleet(cloud, FLEET, dry_run=True)

    assert not report.clean
    assert sorted(report.instances) == sorted(ours) and report.security_groups == (group,)
    assert {e.kind for e in report.errors} == {ErrorKind.DRY_RUN_OK}
    assert states(moto_ec2, ours) == {"running"}
    assert group in group_ids(moto_ec2)


# controller teardown


def write_config(tmp_path: Path, moto: MotoEc2, renderfarm: Path, *, fleet: str = FLEET) -> Path:
    marker = tmp_path / "reloads"
    config = tmp_path / "controller.toml"
    config.write_text(
        textwrap.dedent(
            f"""\
            [controller]
            fleet = "{fleet}"

            [master]
            renderfarm_conf = "{renderfarm}"
            reload_command = ["sh", "-c", "echo reloaded >> {marker}"]

            [slave]
            region = "{moto.region}"
            image_id = "ami-12345678"
            subnet = "{moto.subnet_id}"

            [aws]
            endpoint_url = "{moto.endpoint_url}"
            max_attempts = 2
            call_timeout = 5
            """
        )
    )
    return config


def make_fleet_raw(moto: MotoEc2, fleet: str, count: int) -> tuple[list[str], str]:
    """As make_fleet, straight into moto (for the sync command tests)."""
    ec2 = moto.client()
    tags = [
        {"Key": "controller:fleet", "Value": fleet},
        {"Key": "controller:role", "Value": "slave"},
    ]
    group = ec2.create_security_group(
        GroupName=f"{fleet}-slaves",
        Description="slaves",
        VpcId=moto.vpc_id,
        TagSpecifications=[{"ResourceType": "security-group", "Tags": tags}],
    )["GroupId"]
    answer = ec2.run_instances(
        ImageId="ami-12345678",
        MinCount=count,
        MaxCount=count,
        SubnetId=moto.subnet_id,
        SecurityGroupIds=[group],
        TagSpecifications=[{"ResourceType": "instance", "Tags": tags}],
    )
    return [i["InstanceId"] for i in answer["Instances"]], group


def test_teardown_command_end_to_end(
    moto_ec2: MotoEc2, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ours, group = make_fleet_raw(moto_ec2, FLEET, 2)
    theirs, _ = make_fleet_raw(moto_ec2, OTHER, 1)
    renderfarm = tmp_path / "renderfarm.conf"
    renderfarm.write_text(render_renderfarm(["http://127.0.20.9:8101"]))
    config = write_config(tmp_path, moto_ec2, renderfarm)

    first = main(["teardown", "-c", str(config)])
    out = capsys.readouterr().out
    second = main(["teardown", "-c", str(config)])

    assert first == 0, out
    assert renderfarm.read_text() == EMPTY_RENDERFARM
    assert (
        tmp_path / "reloads"
    ).read_text() == "reloaded\n"  # once: the second run changed nothing
    assert out.splitlines()[0].startswith("renderfarm.conf:")  # the file goes first
    assert any(line.startswith("terminating 2 instance") for line in out.splitlines())
    assert states(moto_ec2, ours) == {"terminated"}
    assert states(moto_ec2, theirs) == {"running"}
    assert group not in group_ids(moto_ec2)
    assert second == 0


def test_teardown_command_exits_1_when_something_is_left(
    moto_ec2: MotoEc2, fault_proxy: FaultProxy, tmp_path: Path
) -> None:
    ours, group = make_fleet_raw(moto_ec2, FLEET, 1)
    fault_proxy.fail("TerminateInstances", "UnauthorizedOperation")
    config = write_config(tmp_path, moto_ec2, tmp_path / "renderfarm.conf")
    config.write_text(config.read_text().replace(moto_ec2.endpoint_url, fault_proxy.endpoint_url))

    assert main(["teardown", "-c", str(config)]) == 1
    assert states(moto_ec2, ours) == {"running"}
    assert group in group_ids(moto_ec2)
    assert (tmp_path / "renderfarm.conf").read_text() == EMPTY_RENDERFARM


def test_teardown_command_bad_config_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('[controller]\nfleet = "x"\nno_such_key = 1\n')

    assert main(["teardown", "-c", str(config)]) == 2
    err = capsys.readouterr().err
    assert str(config) in err and "no_such_key" in err


# renderfarm.conf


def test_render_renderfarm_formats() -> None:
    assert render_renderfarm([]) == EMPTY_RENDERFARM
    assert render_renderfarm(["http://10.0.0.5:8101", "http://10.0.0.6:8101"]) == (
        "[GENERAL]\nrenderfarm = 1\nremote renderer =\n"
        "\thttp://10.0.0.5:8101\n\thttp://10.0.0.6:8101\n"
    )


def test_write_atomic_reports_change_and_keeps_mode(tmp_path: Path) -> None:
    path = tmp_path / "renderfarm.conf"

    assert write_atomic(path, "one\n") is True
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert write_atomic(path, "one\n") is False
    path.chmod(0o640)
    assert write_atomic(path, "two\n") is True
    assert path.read_text() == "two\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert sorted(os.listdir(tmp_path)) == ["renderfarm.conf"]  # no temporary file left


def test_write_atomic_into_a_missing_directory_raises(tmp_path: Path) -> None:
    path = tmp_path / "missing-dir" / "renderfarm.conf"

    with pytest.raises(OSError):
        write_atomic(path, "x\n")
