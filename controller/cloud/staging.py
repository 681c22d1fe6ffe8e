"""The EC2 calls of `controller sync-data`, through Ec2Cloud's aiobotocore clients.

The staging instance is launched on demand (a short job: no spot request to wait for or lose) with
the data volume in its block device mapping, DeleteOnTermination: EC2 makes and attaches the
volume with the instance and deletes it with the instance, so no moment exists at which a volume
is made but not yet attached (a `kill -9` there would leave it). Instance, volume, group, key
pair and the snapshot in the making carry `controller:role=staging` and the fleet's tag
(controller.cloud.sync_plan), so controller.cloud.staging_leftovers finds whatever a killed run
left. Failures come back as `StagingError`, one line naming the call and EC2's answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from controller.cloud.ec2_shapes import parse_instance
from controller.cloud.ec2cloud import Ec2Cloud
from controller.cloud.ec2errors import EC2_ERRORS, classify
from controller.cloud.port import FLEET_TAG, ROLE_TAG, IngressRule
from controller.cloud.sync_plan import (
    DATA_ROLE,
    DEVICE,
    STAGING_ROLE,
    SnapshotInfo,
    SyncPlan,
    tags,
)
from controller.messages import Role

Progress = Callable[[str], None]
POLL_SECONDS = 5.0


class StagingError(Exception):
    """A step of the sync failed on EC2's side; the message is the line to print."""


@dataclass(frozen=True, slots=True, kw_only=True)
class StagingInstance:
    instance_id: str
    state: str
    private_ip: str | None
    public_ip: str | None
    zone: str
    volume_id: str | None  # the data volume at DEVICE, once EC2 reports it


def failed(exc: BaseException, operation: str) -> StagingError:
    error = classify(exc, operation)
    return StagingError(f"{operation} failed: {error.code}: {error.message}")


def staging_filter(fleet: str) -> list[dict[str, Any]]:
    return [
        {"Name": f"tag:{FLEET_TAG}", "Values": [fleet]},
        {"Name": f"tag:{ROLE_TAG}", "Values": [STAGING_ROLE]},
    ]


def _tag_value(item: dict[str, Any], key: str) -> str:
    return next((t.get("Value", "") for t in item.get("Tags") or () if t["Key"] == key), "")


class StagingEc2:
    """The sync's EC2 steps on an open Ec2Cloud (its client, retries and error mapping)."""

    def __init__(self, cloud: Ec2Cloud, fleet: str) -> None:
        self.cloud = cloud
        self.fleet = fleet

    @property
    def client(self) -> Any:
        return self.cloud.client

    async def create_group(self, name: str, vpc_id: str, master_ip: str, port: int) -> str:
        """The run's own group, admitting only the master's address on the SSH port."""
        group_id, error = await self.cloud.create_security_group(
            name=name,
            description=f"controller sync-data staging of fleet {self.fleet}: SSH from the master",
            vpc_id=vpc_id,
            fleet=self.fleet,
            role=Role.STAGING,
        )
        if error is not None or group_id is None:
            raise StagingError(f"CreateSecurityGroup failed: {error.code}: {error.message}")
        cidr = f"{master_ip}/{128 if ':' in master_ip else 32}"
        result = await self.cloud.authorize_ingress(group_id, [IngressRule(cidr=cidr, port=port)])
        if result.error is not None:
            raise StagingError(
                f"AuthorizeSecurityGroupIngress on {group_id} failed: "
                f"{result.error.code}: {result.error.message}"
            )
        return group_id

    async def vpc_of(self, subnet: str) -> str:
        vpc_id = await self.cloud.subnet_vpc(subnet)
        if vpc_id is None:
            where = f"subnet {subnet}" if subnet else "the region's default VPC"
            raise StagingError(f"cannot find the VPC of {where}: set [slave] subnet")
        return vpc_id

    async def import_key_pair(self, name: str, public_key: str) -> None:
        """A temporary key pair holding the run's public key (the private one never leaves)."""
        try:
            await self.client.import_key_pair(
                KeyName=name,
                PublicKeyMaterial=public_key.encode(),
                TagSpecifications=[
                    {"ResourceType": "key-pair", "Tags": tags(self.fleet, STAGING_ROLE, name)}
                ],
            )
        except EC2_ERRORS as exc:
            raise failed(exc, "ImportKeyPair") from None

    async def launch(
        self, plan: SyncPlan, *, name: str, group_id: str, key_name: str, token: str
    ) -> str:
        """One on-demand instance with an empty data volume of the plan's size at DEVICE."""
        params: dict[str, Any] = {
            "ImageId": plan.image_id,
            "InstanceType": plan.instance_type,
            "MinCount": 1,
            "MaxCount": 1,
            "ClientToken": token,
            "SecurityGroupIds": [group_id],
            "BlockDeviceMappings": [
                {
                    "DeviceName": DEVICE,
                    "Ebs": {
                        "VolumeSize": plan.size_gib,
                        "VolumeType": "gp3",
                        "DeleteOnTermination": True,
                    },
                }
            ],
            "InstanceInitiatedShutdownBehavior": "terminate",
            "TagSpecifications": [
                {"ResourceType": kind, "Tags": tags(self.fleet, STAGING_ROLE, name)}
                for kind in ("instance", "volume")
            ],
        }
        if key_name:
            params["KeyName"] = key_name
        if plan.subnet:
            params["SubnetId"] = plan.subnet
        if plan.zone:
            params["Placement"] = {"AvailabilityZone": plan.zone}
        try:
            answer = await self.cloud.launch_client.run_instances(**params)
        except EC2_ERRORS as exc:
            raise failed(exc, "RunInstances") from None
        return answer["Instances"][0]["InstanceId"]

    async def wait_running(
        self, instance_id: str, *, timeout: float, progress: Progress, poll: float = POLL_SECONDS
    ) -> StagingInstance:
        """Poll until the instance runs with an address and EC2 shows its data volume."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        last = ""
        while True:
            found = await self.describe(instance_id)
            state = found.state if found else "not visible yet"
            if found and found.state == "running" and found.volume_id and found.private_ip:
                return found
            if found and found.state in ("shutting-down", "terminated", "stopping", "stopped"):
                raise StagingError(f"staging instance {instance_id} went {found.state}")
            if state != last:
                progress(f"staging instance {instance_id}: {state}")
                last = state
            if loop.time() >= deadline:
                raise StagingError(
                    f"staging instance {instance_id} not running within {timeout:.0f}s "
                    f"(last: {state})"
                )
            await asyncio.sleep(poll)

    async def describe(self, instance_id: str) -> StagingInstance | None:
        try:
            answer = await self.client.describe_instances(InstanceIds=[instance_id])
        except EC2_ERRORS as exc:
            if classify(exc, "DescribeInstances").code == "InvalidInstanceID.NotFound":
                return None  # EC2's reads lag its launches
            raise failed(exc, "DescribeInstances") from None
        items = [i for r in answer.get("Reservations", ()) for i in r.get("Instances", ())]
        if not items:
            return None
        item = items[0]
        parsed = parse_instance(item, role=Role.STAGING)
        volume = next(
            (
                m["Ebs"]["VolumeId"]
                for m in item.get("BlockDeviceMappings") or ()
                if m.get("DeviceName") == DEVICE and m.get("Ebs", {}).get("VolumeId")
            ),
            None,
        )
        return StagingInstance(
            instance_id=instance_id,
            state=str(parsed.state),
            private_ip=parsed.private_ip,
            public_ip=parsed.public_ip,
            zone=parsed.zone,
            volume_id=volume,
        )

    async def console_output(self, instance_id: str) -> str:
        """The instance's console (where cloud-init prints its host keys); "" when unreadable."""
        try:
            answer = await self.client.get_console_output(InstanceId=instance_id)
        except EC2_ERRORS:
            return ""
        return answer.get("Output") or ""

    async def create_snapshot(self, volume_id: str, *, name: str, description: str) -> str:
        try:
            answer = await self.client.create_snapshot(
                VolumeId=volume_id,
                Description=description,
                TagSpecifications=[
                    {"ResourceType": "snapshot", "Tags": tags(self.fleet, STAGING_ROLE, name)}
                ],
            )
        except EC2_ERRORS as exc:
            raise failed(exc, "CreateSnapshot") from None
        return answer["SnapshotId"]

    async def wait_snapshot(
        self, snapshot_id: str, *, progress: Progress, poll: float = POLL_SECONDS
    ) -> None:
        """Poll until the snapshot completes, one line each time its progress moves."""
        last = ""
        while True:
            try:
                answer = await self.client.describe_snapshots(SnapshotIds=[snapshot_id])
            except EC2_ERRORS as exc:
                raise failed(exc, "DescribeSnapshots") from None
            item = (answer.get("Snapshots") or [{}])[0]
            state, done = item.get("State", "pending"), item.get("Progress") or "0%"
            if state in ("error", "recoverable", "recovering"):
                message = item.get("StateMessage") or "no reason given"
                raise StagingError(f"snapshot {snapshot_id} failed: {state}: {message}")
            if f"{state} {done}" != last:
                progress(f"snapshot {snapshot_id}: {done} ({state})")
                last = f"{state} {done}"
            if state == "completed":
                return
            await asyncio.sleep(poll)

    async def mark_data(self, snapshot_id: str) -> None:
        """The config names it now: from a run's leftover to a kept data snapshot."""
        try:
            await self.client.create_tags(
                Resources=[snapshot_id], Tags=[{"Key": ROLE_TAG, "Value": DATA_ROLE}]
            )
        except EC2_ERRORS as exc:
            raise failed(exc, "CreateTags") from None

    async def snapshots(self, *, role: str = "", ids: Sequence[str] = ()) -> list[SnapshotInfo]:
        """This account's snapshots of the fleet (with `role`), or those of `ids` whatever their
        tags (an id EC2 does not know is left out)."""
        params: dict[str, Any] = {"OwnerIds": ["self"]}
        if ids:
            params["SnapshotIds"] = list(ids)
        else:
            params["Filters"] = [{"Name": f"tag:{FLEET_TAG}", "Values": [self.fleet]}]
            if role:
                params["Filters"].append({"Name": f"tag:{ROLE_TAG}", "Values": [role]})
        items: list[dict[str, Any]] = []
        try:
            async for page in self.client.get_paginator("describe_snapshots").paginate(**params):
                items += page.get("Snapshots", ())
        except EC2_ERRORS as exc:
            if not ids or classify(exc, "DescribeSnapshots").code != "InvalidSnapshot.NotFound":
                raise failed(exc, "DescribeSnapshots") from None
            # One unknown id fails the whole call: ask for each on its own.
            return [s for one in ids if len(ids) > 1 for s in await self.snapshots(ids=[one])]
        return [
            SnapshotInfo(
                snapshot_id=item["SnapshotId"],
                state=item.get("State", ""),
                started_at=item["StartTime"].timestamp() if item.get("StartTime") else 0.0,
                fleet=_tag_value(item, FLEET_TAG),
                role=_tag_value(item, ROLE_TAG),
            )
            for item in items
        ]

    async def delete_snapshot(self, snapshot_id: str) -> None:
        try:
            await self.client.delete_snapshot(SnapshotId=snapshot_id)
        except EC2_ERRORS as exc:
            if classify(exc, "DeleteSnapshot").code != "InvalidSnapshot.NotFound":
                raise failed(exc, "DeleteSnapshot") from None

    async def pages(self, method: str, key: str, **params: Any):
        """Items of every page of a paginated Describe call."""
        async for page in self.client.get_paginator(method).paginate(**params):
            for item in page.get(key, ()):
                yield item
