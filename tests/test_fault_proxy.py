"""The fault proxy's eventual-consistency emulation hides new instances the way real EC2 does."""

import time

import aiobotocore.session
import pytest
from aiobotocore.config import AioConfig
from botocore.exceptions import ClientError
from botocore.parsers import create_parser

from tests.harness.fault_proxy import FaultProxy, launched_instance_ids, without_instances
from tests.harness.moto_server import MotoEc2

TAG = {"Key": "cluster", "Value": "hide-test"}
TAG_FILTER = [{"Name": "tag:cluster", "Values": ["hide-test"]}]


def _launch(ec2, moto_ec2: MotoEc2, count: int) -> list[str]:
    launched = ec2.run_instances(
        ImageId="ami-12345678",
        InstanceType="t3.micro",
        MinCount=count,
        MaxCount=count,
        SubnetId=moto_ec2.subnet_id,
        TagSpecifications=[{"ResourceType": "instance", "Tags": [TAG]}],
    )
    return [i["InstanceId"] for i in launched["Instances"]]


def _ids(described: dict) -> set[str]:
    return {i["InstanceId"] for r in described["Reservations"] for i in r["Instances"]}


def _states(ec2, ids: list[str]) -> dict[str, str]:
    described = ec2.describe_instances(InstanceIds=ids)
    return {
        i["InstanceId"]: i["State"]["Name"]
        for r in described["Reservations"]
        for i in r["Instances"]
    }


def _not_found(caught: pytest.ExceptionInfo[ClientError]) -> tuple[int, str, str]:
    response = caught.value.response
    return (
        response["ResponseMetadata"]["HTTPStatusCode"],
        response["Error"]["Code"],
        response["Error"]["Message"],
    )


def test_new_instances_are_hidden_then_appear(moto_ec2: MotoEc2, fault_proxy: FaultProxy) -> None:
    moto = moto_ec2.client()
    ec2 = moto_ec2.client(endpoint_url=fault_proxy.endpoint_url)
    [older] = _launch(ec2, moto_ec2, 1)  # before hiding: stays visible throughout
    fault_proxy.hide_new_instances(2.0)
    new = _launch(ec2, moto_ec2, 2)
    assert fault_proxy.hidden() == set(new)

    assert _ids(ec2.describe_instances(Filters=TAG_FILTER)) == {older}
    assert _ids(ec2.describe_instances()) == {older}
    with pytest.raises(ClientError) as caught:
        ec2.describe_instances(InstanceIds=[older, new[1]])
    assert _not_found(caught) == (
        400,
        "InvalidInstanceID.NotFound",
        f"The instance ID '{new[1]}' does not exist",
    )

    with pytest.raises(ClientError) as caught:
        ec2.terminate_instances(InstanceIds=[new[0]])
    assert _not_found(caught) == (
        400,
        "InvalidInstanceID.NotFound",
        f"The instance ID '{new[0]}' does not exist",
    )
    assert fault_proxy.instance_ids("TerminateInstances") == [[new[0]]]
    assert fault_proxy.params("TerminateInstances")[0]["InstanceId.1"] == new[0]
    assert _states(moto, new) == {new[0]: "running", new[1]: "running"}  # never reached moto

    deadline = time.monotonic() + 10
    while fault_proxy.hidden() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert fault_proxy.hidden() == set()
    assert _ids(ec2.describe_instances(Filters=TAG_FILTER)) == {older, *new}
    ec2.terminate_instances(InstanceIds=new)
    assert set(_states(moto, new).values()) <= {"shutting-down", "terminated"}
    assert fault_proxy.instance_ids("TerminateInstances") == [[new[0]], new]


async def test_status_tags_and_unhiding_from_async_code(
    moto_ec2: MotoEc2, fault_proxy: FaultProxy
) -> None:
    session = aiobotocore.session.get_session()
    async with session.create_client(
        "ec2",
        region_name=moto_ec2.region,
        endpoint_url=fault_proxy.endpoint_url,
        config=AioConfig(retries={"total_max_attempts": 1}),
    ) as ec2:
        fault_proxy.hide_new_instances(60.0)
        launched = await ec2.run_instances(
            ImageId="ami-12345678", MinCount=1, MaxCount=1, SubnetId=moto_ec2.subnet_id
        )
        hidden = launched["Instances"][0]["InstanceId"]
        assert fault_proxy.hidden() == {hidden}

        statuses = await ec2.describe_instance_status(IncludeAllInstances=True)
        assert statuses["InstanceStatuses"] == []
        with pytest.raises(ClientError) as caught:
            await ec2.describe_instance_status(InstanceIds=[hidden])
        assert caught.value.response["Error"]["Code"] == "InvalidInstanceID.NotFound"
        with pytest.raises(ClientError) as caught:
            await ec2.create_tags(Resources=[hidden], Tags=[TAG])
        assert caught.value.response["Error"]["Code"] == "InvalidInstanceID.NotFound"

        fault_proxy.hide_new_instances(0)  # stops hiding, and unhides at once
        assert fault_proxy.hidden() == set()
        statuses = await ec2.describe_instance_status(IncludeAllInstances=True)
        assert [s["InstanceId"] for s in statuses["InstanceStatuses"]] == [hidden]
        await ec2.run_instances(ImageId="ami-12345678", MinCount=1, MaxCount=1)
        assert fault_proxy.hidden() == set()

        fault_proxy.hide_new_instances(60.0)
        await ec2.run_instances(ImageId="ami-12345678", MinCount=1, MaxCount=1)
        assert len(fault_proxy.hidden()) == 1
        fault_proxy.clear()
        assert fault_proxy.hidden() == set()
        assert fault_proxy.requests == []
        described = await ec2.describe_instances()
        assert len(_ids(described)) == 3


def test_rewritten_describe_keeps_the_rest_of_a_reservation(moto_ec2: MotoEc2) -> None:
    """One instance of a two-instance reservation hidden: the reservation stays, with the other."""
    moto = moto_ec2.client()
    first, second = _launch(moto, moto_ec2, 2)
    bodies: list[bytes] = []  # moto's raw answer, as botocore receives it
    moto.meta.events.register(
        "before-parse.ec2.DescribeInstances",
        lambda response_dict, **_: bodies.append(response_dict["body"]),
    )
    moto.describe_instances()
    [payload] = bodies
    assert set(launched_instance_ids(payload)) == set()  # no top-level instancesSet here

    rewritten = without_instances(payload, {first})
    assert rewritten.startswith(b"<?xml")
    shape = moto.meta.service_model.operation_model("DescribeInstances").output_shape
    parsed = create_parser("ec2").parse(
        {"body": rewritten, "headers": {}, "status_code": 200}, shape
    )
    assert [[i["InstanceId"] for i in r["Instances"]] for r in parsed["Reservations"]] == [[second]]
    assert without_instances(payload, {"i-00000000000000000"}) == payload  # untouched
    emptied = create_parser("ec2").parse(
        {"body": without_instances(payload, {first, second}), "headers": {}, "status_code": 200},
        shape,
    )
    assert emptied["Reservations"] == []
