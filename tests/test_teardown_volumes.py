"""Teardown removes the fleet's EBS volumes that outlived their instances, and no one else's.

Against moto's EC2 server through the fault proxy (its call log shows which volumes were asked
to go, and it injects the errors moto cannot make: a volume still attached, a refused delete).
moto honours DeleteOnTermination: a volume launched without it is `available` once its instance
is terminated, as on EC2. moto does not report DeleteOnTermination in DescribeVolumes, so the
rule that such a volume goes with its instance is checked on sort_volumes directly.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from controller.cli import main
from controller.cloud.ec2_shapes import parse_volume
from controller.cloud.ec2cloud import Ec2Cloud
from controller.cloud.port import Volume
from controller.cloud.teardown import sort_volumes, teardown_fleet
from controller.messages import InstanceId
from tests.harness.fault_proxy import FaultProxy
from tests.harness.moto_server import MotoEc2
from tests.test_teardown import FLEET, OTHER, group_ids, make_fleet_raw, states, write_config


@pytest.fixture
async def cloud(moto_ec2: MotoEc2, fault_proxy: FaultProxy) -> AsyncIterator[Ec2Cloud]:
    async with Ec2Cloud(
        moto_ec2.region, endpoint_url=fault_proxy.endpoint_url, max_attempts=1, call_timeout=5
    ) as cloud:
        yield cloud


def tags(fleet: str, role: str = "slave") -> list[dict[str, str]]:
    return [{"Key": "controller:fleet", "Value": fleet}, {"Key": "controller:role", "Value": role}]


def make_volume(moto: MotoEc2, fleet: str | None, role: str = "slave") -> str:
    """A detached (available) 1 GiB volume, tagged with `fleet` (None: untagged)."""
    extra = {"TagSpecifications": [{"ResourceType": "volume", "Tags": tags(fleet, role)}]}
    answer = moto.client().create_volume(
        Size=1, AvailabilityZone=moto.zone, **(extra if fleet else {})
    )
    return answer["VolumeId"]


def launch_keeping_volume(moto: MotoEc2, fleet: str | None) -> tuple[str, str]:
    """An instance (of `fleet`, or untagged) with a data volume tagged with FLEET that outlives
    it (no DeleteOnTermination): the instance id and the volume id."""
    ec2 = moto.client()
    specs = [{"ResourceType": "volume", "Tags": tags(FLEET)}]
    if fleet:
        specs.append({"ResourceType": "instance", "Tags": tags(fleet)})
    answer = ec2.run_instances(
        ImageId="ami-12345678",
        MinCount=1,
        MaxCount=1,
        SubnetId=moto.subnet_id,
        BlockDeviceMappings=[
            {"DeviceName": "/dev/sdf", "Ebs": {"VolumeSize": 1, "DeleteOnTermination": False}}
        ],
        TagSpecifications=specs,
    )
    instance_id = answer["Instances"][0]["InstanceId"]
    (volume_id,) = attached_volumes(moto, instance_id)
    return instance_id, volume_id


def attached_volumes(moto: MotoEc2, instance_id: str) -> list[str]:
    filters = [{"Name": "attachment.instance-id", "Values": [instance_id]}]
    return [v["VolumeId"] for v in moto.client().describe_volumes(Filters=filters)["Volumes"]]


def volume_ids(moto: MotoEc2) -> set[str]:
    return {v["VolumeId"] for v in moto.client().describe_volumes()["Volumes"]}


def deleted(proxy: FaultProxy) -> list[str]:
    """The volumes each DeleteVolume named, in order."""
    return [params["VolumeId"] for params in proxy.params("DeleteVolume")]


# `controller teardown`


def test_dry_run_lists_the_fleets_volumes_and_teardown_deletes_only_them(
    moto_ec2: MotoEc2,
    fault_proxy: FaultProxy,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ours, _ = make_fleet_raw(moto_ec2, FLEET, 1)
    left = make_volume(moto_ec2, FLEET)  # detached: an instance ended without DeleteOnTermination
    node = make_volume(moto_ec2, FLEET, role="node")
    staging = make_volume(moto_ec2, FLEET, role="staging")  # the staging sweep's
    instance, kept_by_instance = launch_keeping_volume(moto_ec2, FLEET)  # in-use until it ends
    untagged = make_volume(moto_ec2, None)
    theirs = make_volume(moto_ec2, OTHER)
    config = write_config(tmp_path, moto_ec2, tmp_path / "renderfarm.conf")
    config.write_text(config.read_text().replace(moto_ec2.endpoint_url, fault_proxy.endpoint_url))
    fault_proxy.clear()

    planned = main(["teardown", "-c", str(config), "--dry-run"])
    plan = capsys.readouterr().out
    calls_in_dry_run = list(fault_proxy.calls)
    done = main(["teardown", "-c", str(config)])
    out = capsys.readouterr().out

    assert planned == 0, plan
    assert all(call.startswith("Describe") for call in calls_in_dry_run), calls_in_dry_run
    assert "delete 4 EBS volume(s) tagged with the fleet:" in plan
    assert plan.index("EBS volume(s)") < plan.index("security group(s)")  # teardown's order
    for volume in (left, node, staging):
        assert f"    {volume} 1 GiB available" in plan
    attached = f"in-use (attached to {instance}: deleted once it comes free) slave"
    assert f"    {kept_by_instance} 1 GiB {attached}" in plan
    assert untagged not in plan and theirs not in plan

    assert done == 0, out
    assert states(moto_ec2, [*ours, instance]) == {"terminated"}
    remaining = volume_ids(moto_ec2)
    assert not {left, node, staging, kept_by_instance} & remaining
    assert {untagged, theirs} <= remaining
    asked = deleted(fault_proxy)
    assert untagged not in asked and theirs not in asked
    assert sorted(asked) == sorted([left, node, kept_by_instance, staging])
    assert asked[-1] == staging  # by the staging sweep, after teardown_fleet's own
    calls = fault_proxy.calls
    assert calls.index("TerminateInstances") < calls.index("DeleteVolume")
    assert f"deleting volume {kept_by_instance} (1 GiB, available)" in out
    assert "teardown of fleet gb-test: nothing left" in out


def test_a_volume_the_config_names_is_never_torn_down_even_tagged(
    moto_ec2: MotoEc2,
    fault_proxy: FaultProxy,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A cluster's shared `volume_id` is the user's data, whatever tags it carries."""
    shared = make_volume(moto_ec2, FLEET, role="node")
    left = make_volume(moto_ec2, FLEET)
    config = write_config(tmp_path, moto_ec2, tmp_path / "renderfarm.conf")
    text = config.read_text().replace(moto_ec2.endpoint_url, fault_proxy.endpoint_url)
    config.write_text(text + f'\n[volume.shared]\nvolume_id = "{shared}"\nmount_path = "/data"\n')
    fault_proxy.clear()

    planned = main(["teardown", "-c", str(config), "--dry-run"])
    plan = capsys.readouterr().out
    done = main(["teardown", "-c", str(config)])
    out = capsys.readouterr().out

    assert planned == 0, plan
    assert left in plan and shared not in plan
    assert done == 0, out
    assert shared in volume_ids(moto_ec2) and left not in volume_ids(moto_ec2)
    assert shared not in deleted(fault_proxy)


def test_teardown_exits_1_when_a_volume_cannot_be_deleted(
    moto_ec2: MotoEc2,
    fault_proxy: FaultProxy,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    stuck = make_volume(moto_ec2, FLEET)
    other = make_volume(moto_ec2, FLEET)
    fault_proxy.fail("DeleteVolume", "UnauthorizedOperation", "no", when={"VolumeId": stuck})
    config = write_config(tmp_path, moto_ec2, tmp_path / "renderfarm.conf")
    config.write_text(config.read_text().replace(moto_ec2.endpoint_url, fault_proxy.endpoint_url))

    code = main(["teardown", "-c", str(config)])

    out = capsys.readouterr().out
    assert code == 1, out
    assert stuck in volume_ids(moto_ec2) and other not in volume_ids(moto_ec2)
    assert deleted(fault_proxy).count(stuck) == 1  # a refusal is not asked again
    assert f"left: 1 volume(s) [{stuck}]" in out


def test_a_fleet_whose_volumes_cannot_be_listed_is_not_touched(
    moto_ec2: MotoEc2,
    fault_proxy: FaultProxy,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ours, group = make_fleet_raw(moto_ec2, FLEET, 1)
    fault_proxy.fail("DescribeVolumes", "UnauthorizedOperation", "not allowed")
    config = write_config(tmp_path, moto_ec2, tmp_path / "renderfarm.conf")
    config.write_text(config.read_text().replace(moto_ec2.endpoint_url, fault_proxy.endpoint_url))

    code = main(["teardown", "-c", str(config)])

    assert code == 1
    assert states(moto_ec2, ours) == {"running"} and group in group_ids(moto_ec2)
    (line,) = capsys.readouterr().err.splitlines()
    assert "UnauthorizedOperation" in line and "controller iam-policy" in line
    assert all(call.startswith("Describe") for call in fault_proxy.calls), fault_proxy.calls


# teardown_fleet


async def test_a_volume_still_attached_is_deleted_once_it_comes_free(
    cloud: Ec2Cloud, moto_ec2: MotoEc2, fault_proxy: FaultProxy
) -> None:
    # EC2 detaches an ended instance's volumes moments after it shows "terminated": until then
    # DeleteVolume answers VolumeInUse.
    instance, volume = launch_keeping_volume(moto_ec2, FLEET)
    fault_proxy.fail("DeleteVolume", "VolumeInUse", f"{volume} is attached", times=1)
    lines: list[str] = []

    report = await teardown_fleet(cloud, FLEET, progress=lines.append, poll_interval=0.1)

    assert report.clean, (str(report), lines)
    assert states(moto_ec2, [instance]) == {"terminated"}
    assert volume not in volume_ids(moto_ec2)
    assert deleted(fault_proxy) == [volume, volume]
    assert any(line.startswith("waiting 1s for volume(s)") for line in lines), lines


async def test_a_volume_that_never_comes_free_is_left_within_the_timeout(
    cloud: Ec2Cloud, moto_ec2: MotoEc2, fault_proxy: FaultProxy
) -> None:
    volume = make_volume(moto_ec2, FLEET)
    fault_proxy.fail("DeleteVolume", "VolumeInUse", f"{volume} is attached")
    lines: list[str] = []

    report = await teardown_fleet(cloud, FLEET, progress=lines.append, timeout=2.0)

    assert not report.clean
    assert report.volumes == (volume,)
    assert str(report) == f"left: 1 volume(s) [{volume}]"
    assert 1 <= len(deleted(fault_proxy)) <= 2  # asked again while the timeout allowed
    assert any("still attached: run the teardown again later" in line for line in lines), lines


async def test_a_volume_attached_to_another_instance_is_left_and_named(
    cloud: Ec2Cloud, moto_ec2: MotoEc2, fault_proxy: FaultProxy
) -> None:
    theirs, volume = launch_keeping_volume(moto_ec2, None)  # fleet-tagged, on an untagged one
    lines: list[str] = []

    report = await teardown_fleet(cloud, FLEET, progress=lines.append)

    assert not report.clean
    assert report.volumes == (volume,)
    assert "DeleteVolume" not in fault_proxy.calls
    assert states(moto_ec2, [theirs]) == {"running"}
    assert volume in volume_ids(moto_ec2)
    assert any(f"attached to [{theirs}], not an instance of fleet {FLEET}" in x for x in lines)


async def test_staging_volumes_are_left_to_the_staging_sweep(
    cloud: Ec2Cloud, moto_ec2: MotoEc2, fault_proxy: FaultProxy
) -> None:
    staging = make_volume(moto_ec2, FLEET, role="staging")
    slave = make_volume(moto_ec2, FLEET)

    report = await teardown_fleet(cloud, FLEET)

    assert report.clean
    assert deleted(fault_proxy) == [slave]
    assert staging in volume_ids(moto_ec2)


async def test_unlisted_volumes_leave_the_report_unclean(
    cloud: Ec2Cloud, fault_proxy: FaultProxy
) -> None:
    fault_proxy.fail("DescribeVolumes", "UnauthorizedOperation", "not allowed")

    report = await teardown_fleet(cloud, FLEET)

    assert not report.clean
    assert str(report) == "left: the fleet's volumes could not be listed"


async def test_dry_run_asks_ec2_about_each_volume_and_deletes_none(
    cloud: Ec2Cloud, moto_ec2: MotoEc2, fault_proxy: FaultProxy
) -> None:
    volume = make_volume(moto_ec2, FLEET)

    report = await teardown_fleet(cloud, FLEET, dry_run=True)

    assert report.volumes == (volume,) and not report.clean
    assert fault_proxy.params("DeleteVolume")[0]["DryRun"] == "true"
    assert volume in volume_ids(moto_ec2)


# sort_volumes


def test_sort_volumes_by_what_teardown_does() -> None:
    ours = frozenset({"i-ours"})

    def volume(volume_id: str, state: str, *attached: str, **kw) -> Volume:
        return Volume(
            volume_id=volume_id, state=state, attached_to=tuple(map(InstanceId, attached)), **kw
        )

    volumes = [
        volume("vol-free", "available"),
        volume("vol-broken", "error"),
        volume("vol-detaching", "in-use", "i-ours"),
        volume("vol-new", "creating"),
        volume("vol-goes", "in-use", "i-ours", goes_with_instance=True),
        volume("vol-theirs", "in-use", "i-theirs", goes_with_instance=True),
        volume("vol-staging", "available", role="staging"),
        volume("vol-going", "deleting"),
    ]

    sorted_ = sort_volumes(volumes, ours)

    assert [v.volume_id for v in sorted_.free] == ["vol-free", "vol-broken"]
    assert sorted_.waiting == ("vol-detaching", "vol-new")
    assert [v.volume_id for v in sorted_.foreign] == ["vol-theirs"]


def test_a_volume_goes_with_its_instance_only_when_every_attachment_says_so() -> None:
    """EC2's DescribeVolumes shape (moto leaves DeleteOnTermination out)."""

    def item(*delete_on_termination: bool | None) -> dict:
        attachments = [
            {"InstanceId": f"i-{n}", "State": "attached"}
            | ({} if flag is None else {"DeleteOnTermination": flag})
            for n, flag in enumerate(delete_on_termination)
        ]
        return {"VolumeId": "vol-1", "State": "in-use", "Size": 8, "Attachments": attachments}

    assert parse_volume(item(True)) == Volume(
        volume_id="vol-1",
        state="in-use",
        size_gib=8,
        attached_to=(InstanceId("i-0"),),
        goes_with_instance=True,
    )
    assert not parse_volume(item(True, False)).goes_with_instance
    assert not parse_volume(item(None)).goes_with_instance
    assert not parse_volume(item()).goes_with_instance
    tagged = item() | {"Tags": [{"Key": "controller:role", "Value": "node"}]}
    assert parse_volume(tagged).role == "node" and parse_volume(tagged).attached_to == ()
