"""The EBS-volume half of the Cloud port on EC2 (Ec2Cloud inherits it): the fleet's volumes, read
by tag, and their deletion, for teardown (controller.cloud.teardown).

Volumes made at launch carry the fleet's tags and go with their instance (DeleteOnTermination);
what is read here is what outlived one: a volume detached, made by hand, or left by an older
version. Deleting a volume still attached answers VolumeInUse, which the caller waits out.
"""

from __future__ import annotations

from typing import Any

from controller.cloud.ec2_shapes import parse_volume
from controller.cloud.ec2errors import EC2_ERRORS, classify
from controller.cloud.port import FLEET_TAG, OpResult, ProviderError, Volume


class Ec2Volumes:
    """EBS volumes through `client` (an aiobotocore EC2 client Ec2Cloud opens)."""

    client: Any

    async def fleet_volumes(self, fleet: str) -> tuple[tuple[Volume, ...], ProviderError | None]:
        """Every volume tagged controller:fleet=<fleet>, whatever its role or state."""
        filters = [{"Name": f"tag:{FLEET_TAG}", "Values": [fleet]}]
        try:
            volumes = [
                parse_volume(item)
                async for page in self.client.get_paginator("describe_volumes").paginate(
                    Filters=filters
                )
                for item in page.get("Volumes", ())
            ]
        except EC2_ERRORS as exc:
            return (), classify(exc, "DescribeVolumes")
        return tuple(volumes), None

    async def delete_volume(self, volume_id: str, *, dry_run: bool = False) -> OpResult:
        """Delete the volume; one EC2 no longer knows counts as deleted."""
        try:
            await self.client.delete_volume(VolumeId=volume_id, DryRun=dry_run)
        except EC2_ERRORS as exc:
            error = classify(exc, "DeleteVolume")
            if error.code == "InvalidVolume.NotFound":
                return OpResult()
            return OpResult(error=error)
        return OpResult()
