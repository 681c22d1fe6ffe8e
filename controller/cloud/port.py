"""The Cloud port: what SpotPool and FirewallKeeper need from EC2, and nothing more.

Two adapters implement it: `controller.cloud.ec2cloud.Ec2Cloud` (aiobotocore, real EC2 or an
emulator at `endpoint_url`) and `controller.cloud.simcloud.SimCloud` (in memory, virtual time).
Provider failures come back as `ProviderError` values carried by the results, never as exceptions
that cross an actor: the next decision reads them (Ray's LaunchNodeError habit).

The cloud is rebuilt from tags, never remembered: `describe_fleet` finds everything carrying
`controller:fleet=<fleet>`, so a restarted controller adopts what a killed one left.
"""

from __future__ import annotations

import enum
import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from controller.messages import ErrorKind, InstanceId, ProviderErrorSeen, RequestId, Role

FLEET_TAG = "controller:fleet"
ROLE_TAG = "controller:role"
# What an instance was launched from (launch_digest): a reload that changes the image, the data
# snapshots or the user data tells the instances launched before it by this tag, across restarts.
SPEC_TAG = "controller:spec"
SPOT_INTERRUPTION_REASON = "Server.SpotInstanceTermination"
# EC2's reads lag its writes ("Eventual consistency in the Amazon EC2 API"): a just-launched
# instance may be missing from DescribeInstances, and TerminateInstances may answer
# InvalidInstanceID.NotFound for it, for a while. Until this long after its launch, "not found"
# says nothing about an instance we launched: it is kept, and its termination asked again.
VISIBILITY_SECONDS = 180.0
# Someone's API call ended it (ours, or a person's): not a launch that failed.
USER_ENDED_REASONS = frozenset({"Client.UserInitiatedShutdown", "Client.UserInitiatedHibernate"})
CLIENT_TOKEN_MAX = 64  # EC2's limit on ClientToken


def launch_token(fleet: str) -> str:
    """A fresh ClientToken for one launch: the fleet's name (cut to fit) and 32 random hex
    digits, always whole, so tokens of a long fleet name never collide (EC2 would answer a
    reused token with the first launch's instances, or IdempotentParameterMismatch)."""
    random_part = uuid.uuid4().hex
    return f"{fleet[: CLIENT_TOKEN_MAX - len(random_part) - 1]}-{random_part}"


def launch_digest(image_id: str, snapshots: Sequence[str], user_data: str) -> str:
    """The SPEC_TAG value: 12 hex digits of the image, the data snapshots in device order and the
    user data an instance boots with (not its type, zone or bid: those change no slave)."""
    text = "\n".join((image_id, *snapshots, "", user_data))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def ended_on_our_side(state_reason: str | None) -> bool:
    """True when EC2 ended an instance for a reason of the launch's own making (a KMS key it may
    not use, a snapshot it cannot read, a volume limit, an image that shuts itself down: the
    `Client.*` state reasons other than an API call's); relaunching the same would fail again."""
    return bool(state_reason and state_reason.startswith("Client.")) and (
        state_reason not in USER_ENDED_REASONS
    )


class InstanceState(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SHUTTING_DOWN = "shutting-down"
    TERMINATED = "terminated"
    STOPPING = "stopping"
    STOPPED = "stopped"


@dataclass(frozen=True, slots=True, kw_only=True)
class ProviderError:
    kind: ErrorKind
    code: str  # EC2's error code, e.g. InsufficientInstanceCapacity
    message: str
    operation: str  # e.g. RunInstances
    instance_type: str = ""
    zone: str = ""


def error_seen(error: ProviderError, at: float) -> ProviderErrorSeen:
    """The message that tells the other actors (Stats, metrics) of a provider error."""
    return ProviderErrorSeen(
        at=at, kind=error.kind, code=error.code, message=error.message, operation=error.operation
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class CloudInstance:
    instance_id: InstanceId
    state: InstanceState
    private_ip: str | None
    instance_type: str
    zone: str
    launched_at: float  # epoch seconds (EC2's LaunchTime)
    role: Role
    spot: bool = True
    spot_request_id: RequestId | None = None
    state_reason: str | None = None  # EC2's StateReason.Code, e.g. Server.SpotInstanceTermination
    public_ip: str | None = None
    spec: str = ""  # its SPEC_TAG; "" when launched without one (before the tag existed)


@dataclass(frozen=True, slots=True, kw_only=True)
class SpotRequest:
    request_id: RequestId
    state: str  # open | active | closed | cancelled | failed
    status_code: str  # e.g. pending-evaluation, price-too-low, capacity-not-available, fulfilled
    instance_id: InstanceId | None
    created_at: float  # epoch seconds
    instance_type: str = ""
    zone: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class FleetView:
    """Everything carrying this fleet's tag, read in one paginated, tag-filtered pass."""

    instances: tuple[CloudInstance, ...]
    requests: tuple[SpotRequest, ...] = ()
    error: ProviderError | None = None  # the read failed: callers must hold, not scale
    requests_read: bool = True  # False: spot requests were not asked for (`requests` is empty)


@dataclass(frozen=True, slots=True, kw_only=True)
class LaunchSpec:
    fleet: str
    role: Role
    image_id: str
    instance_type: str
    count: int
    client_token: str  # idempotency: a retried launch never doubles the fleet
    zone: str = ""
    subnet: str = ""
    security_group_ids: tuple[str, ...] = ()
    key_name: str = ""
    user_data: str = ""
    max_price: float | None = None  # None: pay the spot price (capped at on-demand by EC2)
    snapshots: tuple[str, ...] = ()  # one EBS volume per snapshot, deleted on termination
    extra_tags: tuple[tuple[str, str], ...] = ()
    dry_run: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class LaunchResult:
    instances: tuple[CloudInstance, ...] = ()
    error: ProviderError | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class OpResult:
    """The outcome of a mutating call that returns nothing else (terminate, cancel, authorize).

    `not_found`: ids EC2 answered it does not know (terminate, cancel). For an instance launched
    moments ago that is EC2's lag, not a sign that it is gone (VISIBILITY_SECONDS).
    """

    error: ProviderError | None = None
    not_found: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.error is None or self.error.kind is ErrorKind.DRY_RUN_OK


@dataclass(frozen=True, slots=True, kw_only=True)
class IngressRule:
    cidr: str  # e.g. 203.0.113.7/32
    port: int
    protocol: str = "tcp"


@dataclass(frozen=True, slots=True, kw_only=True)
class SecurityGroup:
    group_id: str
    name: str
    vpc_id: str
    rules: frozenset[IngressRule] = field(default_factory=frozenset)
    fleet: str = ""  # the fleet tag, "" when not ours


@dataclass(frozen=True, slots=True, kw_only=True)
class Volume:
    """An EBS volume tagged with the fleet: teardown deletes it once no instance uses it."""

    volume_id: str
    state: str  # creating | available | in-use | deleting | deleted | error
    size_gib: int = 0
    role: str = ""  # its controller:role tag, "" for none
    attached_to: tuple[InstanceId, ...] = ()
    goes_with_instance: bool = False  # attached with DeleteOnTermination: EC2 deletes it


class Cloud(Protocol):
    """The port. Every method is bounded in time and returns errors as data."""

    async def describe_fleet(self, fleet: str, *, with_requests: bool = True) -> FleetView: ...

    async def launch(self, spec: LaunchSpec) -> LaunchResult: ...

    async def terminate(self, ids: Sequence[InstanceId], *, dry_run: bool = False) -> OpResult: ...

    async def cancel_requests(
        self, ids: Sequence[RequestId], *, dry_run: bool = False
    ) -> OpResult: ...

    async def wait_terminated(
        self, ids: Sequence[InstanceId], *, timeout: float, poll_interval: float = 5.0
    ) -> tuple[InstanceId, ...]:
        """Poll until every instance is terminated or gone; return the ids still alive."""
        ...

    async def spot_price(self, instance_type: str, zone: str) -> float | None: ...

    async def find_security_group(self, name: str, vpc_id: str) -> SecurityGroup | None: ...

    async def describe_security_group(self, group_id: str) -> SecurityGroup | None: ...

    async def fleet_security_groups(
        self, fleet: str
    ) -> tuple[tuple[SecurityGroup, ...], ProviderError | None]:
        """Every security group tagged controller:fleet=<fleet> (what teardown may delete)."""
        ...

    async def create_security_group(
        self,
        *,
        name: str,
        description: str,
        vpc_id: str,
        fleet: str,
        role: Role = Role.SLAVE,
        dry_run: bool = False,
    ) -> tuple[str | None, ProviderError | None]: ...

    async def authorize_ingress(
        self, group_id: str, rules: Sequence[IngressRule], *, dry_run: bool = False
    ) -> OpResult: ...

    async def revoke_ingress(
        self, group_id: str, rules: Sequence[IngressRule], *, dry_run: bool = False
    ) -> OpResult: ...

    async def delete_security_group(self, group_id: str, *, dry_run: bool = False) -> OpResult: ...

    async def fleet_volumes(self, fleet: str) -> tuple[tuple[Volume, ...], ProviderError | None]:
        """Every EBS volume tagged controller:fleet=<fleet> (what teardown may delete)."""
        ...

    async def delete_volume(self, volume_id: str, *, dry_run: bool = False) -> OpResult:
        """Delete a volume; one EC2 no longer knows counts as deleted."""
        ...

    async def find_vpc(self, subnet: str) -> tuple[str | None, ProviderError | None]:
        """The VPC of a subnet ("" subnet: the default VPC): None with no error when there is
        no such subnet (or no default VPC), None with the error when EC2 could not be asked."""
        ...

    async def subnet_vpc(self, subnet: str) -> str | None:
        """find_vpc's VPC, None when unknown for whatever reason."""
        ...

    async def close(self) -> None: ...
