"""Ec2Cloud: the Cloud port on EC2 (or any EC2-compatible endpoint) through aiobotocore.

Every call goes through one aiobotocore client whose botocore retry mode (standard or adaptive)
absorbs throttling and transient 5xx; what is still failing after that comes back as a
`ProviderError` value (controller.cloud.ec2errors), never as an exception across the port.

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
EC2_SECRET_KEY environment variables (controller.cloud.credentials).

Request parameters and response parsing are controller.cloud.ec2_shapes; security groups and
subnets controller.cloud.ec2_groups; EBS volumes controller.cloud.ec2_volumes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import structlog
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session

from controller.cloud.credentials import seed_credentials
from controller.cloud.ec2_groups import Ec2SecurityGroups
from controller.cloud.ec2_shapes import (
    DATA_DEVICES,
    launch_params,
    parse_instance,
    parse_spot_request,
)
from controller.cloud.ec2_volumes import Ec2Volumes
from controller.cloud.ec2errors import EC2_ERRORS, classify
from controller.cloud.port import (
    FLEET_TAG,
    FleetView,
    LaunchResult,
    LaunchSpec,
    OpResult,
    ProviderError,
    launch_digest,
)
from controller.config.schema import Config
from controller.messages import ErrorKind, InstanceId, RequestId
from controller.runtime.backoff import backoff_delay

log = structlog.get_logger(__name__)

TERMINATE_BATCH = 1000  # TerminateInstances' documented maximum
CANCEL_BATCH = 1000
FILTER_VALUES_MAX = 200  # values per DescribeInstances filter
DESCRIBE_PAGE_SIZE = 1000  # DescribeInstances MaxResults: its documented maximum
ALIVE_STATES = ("pending", "running", "shutting-down", "stopping", "stopped")
# RunInstances retried by `launch` itself (throttling, 5xx other than capacity), same token.
LAUNCH_RETRY_DELAYS = (1.0, 2.0, 4.0)
LAUNCH_RETRIED = frozenset({ErrorKind.THROTTLED, ErrorKind.UNAVAILABLE})


class Ec2Cloud(Ec2SecurityGroups, Ec2Volumes):
    """The Cloud port on EC2: `async with Ec2Cloud(...) as cloud`, or `await Ec2Cloud.create()`.

    The fleet's instances and spot requests are here; security groups and subnets are
    inherited from Ec2SecurityGroups (controller.cloud.ec2_groups), volumes from Ec2Volumes
    (controller.cloud.ec2_volumes)."""

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

    # the fleet

    async def describe_fleet(self, fleet: str, *, with_requests: bool = True) -> FleetView:
        """All instances (terminated ones too) and, `with_requests`, the spot requests tagged with
        the fleet. Spot launches by RunInstances leave no open request, so a steady cycle reads
        the instances only: one paginated DescribeInstances."""
        tag_filter = [{"Name": f"tag:{FLEET_TAG}", "Values": [fleet]}]
        operation = "DescribeInstances"
        try:
            instances = [
                parse_instance(item)
                async for reservation in self._paginate(
                    "describe_instances",
                    "Reservations",
                    Filters=tag_filter,
                    # EC2's largest page: one call for a fleet of up to 1,000 reservations
                    PaginationConfig={"PageSize": DESCRIBE_PAGE_SIZE},
                )
                for item in reservation.get("Instances", ())
            ]
            operation = "DescribeSpotInstanceRequests"
            requests = (
                [
                    parse_spot_request(item)
                    async for item in self._paginate(
                        "describe_spot_instance_requests",
                        "SpotInstanceRequests",
                        Filters=tag_filter,
                    )
                ]
                if with_requests
                else []
            )
        except EC2_ERRORS as exc:
            return FleetView(instances=(), error=classify(exc, operation))
        return FleetView(
            instances=tuple(instances), requests=tuple(requests), requests_read=with_requests
        )

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
        digest = launch_digest(spec.image_id, spec.snapshots, spec.user_data)
        return LaunchResult(
            instances=tuple(
                parse_instance(i, role=spec.role, spec=digest)
                for i in response.get("Instances", ())
            )
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

    # helpers

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


def make_ec2_cloud(config: Config) -> Ec2Cloud:
    """An Ec2Cloud (not yet open) for the configured region and [aws] settings."""
    return Ec2Cloud(
        config.slave.region,
        endpoint_url=config.aws.endpoint_url,
        retry_mode=config.aws.retry_mode,
        max_attempts=config.aws.max_attempts,
        call_timeout=config.aws.call_timeout,
    )


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
