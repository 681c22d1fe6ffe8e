"""Ec2Cloud: the Cloud port on EC2 (or any EC2-compatible endpoint) through aiobotocore.

Every call goes through one aiobotocore client whose botocore retry mode (standard or adaptive)
absorbs throttling and transient 5xx; what is still failing after that comes back as a
`ProviderError` value (controller.ec2errors), never as an exception across the port.

RunInstances is the exception: EC2 answers a capacity error (InsufficientInstanceCapacity) with
HTTP 500, which botocore would retry up to `max_attempts` times on the same type and zone, a
minute of refused calls that also drains the retry quota every other call shares. So launches go
through a second client with one attempt, and `launch` retries only throttling and the
service's transient failures itself, with the same ClientToken (EC2 then returns the first
call's instances rather than launching twice); a capacity error returns at once, and the pool
asks the next type.

The fleet is read, never remembered: one paginated DescribeInstances filtered by the fleet tag and
one DescribeSpotInstanceRequests, whatever the fleet size. Terminated instances are included so an
interruption (state reason Server.SpotInstanceTermination) is seen. Mutating calls are batched
(TerminateInstances takes up to 1000 ids) and launches carry the caller's ClientToken.

Credentials: the standard AWS chain; when it finds nothing, GBrowse's EC2_ACCESS_KEY and
EC2_SECRET_KEY environment variables. They are handed to botocore only, never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import structlog
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session

from controller.backoff import backoff_delay
from controller.cloud import (
    FLEET_TAG,
    ROLE_TAG,
    CloudInstance,
    FleetView,
    IngressRule,
    InstanceState,
    LaunchResult,
    LaunchSpec,
    OpResult,
    ProviderError,
    SecurityGroup,
    SpotRequest,
)
from controller.config import Config
from controller.ec2errors import EC2_ERRORS, classify
from controller.messages import ErrorKind, InstanceId, RequestId, Role

log = structlog.get_logger(__name__)

TERMINATE_BATCH = 1000  # TerminateInstances' documented maximum
CANCEL_BATCH = 1000
FILTER_VALUES_MAX = 200  # values per DescribeInstances filter
ALIVE_STATES = ("pending", "running", "shutting-down", "stopping", "stopped")
# EC2's recommended device names for EBS data volumes on Linux.
DATA_DEVICES = tuple(f"/dev/sd{letter}" for letter in "fghijklmnopqrstuvwxyz")
# DeleteSecurityGroup answers DependencyViolation until the instances using it are gone, and
# their network interfaces go minutes after termination (Terraform waits 5 minutes too).
DEPENDENCY_DELAYS = (1.0, 2.0, 4.0, 8.0, 15.0)
DEPENDENCY_TIMEOUT = 300.0
# RunInstances retried by `launch` itself (throttling, 5xx other than capacity), same token.
LAUNCH_RETRY_DELAYS = (1.0, 2.0, 4.0)
LAUNCH_RETRIED = frozenset({ErrorKind.THROTTLED, ErrorKind.UNAVAILABLE})


async def seed_credentials(session: Any) -> dict[str, str]:
    """create_client() arguments for GBrowse's EC2_ACCESS_KEY/EC2_SECRET_KEY, used only when the
    standard AWS chain of `session` (an aiobotocore session) finds nothing; {} otherwise. Every
    AWS client the controller makes (EC2, and SQS for the interruption queue) takes them."""
    if await session.get_credentials() is not None:
        return {}
    key = os.environ.get("EC2_ACCESS_KEY", "")
    secret = os.environ.get("EC2_SECRET_KEY", "")
    if key and secret:
        return {"aws_access_key_id": key, "aws_secret_access_key": secret}
    return {}


class Ec2Cloud:
    """The Cloud port on EC2: `async with Ec2Cloud(...) as cloud`, or `await Ec2Cloud.create()`."""

    def __init__(
        self,
        region: str,
        endpoint_url: str = "",
        retry_mode: str = "adaptive",
        max_attempts: int = 10,
        call_timeout: float = 30.0,
        launch_retry_delays: Sequence[float] = LAUNCH_RETRY_DELAYS,
    ) -> None:
        self.region = region
        self.launch_retry_delays = tuple(launch_retry_delays)
        self.endpoint_url = endpoint_url
        self._config = AioConfig(
            retries={"mode": retry_mode, "total_max_attempts": max_attempts},
            connect_timeout=call_timeout,
            read_timeout=call_timeout,
        )
        # One attempt: botocore must not retry a capacity error (see the module docstring).
        self._launch_config = AioConfig(
            retries={"mode": "standard", "total_max_attempts": 1},
            connect_timeout=call_timeout,
            read_timeout=call_timeout,
        )
        self._stack = contextlib.AsyncExitStack()
        self._client: Any = None
        self._launch_client: Any = None

    @classmethod
    async def create(cls, *args: Any, **kwargs: Any) -> Ec2Cloud:
        cloud = cls(*args, **kwargs)
        await cloud.open()
        return cloud

    async def __aenter__(self) -> Ec2Cloud:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def open(self) -> None:
        session = get_session()
        fallback = await seed_credentials(session)
        clients = []
        for config in (self._config, self._launch_config):
            clients.append(
                await self._stack.enter_async_context(
                    session.create_client(
                        "ec2",
                        region_name=self.region,
                        endpoint_url=self.endpoint_url or None,
                        config=config,
                        **fallback,
                    )
                )
            )
        self._client, self._launch_client = clients

    async def close(self) -> None:
        await self._stack.aclose()
        self._client = self._launch_client = None

    @property
    def client(self) -> Any:
        if self._client is None:
            raise RuntimeError("Ec2Cloud is not open: use `async with` or Ec2Cloud.create()")
        return self._client

    @property
    def launch_client(self) -> Any:
        """The client RunInstances goes through: one attempt (see the module docstring)."""
        if self._launch_client is None:
            raise RuntimeError("Ec2Cloud is not open: use `async with` or Ec2Cloud.create()")
        return self._launch_client

    # ---- the fleet --------------------------------------------------------------------------

    async def describe_fleet(self, fleet: str) -> FleetView:
        """All instances (terminated ones too) and spot requests tagged with the fleet."""
        tag_filter = [{"Name": f"tag:{FLEET_TAG}", "Values": [fleet]}]
        operation = "DescribeInstances"
        try:
            instances = [
                _instance(item)
                async for reservation in self._paginate(
                    "describe_instances", "Reservations", Filters=tag_filter
                )
                for item in reservation.get("Instances", ())
            ]
            operation = "DescribeSpotInstanceRequests"
            requests = [
                _spot_request(item)
                async for item in self._paginate(
                    "describe_spot_instance_requests", "SpotInstanceRequests", Filters=tag_filter
                )
            ]
        except EC2_ERRORS as exc:
            return FleetView(instances=(), error=classify(exc, operation))
        return FleetView(instances=tuple(instances), requests=tuple(requests))

    async def launch(self, spec: LaunchSpec) -> LaunchResult:
        """One RunInstances for up to `spec.count` spot instances (fewer if capacity is short).

        MinCount is 1, so EC2 launches what it can rather than nothing (moto launches exactly
        MinCount, so against moto one call yields one instance). Throttling and transient
        failures are retried here with the same ClientToken; a capacity error is not retried.
        """
        where = {"instance_type": spec.instance_type, "zone": spec.zone}
        if spec.count < 1:
            return LaunchResult()
        if len(spec.snapshots) > len(DATA_DEVICES):
            return LaunchResult(
                error=ProviderError(
                    kind=ErrorKind.INVALID,
                    code="TooManySnapshots",
                    message=f"{len(spec.snapshots)} data snapshots: at most "
                    f"{len(DATA_DEVICES)} fit the device names {DATA_DEVICES[0]}..",
                    operation="RunInstances",
                    **where,
                )
            )
        params = launch_params(spec)
        attempt = 0
        while True:
            try:
                response = await self.launch_client.run_instances(**params)
                break
            except EC2_ERRORS as exc:
                error = classify(exc, "RunInstances", **where)
            if error.kind not in LAUNCH_RETRIED or attempt >= len(self.launch_retry_delays):
                return LaunchResult(error=error)
            delay = backoff_delay(self.launch_retry_delays, attempt)
            log.info("ec2.launch_retry", code=error.code, attempt=attempt + 1, delay=delay)
            await asyncio.sleep(delay)
            attempt += 1
        return LaunchResult(
            instances=tuple(_instance(i, role=spec.role) for i in response.get("Instances", ()))
        )

    async def terminate(self, ids: Sequence[InstanceId], *, dry_run: bool = False) -> OpResult:
        return await self._batched(
            "TerminateInstances",
            lambda chunk: self.client.terminate_instances(InstanceIds=chunk, DryRun=dry_run),
            ids,
            TERMINATE_BATCH,
            gone_code="InvalidInstanceID.NotFound",
        )

    async def cancel_requests(self, ids: Sequence[RequestId], *, dry_run: bool = False) -> OpResult:
        return await self._batched(
            "CancelSpotInstanceRequests",
            lambda chunk: self.client.cancel_spot_instance_requests(
                SpotInstanceRequestIds=chunk, DryRun=dry_run
            ),
            ids,
            CANCEL_BATCH,
            gone_code="InvalidSpotInstanceRequestID.NotFound",
        )

    async def wait_terminated(
        self,
        ids: Sequence[InstanceId],
        *,
        timeout: float,
        poll_interval: float = 5.0,
    ) -> tuple[InstanceId, ...]:
        """Poll until every instance in `ids` is terminated or gone; return those still alive.

        One DescribeInstances per poll (per 200 ids). A failed poll keeps the last answer and
        polls again, so a blip never reads as "all gone"; `timeout` bounds the whole wait.
        """
        remaining = tuple(dict.fromkeys(ids))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while remaining:
            alive = await self._alive(remaining)
            if alive is not None:
                remaining = alive
            left = deadline - loop.time()
            if not remaining or left <= 0:
                break
            await asyncio.sleep(min(poll_interval, left))
        return remaining

    async def spot_price(self, instance_type: str, zone: str) -> float | None:
        """The current Linux spot price of the type (in `zone`, or the lowest of the region)."""
        filters = [{"Name": "availability-zone", "Values": [zone]}] if zone else []
        try:
            response = await self.client.describe_spot_price_history(
                InstanceTypes=[instance_type],
                ProductDescriptions=["Linux/UNIX", "Linux/UNIX (Amazon VPC)"],
                StartTime=datetime.now(UTC),  # EC2 then answers the price in effect now
                Filters=filters,
            )
        except EC2_ERRORS as exc:
            error = classify(exc, "DescribeSpotPriceHistory")
            log.warning("ec2.spot_price_unknown", code=error.code, message=error.message)
            return None
        latest: dict[str, tuple[datetime, float]] = {}
        for item in response.get("SpotPriceHistory", ()):
            if zone and item.get("AvailabilityZone") != zone:
                continue
            when, price = item["Timestamp"], float(item["SpotPrice"])
            key = item.get("AvailabilityZone", "")
            if key not in latest or when > latest[key][0]:
                latest[key] = (when, price)
        return min((price for _, price in latest.values()), default=None)

    # ---- security groups --------------------------------------------------------------------

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
        """The VPC of a subnet ("" subnet: the default VPC), None when unknown."""
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
            log.warning(
                "cannot find the VPC", subnet=subnet, code=error.code, message=error.message
            )
            return None
        return next((item["VpcId"] for item in items if item.get("VpcId")), None)

    # ---- helpers ----------------------------------------------------------------------------

    async def _paginate(self, method: str, key: str, **params: Any):
        """Items of every page of a paginated Describe call (botocore follows NextToken)."""
        async for page in self.client.get_paginator(method).paginate(**params):
            for item in page.get(key, ()):
                yield item

    async def _alive(self, ids: Sequence[InstanceId]) -> tuple[InstanceId, ...] | None:
        """Which of `ids` are not yet terminated (None: the answer is unknown)."""
        alive: set[str] = set()
        try:
            for chunk in _chunks(ids, FILTER_VALUES_MAX):
                filters = [
                    {"Name": "instance-id", "Values": list(chunk)},
                    {"Name": "instance-state-name", "Values": list(ALIVE_STATES)},
                ]
                async for reservation in self._paginate(
                    "describe_instances", "Reservations", Filters=filters
                ):
                    alive.update(i["InstanceId"] for i in reservation.get("Instances", ()))
        except EC2_ERRORS as exc:
            error = classify(exc, "DescribeInstances")
            log.warning("ec2.termination_poll_failed", code=error.code, message=error.message)
            return None
        return tuple(i for i in ids if i in alive)

    async def _batched(
        self,
        operation: str,
        call: Callable[[list[str]], Awaitable[Any]],
        ids: Sequence[str],
        size: int,
        *,
        gone_code: str,
    ) -> OpResult:
        """Call in chunks of `size`; ids EC2 does not know come back in `not_found`.

        EC2 refuses a whole batch for one unknown id, so such a batch is retried id by id.
        The first real error is returned; the other chunks are still attempted.
        """
        first: ProviderError | None = None
        not_found: list[str] = []
        for chunk in _chunks(list(dict.fromkeys(ids)), size):
            error = await _attempt(call, chunk, operation)
            if error is not None and error.code == gone_code and len(chunk) > 1:
                errors = [await _attempt(call, [one], operation) for one in chunk]
                not_found += [
                    one
                    for one, e in zip(chunk, errors, strict=True)
                    if e is not None and e.code == gone_code
                ]
                error = next((e for e in errors if e is not None and e.code != gone_code), None)
            elif error is not None and error.code == gone_code:
                not_found += chunk
            if error is not None and error.code != gone_code:
                first = first or error
        return OpResult(error=first, not_found=tuple(not_found))

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
                    GroupId=group_id, IpPermissions=[_permission(r) for r in some], DryRun=dry_run
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
        return tuple(_group(item) for item in response.get("SecurityGroups", ())), None


def make_ec2_cloud(config: Config) -> Ec2Cloud:
    """An Ec2Cloud (not yet open) for the configured region and [aws] settings."""
    return Ec2Cloud(
        config.slave.region,
        endpoint_url=config.aws.endpoint_url,
        retry_mode=config.aws.retry_mode,
        max_attempts=config.aws.max_attempts,
        call_timeout=config.aws.call_timeout,
    )


# ---- request building and response parsing (pure) ------------------------------------------


def fleet_tags(
    fleet: str, role: Role, name: str, extra: Iterable[tuple[str, str]] = ()
) -> list[dict[str, str]]:
    tags = {FLEET_TAG: fleet, ROLE_TAG: str(role), "Name": name, **dict(extra)}
    return [{"Key": key, "Value": value} for key, value in tags.items()]


def launch_params(spec: LaunchSpec) -> dict[str, Any]:
    """The RunInstances parameters for a spot launch (one-time, terminate on interruption)."""
    spot_options: dict[str, str] = {
        "SpotInstanceType": "one-time",
        "InstanceInterruptionBehavior": "terminate",
    }
    if spec.max_price is not None:
        spot_options["MaxPrice"] = str(spec.max_price)
    tags = fleet_tags(spec.fleet, spec.role, f"{spec.fleet}-{spec.role}", spec.extra_tags)
    params: dict[str, Any] = {
        "ImageId": spec.image_id,
        "InstanceType": spec.instance_type,
        "MinCount": 1,
        "MaxCount": spec.count,
        "InstanceMarketOptions": {"MarketType": "spot", "SpotOptions": spot_options},
        "TagSpecifications": [
            {"ResourceType": kind, "Tags": tags}
            for kind in ("instance", "volume", "spot-instances-request")
        ],
        "DryRun": spec.dry_run,
    }
    if spec.client_token:
        params["ClientToken"] = spec.client_token
    if spec.subnet:
        params["SubnetId"] = spec.subnet
    if spec.zone:
        params["Placement"] = {"AvailabilityZone": spec.zone}
    if spec.security_group_ids:
        params["SecurityGroupIds"] = list(spec.security_group_ids)
    if spec.key_name:
        params["KeyName"] = spec.key_name
    if spec.user_data:
        params["UserData"] = spec.user_data  # botocore base64-encodes it
    if spec.snapshots:
        params["BlockDeviceMappings"] = [
            {"DeviceName": device, "Ebs": {"SnapshotId": snapshot, "DeleteOnTermination": True}}
            for device, snapshot in zip(DATA_DEVICES, spec.snapshots, strict=False)
        ]
    return params


def _tags(item: dict[str, Any]) -> dict[str, str]:
    return {tag["Key"]: tag.get("Value", "") for tag in item.get("Tags") or ()}


def _role(value: str | None, default: Role) -> Role:
    try:
        return Role(value) if value else default
    except ValueError:
        return default


def _epoch(value: Any) -> float:
    return value.timestamp() if isinstance(value, datetime) else 0.0


def _instance(item: dict[str, Any], role: Role = Role.SLAVE) -> CloudInstance:
    tags = _tags(item)
    return CloudInstance(
        instance_id=InstanceId(item["InstanceId"]),
        state=InstanceState(item.get("State", {}).get("Name", "pending")),
        private_ip=item.get("PrivateIpAddress") or None,
        public_ip=item.get("PublicIpAddress") or None,
        instance_type=item.get("InstanceType", ""),
        zone=item.get("Placement", {}).get("AvailabilityZone", ""),
        launched_at=_epoch(item.get("LaunchTime")),
        role=_role(tags.get(ROLE_TAG), role),
        spot=item.get("InstanceLifecycle") == "spot",
        spot_request_id=RequestId(item["SpotInstanceRequestId"])
        if item.get("SpotInstanceRequestId")
        else None,
        state_reason=(item.get("StateReason") or {}).get("Code") or None,
    )


def _spot_request(item: dict[str, Any]) -> SpotRequest:
    spec = item.get("LaunchSpecification") or {}
    return SpotRequest(
        request_id=RequestId(item["SpotInstanceRequestId"]),
        state=item.get("State", ""),
        status_code=(item.get("Status") or {}).get("Code", ""),
        instance_id=InstanceId(item["InstanceId"]) if item.get("InstanceId") else None,
        created_at=_epoch(item.get("CreateTime")),
        instance_type=spec.get("InstanceType", ""),
        zone=item.get("LaunchedAvailabilityZone")
        or (spec.get("Placement") or {}).get("AvailabilityZone", ""),
    )


def _group(item: dict[str, Any]) -> SecurityGroup:
    rules = frozenset(rule for perm in item.get("IpPermissions") or () for rule in _rules(perm))
    return SecurityGroup(
        group_id=item["GroupId"],
        name=item.get("GroupName", ""),
        vpc_id=item.get("VpcId", ""),
        rules=rules,
        fleet=_tags(item).get(FLEET_TAG, ""),
    )


def _rules(perm: dict[str, Any]) -> Iterator[IngressRule]:
    """The CIDR rules of one IpPermission (rules naming another group are not CIDR rules).

    A single port is `IngressRule(port=P)`; all traffic is protocol "-1", port -1; a range is
    kept whole as protocol "tcp:FROM-TO", port FROM, so it can be revoked exactly.
    """
    protocol = perm.get("IpProtocol", "-1")
    low, high = perm.get("FromPort"), perm.get("ToPort")
    if protocol == "-1" or low is None:
        port, protocol = -1, "-1" if protocol == "-1" else protocol
    elif low == high:
        port = low
    else:
        port, protocol = low, f"{protocol}:{low}-{high}"
    cidrs = [r["CidrIp"] for r in perm.get("IpRanges") or ()]
    cidrs += [r["CidrIpv6"] for r in perm.get("Ipv6Ranges") or ()]
    for cidr in cidrs:
        yield IngressRule(cidr=cidr, port=port, protocol=protocol)


def _permission(rule: IngressRule) -> dict[str, Any]:
    """The IpPermission for one rule (the inverse of `_rules`)."""
    ranges = (
        {"Ipv6Ranges": [{"CidrIpv6": rule.cidr}]}
        if ":" in rule.cidr
        else {"IpRanges": [{"CidrIp": rule.cidr}]}
    )
    if rule.protocol == "-1":
        return {"IpProtocol": "-1", **ranges}
    protocol, _, span = rule.protocol.partition(":")
    low, _, high = span.partition("-")
    from_port = int(low) if span else rule.port
    to_port = int(high) if span else rule.port
    return {"IpProtocol": protocol, "FromPort": from_port, "ToPort": to_port, **ranges}


def _chunks(items: Sequence[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


async def _attempt(
    call: Callable[[list[str]], Awaitable[Any]], chunk: list[str], operation: str
) -> ProviderError | None:
    try:
        await call(chunk)
    except EC2_ERRORS as exc:
        return classify(exc, operation)
    return None
