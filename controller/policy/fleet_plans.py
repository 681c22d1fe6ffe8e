"""The vocabulary of the fleet reconciler's plans, and its record of one instance.

A plan is a generator: it yields the cloud calls it needs and is sent back each call's result
(DescribeFleet -> FleetView, LaunchCall -> LaunchResult, TerminateCall and CancelCall -> OpResult,
PriceCall -> float | None). What it has to tell the other actors, and its log lines, go to an
outbox as Publish and Note. Executors: actors.spot_pool (awaits the calls on EC2 or SimCloud)
and controller.simulation.fleet_executor (makes them on SimCloud in virtual time).
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any

from controller.cloud.port import InstanceState, LaunchSpec, ProviderError
from controller.messages import ErrorKind, InstanceId, LostReason, RequestId
from controller.policy.lifecycle import Phase


@dataclass(frozen=True, slots=True)
class DescribeFleet:
    """Every instance (and, `with_requests`, spot request) tagged with the fleet: answered with a
    FleetView."""

    with_requests: bool = True


@dataclass(frozen=True, slots=True)
class LaunchCall:
    """Answered with a LaunchResult."""

    spec: LaunchSpec


@dataclass(frozen=True, slots=True)
class TerminateCall:
    """Answered with an OpResult."""

    ids: tuple[InstanceId, ...]
    dry_run: bool = False


@dataclass(frozen=True, slots=True)
class CancelCall:
    """Cancel open spot requests: answered with an OpResult."""

    ids: tuple[RequestId, ...]
    dry_run: bool = False


@dataclass(frozen=True, slots=True)
class PriceCall:
    """The spot price now: answered with a float, or None when unknown."""

    instance_type: str
    zone: str


CloudCall = DescribeFleet | LaunchCall | TerminateCall | CancelCall | PriceCall
Plan = Generator[CloudCall, Any, None]


@dataclass(frozen=True, slots=True)
class Publish:
    """A message for the other actors."""

    message: Any


@dataclass(frozen=True, slots=True)
class Note:
    """A log line: structlog's level, event and fields."""

    level: str
    event: str
    fields: dict[str, Any] = field(default_factory=dict)


PRICE_REFRESH_SECONDS = 600.0
# RunInstances calls one cycle may make: a launch that yields fewer instances than asked (EC2
# launches what capacity allows between MinCount 1 and MaxCount) is asked for the rest at once,
# falling through the types on capacity errors, but never more than this.
MAX_LAUNCH_CALLS = 10
# With every instance type cooling down after capacity errors, one launch is still tried after
# each of these delays (the last repeats), so a single-type fleet is not starved for the whole
# capacity_cooldown.
STARVED_BACKOFF = (30.0, 60.0, 120.0, 240.0)
# A drained slave whose leaving renderfarm.conf is never confirmed is terminated this long after
# its drain delay anyway (a writer that went silent never leaks an instance), unless the writer has
# said within this time that it cannot write the file: then it is held, draining, and looked at
# again after as long (RetirePlans._hold_listed).
UNLIST_GRACE = 15.0
# An instance asked to terminate that EC2 still shows pending or running this long after is
# asked again (the first call may have been lost to EC2's lag).
TERMINATE_RESEND_SECONDS = 60.0
# A termination EC2 answered "not found" for an instance launched moments ago: asked again then.
NOT_FOUND_RETRY_SECONDS = 5.0
ALIVE_STATES = frozenset({InstanceState.PENDING, InstanceState.RUNNING})


@dataclass(slots=True)
class Tracked:
    """SpotPool's record of one instance; rebuilt from EC2 at every start."""

    instance_id: InstanceId
    address: str
    phase: Phase
    launched_at: float  # loop time
    since_wall: float  # epoch seconds of the last phase change (for /status)
    instance_type: str
    zone: str
    # Loop time by which it must pass the readiness probe: request_timeout from when this process
    # first tracked it (not from its launch: an adopted slave gets its chance to be probed).
    ready_by: float
    interrupted: bool = False
    drain_until: float | None = None
    # a drained slave's drain delay, waiting for renderfarm.conf to stop listing it (then it
    # runs from there); None once it does, or for what needs no wait
    unlist_delay: float | None = None
    held_listed: bool = False  # kept past its drain: renderfarm.conf still lists it
    down_reason: LostReason | None = None  # why we drain/terminate it, for its InstanceDown
    announced: bool = False  # InstanceUp published
    # a describe has shown it (always, for what was adopted from one); a launch is unconfirmed
    # until then, and "not found" about it means EC2's lag, not that it is gone
    confirmed: bool = True
    terminate_sent_at: float | None = None  # loop time TerminateInstances last took it
    resend: bool = False  # still alive well after termination was asked: ask again
    hostname: str = ""  # a node's Grid Engine name, from NodeReady
    awaiting_release: bool = False  # a scale-in waiting for NodeReleased (release_plans)
    kept_at: float | None = None  # loop time Grid Engine last kept it from a scale-in
    spec: str = ""  # its controller:spec tag (what it was launched from); "" = none, current


def outcome(error: ProviderError | None) -> str:
    """How EC2's DryRun permission check came out, for the dry-run log lines."""
    if error is None or error.kind is ErrorKind.DRY_RUN_OK:
        return "permitted"
    return f"{error.kind}: {error.code} {error.message}"
