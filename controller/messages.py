"""The one vocabulary the actors speak.

Every message is an immutable snapshot: frozen, slotted, keyword-only, with the loop time `at` at
which it was observed. Actors publish messages on the Bus (controller.runtime) and subscribe to the
types they handle; they never call each other. Actions are messages too, so a dry run can log them
instead of doing them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import NewType

InstanceId = NewType("InstanceId", str)
RequestId = NewType("RequestId", str)


class Role(enum.StrEnum):
    SLAVE = "slave"
    NODE = "node"
    STAGING = "staging"  # `sync-data`'s short-lived instance: never adopted as a slave or node


class LostReason(enum.StrEnum):
    UNREACHABLE = "unreachable"  # liveness probe failed
    TERMINATED = "terminated"  # EC2 says the instance is gone
    INTERRUPTED = "interrupted"  # spot reclaimed it (state reason Server.SpotInstanceTermination)
    INTERRUPTION_WARNING = "interruption-warning"  # two-minute notice or rebalance recommendation
    SCALE_IN = "scale-in"  # the policy chose it for removal
    REPLACED = "replaced"  # launched from an older image or data snapshot: its replacement serves
    TEARDOWN = "teardown"


class ErrorKind(enum.StrEnum):
    """Provider errors are data: the next decision reads them (see controller.cloud)."""

    CAPACITY = "capacity"  # InsufficientInstanceCapacity, no spot capacity
    PRICE = "price"  # spot price above the bid
    THROTTLED = "throttled"  # RequestLimitExceeded after botocore's own retries
    AUTH = "auth"  # UnauthorizedOperation, AuthFailure, expired credentials
    INVALID = "invalid"  # a bad parameter: AMI, subnet, group, key
    LIMIT = "limit"  # account limits: MaxSpotInstanceCountExceeded, VcpuLimitExceeded
    UNAVAILABLE = "unavailable"  # 5xx, connection refused, timeouts
    DRY_RUN_OK = "dry-run-ok"  # DryRunOperation: the call would have succeeded


# load


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadSample:
    """A rate measured from counter deltas (never Apache's lifetime ReqPerSec)."""

    at: float
    rps: float  # requests/sec over the last poll interval
    window_rps: float  # requests/sec over the smoothing window
    busy_workers: int | None = None
    source: str = "apache"


@dataclass(frozen=True, slots=True, kw_only=True)
class SensorLost:
    """The load source could not be read; the fleet holds until a LoadSample arrives again."""

    at: float
    since: float  # loop time of the first failure in this outage
    reason: str
    source: str = "apache"


@dataclass(frozen=True, slots=True, kw_only=True)
class QueueSample:
    """A batch queue's demand (Grid Engine or Slurm), for cluster mode."""

    at: float
    pending_jobs: int
    pending_slots: int  # slots asked for by pending jobs
    running_jobs: int
    oldest_pending_seconds: float  # how long the oldest pending job has waited
    pending_mem_mb: float = 0.0  # sum of mem_requested of pending jobs
    busy_hosts: tuple[str, ...] = ()  # exec hosts running at least one job
    idle_hosts: tuple[str, ...] = ()  # exec hosts running nothing
    source: str = "sge"
    # For sizing (empty / None when the sensor cannot tell): the pending jobs counted above in
    # the order the scheduler tries them, as (job id, seconds waited, slots per task, tasks),
    # the free slots of the exec hosts that accept jobs, and the running jobs (each array task
    # apart) as (job id, seconds running, slots).
    waiting: tuple[tuple[str, float, int, int], ...] = ()
    free_slots: int | None = None
    running: tuple[tuple[str, float, int], ...] = ()
    # The running tasks that have a hard run-time limit (Grid Engine's h_rt, Slurm's time
    # limit), as (id as in `running`, seconds left until the limit, never below 0): the
    # scheduler ends them by then at the latest.
    running_limits: tuple[tuple[str, float], ...] = ()


# fleet


@dataclass(frozen=True, slots=True, kw_only=True)
class InstanceUp:
    """An instance of the fleet is running and has an address; readiness is not known yet."""

    at: float
    instance_id: InstanceId
    address: str
    role: Role = Role.SLAVE
    instance_type: str = ""
    zone: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class InstanceDown:
    """An instance left the fleet or is about to (terminated, interrupted, chosen for scale-in)."""

    at: float
    instance_id: InstanceId
    address: str
    reason: LostReason


@dataclass(frozen=True, slots=True, kw_only=True)
class InterruptionWarning:
    """EventBridge's two-minute spot interruption warning or a rebalance recommendation."""

    at: float
    instance_id: InstanceId
    kind: str  # "interruption" | "rebalance"
    action_time: str = ""  # EC2's instance-action time (ISO 8601), when it gives one


@dataclass(frozen=True, slots=True, kw_only=True)
class DrainSlave:
    """Take a slave out of renderfarm.conf before it is terminated (scale-in or interruption)."""

    at: float
    instance_id: InstanceId
    address: str
    reason: LostReason


@dataclass(frozen=True, slots=True, kw_only=True)
class SlaveReady:
    """A slave passed GBrowse's readiness probe (HTTP GET / answers 403) on every port."""

    at: float
    instance_id: InstanceId
    address: str


@dataclass(frozen=True, slots=True, kw_only=True)
class SlaveLost:
    """A listed slave failed its liveness probe or went away; it leaves renderfarm.conf at once."""

    at: float
    instance_id: InstanceId
    address: str
    reason: LostReason


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeReady:
    """A batch node is set up (volumes, plugins) and registered with the scheduler."""

    at: float
    instance_id: InstanceId
    address: str
    hostname: str  # the EC2-style name it has in Grid Engine (ip-10-0-1-23)


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeSetupFailed:
    at: float
    instance_id: InstanceId
    address: str
    step: str
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeReleased:
    """A node announced down for scale-in is out of Grid Engine and ran no job when its queue
    was disabled: the node pool may terminate it."""

    at: float
    instance_id: InstanceId
    address: str


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeKept:
    """A node announced down for scale-in runs a job after all (Grid Engine gave it one after
    the queue sample the choice was made on), or could not be checked: it stays in service."""

    at: float
    instance_id: InstanceId
    address: str
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RenderfarmWritten:
    at: float
    addresses: tuple[str, ...]  # the slave URLs now listed
    reloaded: bool
    dry_run: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class RenderfarmWriteFailed:
    """renderfarm.conf could not be rewritten (the old file stays); said again at each retry, so
    SpotPool keeps a drained slave the file still lists rather than terminate it."""

    at: float
    error: str


@dataclass(frozen=True, slots=True, kw_only=True)
class SecurityGroupReady:
    """FirewallKeeper made (or found) the group slaves launch into."""

    at: float
    group_id: str
    created: bool  # True: owned by the controller and deleted at teardown


# decisions and errors (for Stats and logs)


@dataclass(frozen=True, slots=True, kw_only=True)
class SlaveView:
    instance_id: InstanceId
    address: str
    state: str  # lifecycle state (pending, running, ready, draining, ...)
    healthy: bool
    since: float  # wall-clock epoch seconds of the last state change
    instance_type: str = ""
    zone: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class FleetObserved:
    """SpotPool's view of the fleet after each reconcile."""

    at: float
    members: tuple[SlaveView, ...]  # the pool's instances: render slaves or cluster nodes
    pending_requests: int
    cost_per_hour: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    """One reconcile: what the policy saw, what it wants, and why."""

    at: float
    load_rps: float | None
    band: tuple[int, int]
    desired: int
    launch: int
    remove: tuple[InstanceId, ...]
    reason: str
    dry_run: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class ProviderErrorSeen:
    at: float
    kind: ErrorKind
    code: str
    message: str
    operation: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ActorStateChanged:
    """Published by the runtime when an actor starts, crashes, restarts or stops."""

    at: float
    actor: str
    state: str  # starting | running | restarting | stopping | stopped | failed
    restarts: int
    error: str | None = None


Event = (
    LoadSample
    | SensorLost
    | InstanceUp
    | InstanceDown
    | InterruptionWarning
    | DrainSlave
    | SlaveReady
    | SlaveLost
    | RenderfarmWritten
    | RenderfarmWriteFailed
    | SecurityGroupReady
    | FleetObserved
    | Decision
    | ProviderErrorSeen
    | ActorStateChanged
)
