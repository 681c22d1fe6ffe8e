"""SimFleet's records: what the simulated EC2 keeps of each instance and spot request, its
counters, and the errors it answers with (as ProviderError values, like the EC2 adapter)."""

from __future__ import annotations

from dataclasses import dataclass

from controller.cloud.port import LaunchSpec, ProviderError
from controller.messages import ErrorKind, InstanceId, Role

NOTICE_SECONDS = 120.0  # EC2's spot interruption warning comes two minutes ahead
MIN_BILLED_SECONDS = 60.0  # per-second billing has a one-minute minimum
KEEP_ENDED_SECONDS = 3600.0  # EC2 lists terminated instances for about an hour


@dataclass(slots=True)
class SimInstance:
    """The simulator's own record of an instance (mutable; views are CloudInstance)."""

    instance_id: str
    fleet: str
    role: Role
    instance_type: str
    zone: str
    private_ip: str
    launched_at: float
    ready_at: float  # boot done: the readiness probe would pass from here on
    interrupt_at: float | None  # spot reclaims it then; the notice comes NOTICE_SECONDS before
    request_id: str
    security_groups: tuple[str, ...] = ()
    ended_at: float | None = None
    state_reason: str | None = None


@dataclass(slots=True)
class SimRequest:
    request_id: str
    fleet: str
    created_at: float
    instance_type: str
    zone: str
    state: str = "open"  # open | active | cancelled
    status_code: str = "capacity-not-available"
    instance_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class InterruptionNotice:
    """A spot interruption warning: the instance is reclaimed at `action_at`."""

    instance_id: InstanceId
    notice_at: float
    action_at: float


@dataclass(slots=True)
class SimCounters:
    launched: int = 0
    terminated: int = 0
    interrupted: int = 0
    capacity_errors: int = 0
    unfilled: int = 0
    cancelled: int = 0


def sim_error(
    kind: ErrorKind, code: str, operation: str, message: str = "", spec: LaunchSpec | None = None
) -> ProviderError:
    return ProviderError(
        kind=kind,
        code=code,
        message=message
        or ("Request would have succeeded" if kind is ErrorKind.DRY_RUN_OK else code),
        operation=operation,
        instance_type=spec.instance_type if spec else "",
        zone=spec.zone if spec else "",
    )
