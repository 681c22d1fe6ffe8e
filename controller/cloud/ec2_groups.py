"""The security-group and VPC half of the Cloud port on EC2 (Ec2Cloud inherits it).

A group is found by name and VPC, created with the fleet's tags, and its ingress changed in one
call for all rules (rule by rule when EC2 refuses because one is already done). Deleting it waits
out DependencyViolation while the instances' network interfaces go, which takes minutes after
termination (Terraform waits 5 minutes too).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import structlog

from controller.cloud.ec2_shapes import fleet_tags, ip_permission, parse_group
from controller.cloud.ec2errors import EC2_ERRORS, classify
from controller.cloud.port import FLEET_TAG, IngressRule, OpResult, ProviderError, SecurityGroup
from controller.messages import Role
from controller.runtime.backoff import backoff_delay

log = structlog.get_logger(__name__)

# DeleteSecurityGroup answers DependencyViolation until the instances using it are gone, and
# their network interfaces go minutes after termination (Terraform waits 5 minutes too).
DEPENDENCY_DELAYS = (1.0, 2.0, 4.0, 8.0, 15.0)
DEPENDENCY_TIMEOUT = 300.0


class Ec2SecurityGroups:
    """Security groups and subnets through `client` (an aiobotocore EC2 client Ec2Cloud opens)."""

    client: Any

    async def find_security_group(self, name: str, vpc_id: str) -> SecurityGroup | None:
        filters = [{"Name": "group-name", "Values": [name]}]
        if vpc_id:
            filters.append({"Name": "vpc-id", "Values": [vpc_id]})
        groups, _ = await self._describe_groups(Filters=filters)
        return groups[0] if groups else None

    async def describe_security_group(self, group_id: str) -> SecurityGroup | None:
        groups, _ = await self._describe_groups(GroupIds=[group_id])
        return groups[0] if groups else None

    async def fleet_security_groups(
        self, fleet: str
    ) -> tuple[tuple[SecurityGroup, ...], ProviderError | None]:
        """Every security group tagged with the fleet (what teardown may delete)."""
        return await self._describe_groups(
            Filters=[{"Name": f"tag:{FLEET_TAG}", "Values": [fleet]}]
        )

    async def create_security_group(
        self,
        *,
        name: str,
        description: str,
        vpc_id: str,
        fleet: str,
        role: Role = Role.SLAVE,
        dry_run: bool = False,
    ) -> tuple[str | None, ProviderError | None]:
        """Create the group tagged controller:fleet=<fleet> and controller:role=<role>."""
        params: dict[str, Any] = {
            "GroupName": name,
            "Description": description,
            "TagSpecifications": [
                {"ResourceType": "security-group", "Tags": fleet_tags(fleet, role, name)}
            ],
            "DryRun": dry_run,
        }
        if vpc_id:
            params["VpcId"] = vpc_id
        try:
            response = await self.client.create_security_group(**params)
        except EC2_ERRORS as exc:
            return None, classify(exc, "CreateSecurityGroup")
        return response["GroupId"], None

    async def authorize_ingress(
        self, group_id: str, rules: Sequence[IngressRule], *, dry_run: bool = False
    ) -> OpResult:
        """Add the rules; one that already exists counts as added."""
        return await self._change_ingress(
            "AuthorizeSecurityGroupIngress",
            self.client.authorize_security_group_ingress,
            group_id,
            rules,
            dry_run,
            done_code="InvalidPermission.Duplicate",
        )

    async def revoke_ingress(
        self, group_id: str, rules: Sequence[IngressRule], *, dry_run: bool = False
    ) -> OpResult:
        """Remove the rules; one that does not exist counts as removed."""
        return await self._change_ingress(
            "RevokeSecurityGroupIngress",
            self.client.revoke_security_group_ingress,
            group_id,
            rules,
            dry_run,
            done_code="InvalidPermission.NotFound",
        )

    async def delete_security_group(
        self, group_id: str, *, dry_run: bool = False, retry_for: float = DEPENDENCY_TIMEOUT
    ) -> OpResult:
        """Delete the group, retrying DependencyViolation (instances still leaving) for `retry_for`.

        A group that no longer exists counts as deleted.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + retry_for
        attempt = 0
        while True:
            try:
                await self.client.delete_security_group(GroupId=group_id, DryRun=dry_run)
                return OpResult()
            except EC2_ERRORS as exc:
                error = classify(exc, "DeleteSecurityGroup")
            if error.code == "InvalidGroup.NotFound":
                return OpResult()
            delay = backoff_delay(DEPENDENCY_DELAYS, attempt)
            if error.code != "DependencyViolation" or loop.time() + delay > deadline:
                return OpResult(error=error)
            log.info("ec2.security_group_in_use", group_id=group_id, delay=delay)
            await asyncio.sleep(delay)
            attempt += 1

    async def subnet_vpc(self, subnet: str) -> str | None:
        """find_vpc's VPC, None when unknown for whatever reason."""
        return (await self.find_vpc(subnet))[0]

    async def find_vpc(self, subnet: str) -> tuple[str | None, ProviderError | None]:
        """The VPC of a subnet ("" subnet: the default VPC); None and no error when there is no
        such subnet (or default VPC), None and the error when EC2 could not say."""
        try:
            if subnet:
                response = await self.client.describe_subnets(SubnetIds=[subnet])
                items = response.get("Subnets", ())
            else:
                response = await self.client.describe_vpcs(
                    Filters=[{"Name": "isDefault", "Values": ["true"]}]
                )
                items = response.get("Vpcs", ())
        except EC2_ERRORS as exc:
            error = classify(exc, "DescribeSubnets" if subnet else "DescribeVpcs")
            if error.code.startswith("InvalidSubnet"):  # InvalidSubnetID.NotFound, .Malformed
                return None, None
            log.warning(
                "ec2.vpc_lookup_failed", subnet=subnet, code=error.code, message=error.message
            )
            return None, error
        return next((item["VpcId"] for item in items if item.get("VpcId")), None), None

    async def _change_ingress(
        self,
        operation: str,
        call: Callable[..., Awaitable[Any]],
        group_id: str,
        rules: Sequence[IngressRule],
        dry_run: bool,
        *,
        done_code: str,
    ) -> OpResult:
        """One call for all rules; if EC2 refuses because one is already done, go rule by rule."""
        if not rules:
            return OpResult()

        async def change(some: Sequence[IngressRule]) -> ProviderError | None:
            try:
                await call(
                    GroupId=group_id, IpPermissions=[ip_permission(r) for r in some], DryRun=dry_run
                )
            except EC2_ERRORS as exc:
                return classify(exc, operation)
            return None

        error = await change(rules)
        if error is not None and error.code == done_code and len(rules) > 1:
            errors = [await change([rule]) for rule in rules]
            error = next((e for e in errors if e is not None and e.code != done_code), None)
        if error is not None and error.code == done_code:
            error = None
        return OpResult(error=error)

    async def _describe_groups(
        self, **params: Any
    ) -> tuple[tuple[SecurityGroup, ...], ProviderError | None]:
        try:
            response = await self.client.describe_security_groups(**params)
        except EC2_ERRORS as exc:
            error = classify(exc, "DescribeSecurityGroups")
            if error.code != "InvalidGroup.NotFound":
                log.warning(
                    "ec2.security_groups_unreadable", code=error.code, message=error.message
                )
                return (), error
            return (), None
        return tuple(parse_group(item) for item in response.get("SecurityGroups", ())), None
