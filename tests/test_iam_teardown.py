"""`controller teardown` works under the policy `controller iam-policy` prints (no --sync-data).

The teardown runs for real against moto's EC2 server through the fault proxy, which records
every Action it sends: each must be granted by the config's policy, and each call the policy
grants only on resources tagged with the fleet must name only such resources (moto does not
evaluate IAM, so this is where a missing or too narrow statement shows). With and without
volumes left behind, with the controller's own security group and with a configured one.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.cli import main
from controller.cloud.iam import iam_policy
from controller.config.reader import load_config
from tests.harness.fault_proxy import FaultProxy
from tests.harness.moto_server import MotoEc2
from tests.test_teardown import FLEET, make_fleet_raw, open_spot_request, write_config
from tests.test_teardown_volumes import launch_keeping_volume, make_volume, tags

# The parameters naming the resources of each call the policy binds to the fleet's tag.
RESOURCE_PARAMS = {
    "TerminateInstances": "InstanceId.",
    "CancelSpotInstanceRequests": "SpotInstanceRequestId.",
    "DeleteVolume": "VolumeId",
    "DeleteSecurityGroup": "GroupId",
}
TEARDOWN_READS = {"ec2:DescribeVolumes", "ec2:DescribeSnapshots", "ec2:DescribeKeyPairs"}


def launch_without_group(moto: MotoEc2, count: int) -> list[str]:
    """Instances of the fleet in the VPC's default group (a config naming its security_group)."""
    answer = moto.client().run_instances(
        ImageId="ami-12345678",
        MinCount=count,
        MaxCount=count,
        SubnetId=moto.subnet_id,
        TagSpecifications=[{"ResourceType": "instance", "Tags": tags(FLEET)}],
    )
    return [i["InstanceId"] for i in answer["Instances"]]


def fleet_tagged(moto: MotoEc2) -> set[str]:
    """Every resource id carrying controller:fleet=FLEET (instances, spot requests, volumes,
    groups)."""
    ec2 = moto.client()
    fleet = [{"Name": "tag:controller:fleet", "Values": [FLEET]}]
    found = {
        i["InstanceId"]
        for r in ec2.describe_instances(Filters=fleet)["Reservations"]
        for i in r["Instances"]
    }
    requests = ec2.describe_spot_instance_requests(Filters=fleet)["SpotInstanceRequests"]
    found |= {r["SpotInstanceRequestId"] for r in requests}
    found |= {v["VolumeId"] for v in ec2.describe_volumes(Filters=fleet)["Volumes"]}
    found |= {g["GroupId"] for g in ec2.describe_security_groups(Filters=fleet)["SecurityGroups"]}
    return found


def fleet_bound_actions(policy: dict) -> set[str]:
    """Actions granted only by statements bound to the fleet's resource tag."""
    bound, free = set(), set()
    for statement in policy["Statement"]:
        tagged = "aws:ResourceTag/controller:fleet" in str(statement.get("Condition", {}))
        (bound if tagged else free).update(statement["Action"])
    return bound - free


@pytest.mark.parametrize(
    ("own_group", "volumes"),
    [(True, True), (False, True), (True, False), (False, False)],
    ids=["own-group-volumes", "configured-group-volumes", "own-group", "configured-group"],
)
def test_teardown_sends_only_what_the_printed_policy_grants(
    moto_ec2: MotoEc2, fault_proxy: FaultProxy, tmp_path: Path, own_group: bool, volumes: bool
) -> None:
    if own_group:
        make_fleet_raw(moto_ec2, FLEET, 2)  # behind a group made for the fleet
    else:
        launch_without_group(moto_ec2, 2)
    untagged = make_volume(moto_ec2, None)
    open_spot_request(moto_ec2, FLEET)
    if volumes:
        make_volume(moto_ec2, FLEET)  # detached
        make_volume(moto_ec2, FLEET, role="staging")  # what a killed sync-data left
        launch_keeping_volume(moto_ec2, FLEET)  # in use until its instance ends
    config = write_config(tmp_path, moto_ec2, tmp_path / "renderfarm.conf")
    text = config.read_text().replace(moto_ec2.endpoint_url, fault_proxy.endpoint_url)
    if not own_group:
        text = text.replace("[slave]\n", '[slave]\nsecurity_group = "sg-0123456789abcdef0"\n')
    config.write_text(text)
    policy = iam_policy(load_config(str(config)))
    granted = {action for statement in policy["Statement"] for action in statement["Action"]}
    tagged = fleet_tagged(moto_ec2)
    fault_proxy.clear()

    assert main(["teardown", "-c", str(config)]) == 0

    sent = {f"ec2:{action}" for action in fault_proxy.calls}
    assert sent - granted == set(), "add these to controller.cloud.iam.RULES for teardown"
    assert TEARDOWN_READS <= sent  # always: the fleet's volumes and sync-data's leftovers
    assert ("ec2:DeleteVolume" in sent) is volumes
    assert ("ec2:DeleteSecurityGroup" in sent) is own_group
    bound = fleet_bound_actions(policy)
    assert {"ec2:TerminateInstances", "ec2:CancelSpotInstanceRequests"} <= sent
    assert {"ec2:TerminateInstances", "ec2:DeleteVolume"} <= bound
    for action, prefix in RESOURCE_PARAMS.items():
        if f"ec2:{action}" not in bound:
            continue
        for params in fault_proxy.params(action):
            named = {v for k, v in params.items() if k == prefix or k.startswith(prefix)}
            assert named and named <= tagged, f"{action} names untagged {named - tagged}"
    assert untagged not in {p["VolumeId"] for p in fault_proxy.params("DeleteVolume")}
