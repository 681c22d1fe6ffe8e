"""The fleet reconciler: one pool's state, and every decision SpotPool takes about it.

SpotPool (the daemon's actor) and the simulator (`controller simulate`) are two executors of this
one controller. A plan is a generator: it yields the cloud calls it needs (DescribeFleet,
LaunchCall, TerminateCall, CancelCall, PriceCall) and is sent back each call's result; what it
has to say to the other actors (InstanceUp, DrainSlave, InstanceDown, Decision, ...) and its log
lines wait in `outbox` for the executor to deliver. It imports no I/O library and no asyncio: the
daemon awaits the calls on EC2 (or SimCloud), the simulator makes them on SimCloud's synchronous
core in virtual time, and both see the same decisions, launches, unlistings and terminations.

Each cycle records observations, then computes changes (Ray autoscaler's reconciler shape): one
paginated, tag-filtered describe gives the whole fleet; the pure policy turns load and fleet into
a decision; the plan launches, drains and terminates accordingly. Nothing is remembered that the
tags cannot rebuild: a restarted process adopts the fleet on its first describe. Each instance
moves through the phases of controller.lifecycle, whose table is the one list of transitions.

Scale-in never cuts a render short: the slave is drained first (DrainSlave takes it out of
renderfarm.conf), then terminated `drain_seconds` later. A slave declared lost, or that gets a
spot interruption warning, is drained at once and replaced by the next decision. Provider errors
are data: a capacity error puts its (type, zone) on a cooldown and the next type is tried; a
price above the bid waits, as GBrowse's balancer does; a failed describe holds. An instance EC2
ends by itself for a reason of the launch's making (a KMS key, a snapshot, an image that shuts
down) pauses its type the same way, rather than being relaunched every cycle.

EC2's reads lag its writes: an instance launched moments ago may be missing from the describe,
and TerminateInstances may not know it yet. Such an instance is kept (it counts, it is not
announced down, nothing replaces it) until a describe shows it or VISIBILITY_SECONDS pass, and
its termination is asked again until EC2 takes it; an instance asked to terminate that a
describe still shows alive TERMINATE_RESEND_SECONDS later is asked again too.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from controller.cloud.port import (
    SPOT_INTERRUPTION_REASON,
    VISIBILITY_SECONDS,
    CloudInstance,
    FleetView,
    InstanceState,
    LaunchSpec,
    ProviderError,
    ended_on_our_side,
    launch_token,
)
from controller.config.schema import ClusterSection, Config
from controller.messages import (
    Decision,
    ErrorKind,
    FleetObserved,
    InstanceDown,
    InstanceId,
    InstanceUp,
    InterruptionWarning,
    LostReason,
    ProviderErrorSeen,
    RenderfarmWritten,
    RequestId,
    SecurityGroupReady,
    SensorLost,
    SlaveView,
)
from controller.policy.band import Policy
from controller.policy.factory import make_policy
from controller.policy.lifecycle import Phase, check_transition
from controller.policy.pool_profile import NodeProfile, PoolMember, PoolProfile, SlaveProfile
from controller.policy.queue_policy import QueuePolicy


@dataclass(frozen=True, slots=True)
class DescribeFleet:
    """Every instance and spot request tagged with the fleet: answered with a FleetView."""


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
# With every instance type cooling down after capacity errors, one launch is still tried after
# each of these delays (the last repeats), so a single-type fleet is not starved for the whole
# capacity_cooldown.
STARVED_BACKOFF = (30.0, 60.0, 120.0, 240.0)
# A drained slave whose leaving renderfarm.conf is never confirmed (the writer failing to write
# or reload) is terminated this long after its drain delay anyway: never a leak.
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
    down_reason: LostReason | None = None  # why we drain/terminate it, for its InstanceDown
    announced: bool = False  # InstanceUp published
    # a describe has shown it (always, for what was adopted from one); a launch is unconfirmed
    # until then, and "not found" about it means EC2's lag, not that it is gone
    confirmed: bool = True
    terminate_sent_at: float | None = None  # loop time TerminateInstances last took it
    resend: bool = False  # still alive well after termination was asked: ask again
    hostname: str = ""  # a node's Grid Engine name, from NodeReady


class FleetReconciler:
    """The pool's state and every decision about it; the caller executes the cloud calls its
    plans yield and delivers what the outbox holds (module docstring)."""

    def __init__(
        self,
        *,
        config: Config,
        policy: Policy | QueuePolicy,
        profile: PoolProfile,
        clock: Callable[[], float],
        wall_clock: Callable[[], float],
        dry_run: bool = False,
    ) -> None:
        self.profile: PoolProfile = profile
        self.now = clock
        self.outbox: list[Publish | Note] = []
        self.config = config
        self.policy = policy
        self.dry_run = dry_run
        self.wall_clock = wall_clock
        self.fleet = config.controller.fleet
        self.role = self.profile.role
        self.keys = self.profile.launch_keys()
        self.tracked: dict[InstanceId, Tracked] = {}
        self.group_id: str | None = self.profile.security_group() or None
        self.sample: Any = None  # the newest demand reading; None = sensor lost (hold)
        self.cooldowns: dict[tuple[str, str], float] = {}  # (type, zone) -> loop time it ends
        self.starved_tries = 0  # capacity probes since every type went into cooldown
        self.starved_until = 0.0  # no probe before this loop time
        self.prices: dict[tuple[str, str], tuple[float, float]] = {}  # -> (price, fetched at)
        self.pending_requests = 0
        self.last_error: ProviderError | None = None
        self.urgent = False
        self._terminate_tried_at = -math.inf  # the last terminate_due: what was due then is tried

    def subscriptions(self) -> tuple[type, ...]:
        """The messages `handle` takes."""
        return (
            *self.profile.sample_types,
            SensorLost,
            self.profile.ready_type,
            self.profile.lost_type,
            SecurityGroupReady,
            InterruptionWarning,
            *((RenderfarmWritten,) if self.profile.drain_after_unlisting else ()),
        )

    def publish(self, message: Any) -> None:
        self.outbox.append(Publish(message))

    def note(self, level: str, event: str, **fields: Any) -> None:
        """A log line for the executor to write (pure code does no logging of its own)."""
        self.outbox.append(Note(level, event, fields))

    def take_outbox(self) -> list[Publish | Note]:
        out, self.outbox = self.outbox, []
        return out

    def reconfigure(self, config: Config) -> None:
        """SIGHUP: new timings, bid, types and table apply from the next cycle.

        The policy is rebuilt (its learning starts over) only when a key it reads changed.
        A cluster pool takes its cluster's new tuning keys (controller.reload refuses the rest).
        """
        if isinstance(self.profile, NodeProfile):
            self._reconfigure_cluster(config)
            return
        old, self.config = self.config, config
        self.profile = SlaveProfile(config)
        self.keys = self.profile.launch_keys()
        policy_keys = ("load_table", "scaling", "simulate", "master")
        if any(getattr(old, k) != getattr(config, k) for k in policy_keys):
            self.policy = make_policy(config.scaling.policy, config)
            self.note("info", "policy.rebuilt", policy=config.scaling.policy)

    def _reconfigure_cluster(self, config: Config) -> None:
        """min/max_nodes, idle_seconds and node_slots go to a new QueuePolicy (idle clocks start
        over: a reload delays scale-in, never hastens it); the bid and types to the next launch."""
        assert isinstance(self.profile, NodeProfile)
        old = self.profile
        name = old.cluster.name
        cluster = next((c for c in config.clusters if c.name == name), None)
        if cluster is None:  # controller.reload refuses this; keep running what we run
            self.note("warning", "reload.cluster_missing", cluster=name, kept="the old settings")
            return
        self.config = config
        self.profile = old.reconfigured(config, cluster)
        self.keys = self.profile.launch_keys()
        if _queue_keys(config, cluster) != _queue_keys(old.config, old.cluster):
            self.policy = QueuePolicy.for_cluster(config, cluster)
            self.note("info", "policy.rebuilt", policy=QueuePolicy.name, cluster=name)

    @property
    def load_rps(self) -> float | None:
        return self.profile.load_of(self.sample)[0]

    def announce_down(self, reason: LostReason) -> None:
        """InstanceDown for every tracked instance (teardown)."""
        for t in self.tracked.values():
            self.publish(
                InstanceDown(
                    at=self.now(), instance_id=t.instance_id, address=t.address, reason=reason
                )
            )

    def adopt(self) -> Plan:
        """Adopt whatever carries the fleet's tag before anything else decides."""
        view = yield DescribeFleet()
        if view.error is not None:
            self._provider_error(view.error)
            self.note("warning", "fleet.adopt_failed", reason=view.error.message)
            return
        self._observe(view)
        self.note("info", "fleet.adopted", instances=len(self.tracked))

    def handle(self, msg: Any) -> None:
        """Fold one message from the other actors in (sets `urgent` when it calls for a cycle
        now)."""
        profile = self.profile
        if isinstance(msg, profile.sample_types):
            self.sample = msg
        elif isinstance(msg, profile.ready_type):
            t = self.tracked.get(msg.instance_id)
            if t is not None and t.phase is Phase.BOOTING:
                t.hostname = getattr(msg, "hostname", "")
                self._move(t, Phase.READY)
        elif isinstance(msg, profile.lost_type):
            t = self.tracked.get(msg.instance_id)
            if t is not None and t.phase in (Phase.BOOTING, Phase.READY):
                why = getattr(msg, "reason", "")
                self.note(
                    "warning",
                    f"{self.role}.lost",
                    instance_id=t.instance_id,
                    address=t.address,
                    why=why,
                )
                self._drain(t, LostReason.UNREACHABLE, delay=0.0)
                self.urgent = True
        match msg:
            case SensorLost(source=source) if profile.sensor_source in (None, source):
                self.sample = None
            case SecurityGroupReady(group_id=group_id):
                self.group_id = group_id
            case RenderfarmWritten(addresses=urls):
                self._unlisted(urls)
            case InterruptionWarning(instance_id=iid, kind=kind):
                t = self.tracked.get(iid)
                if t is not None and t.phase in (Phase.BOOTING, Phase.READY):
                    t.interrupted = True
                    self.note(
                        "warning", f"{self.role}.interruption_warning", instance_id=iid, kind=kind
                    )
                    if kind == "interruption":
                        self._drain(t, LostReason.INTERRUPTION_WARNING, delay=None)
                    self.urgent = True

    def reconcile(self) -> Plan:
        """Observe the whole fleet, ask the policy, act; every branch logs its reason."""
        view = yield DescribeFleet()
        if view.error is not None:
            self._provider_error(view.error)
            self.note("warning", "fleet.describe_failed", hold=True, reason=view.error.message)
            return
        self._observe(view)
        yield from self._expire_requests(view)
        yield from self.terminate_due()
        yield from self._refresh_prices()

        decision = self.policy.decide(
            self.profile.policy_input(  # type: ignore[arg-type]  # each profile feeds its policy
                now=self.now(),
                sample=self.sample,
                members=self.members(),
                pending_requests=self.pending_requests,
                cost_per_hour=self._cost_per_hour(),
                price_per_instance=self._price_for_next_launch(),
            )
        )
        self.publish(
            Decision(
                at=self.now(),
                load_rps=self.profile.load_of(self.sample)[0],
                band=decision.band,
                desired=decision.desired,
                launch=decision.launch,
                remove=tuple(InstanceId(i) for i in decision.remove),
                reason=decision.reason,
                dry_run=self.dry_run,
            )
        )
        self.note(
            "info",
            "decision",
            load_rps=self.load_rps,
            band=decision.band,
            desired=decision.desired,
            launch=decision.launch,
            remove=decision.remove,
            reason=decision.reason,
        )
        for iid in decision.remove:
            t = self.tracked.get(InstanceId(iid))
            if t is not None:
                self._drain(t, LostReason.SCALE_IN, delay=None)
        yield from self.terminate_due()
        if decision.launch > 0:
            yield from self._launch(decision.launch)
        self.publish_fleet()

    def _observe(self, view: FleetView) -> None:
        """Fold one describe into the tracked set: adopt new instances, drop vanished ones."""
        seen: set[InstanceId] = set()
        for inst in view.instances:
            if inst.role is not self.role:
                continue
            seen.add(inst.instance_id)
            t = self.tracked.get(inst.instance_id)
            if t is not None:
                t.confirmed = True
            if inst.state not in ALIVE_STATES:
                if t is not None and t.phase is not Phase.GONE:
                    self._gone(t, inst)
                continue
            if t is None:
                t = self._adopt(inst)
            if (
                t.phase is Phase.TERMINATING
                and t.terminate_sent_at is not None
                and self.now() - t.terminate_sent_at >= TERMINATE_RESEND_SECONDS
            ):
                t.resend = True
            if not t.announced and inst.private_ip and inst.state is InstanceState.RUNNING:
                t.address = inst.private_ip
                t.announced = True
                self.publish(
                    InstanceUp(
                        at=self.now(),
                        instance_id=t.instance_id,
                        address=t.address,
                        role=self.role,
                        instance_type=t.instance_type,
                        zone=t.zone,
                    )
                )
        for iid in [i for i in self.tracked if i not in seen]:
            t = self.tracked[iid]
            if not t.confirmed and not self._visibility_passed(t):
                continue  # launched moments ago: EC2's reads have not caught up yet
            self._gone(t, None)
        self.pending_requests = sum(1 for r in view.requests if r.state == "open")

    def _adopt(self, inst: CloudInstance) -> Tracked:
        launched_loop = self.now() - max(0.0, self.wall_clock() - inst.launched_at)
        t = Tracked(
            instance_id=inst.instance_id,
            address=inst.private_ip or "",
            phase=Phase.BOOTING,
            launched_at=launched_loop,
            since_wall=self.wall_clock(),
            instance_type=inst.instance_type,
            zone=inst.zone,
            ready_by=self.now() + self.config.scaling.request_timeout,
        )
        self.tracked[inst.instance_id] = t
        self.note("info", "instance.tracked", instance_id=inst.instance_id, state=str(inst.state))
        return t

    def _visibility_passed(self, t: Tracked) -> bool:
        return self.now() - t.launched_at >= VISIBILITY_SECONDS

    def _gone(self, t: Tracked, inst: CloudInstance | None) -> None:
        if inst is not None and t.phase is Phase.BOOTING and ended_on_our_side(inst.state_reason):
            self._launch_failed(t, inst.state_reason or "")
        if inst is not None and inst.state_reason == SPOT_INTERRUPTION_REASON:
            reason = LostReason.INTERRUPTED
        else:  # ours (why we drained it), else someone else's doing
            reason = t.down_reason or LostReason.TERMINATED
        self._move(t, Phase.GONE)
        del self.tracked[t.instance_id]
        self.note("info", "instance.gone", instance_id=t.instance_id, reason=str(reason))
        self.publish(
            InstanceDown(at=self.now(), instance_id=t.instance_id, address=t.address, reason=reason)
        )

    def members(self) -> tuple[PoolMember, ...]:
        return tuple(
            PoolMember(
                instance_id=t.instance_id,
                address=t.address,
                hostname=t.hostname,
                launched_at=t.launched_at,
                ready=t.phase is Phase.READY,
                draining=t.phase in (Phase.DRAINING, Phase.TERMINATING),
                interrupted=t.interrupted,
            )
            for t in self.tracked.values()
        )

    # ---- actions ---------------------------------------------------------------------------

    def _drain(self, t: Tracked, reason: LostReason, delay: float | None) -> None:
        """Take it out of service now (a slave leaves renderfarm.conf, a node Grid Engine);
        terminate it after `delay` (default: the profile's drain)."""
        if t.phase in (Phase.DRAINING, Phase.TERMINATING, Phase.GONE):
            return
        in_service = delay is None and t.phase is Phase.READY
        if delay is None:
            # Never in service: nothing to drain. In service: let work in flight finish.
            delay = self.profile.drain_seconds() if in_service else 0.0
        self._move(t, Phase.DRAINING)
        t.drain_until = self.now() + delay
        if in_service and self.profile.drain_after_unlisting:
            # the delay runs once GBrowse stops sending it renders (see _unlisted)
            t.unlist_delay = delay
            t.drain_until += UNLIST_GRACE
        t.down_reason = reason
        self.publish(
            self.profile.drain_type(
                at=self.now(), instance_id=t.instance_id, address=t.address, reason=reason
            )
        )
        self.note(
            "info",
            f"{self.role}.draining",
            instance_id=t.instance_id,
            reason=str(reason),
            delay=delay,
        )

    def _unlisted(self, urls: tuple[str, ...]) -> None:
        """renderfarm.conf was rewritten (and Apache reloaded): the drain delay of each drained
        slave it no longer lists runs from now."""
        listed = {urlsplit(url).hostname for url in urls}
        for t in self.tracked.values():
            if t.unlist_delay is None or t.address in listed or t.drain_until is None:
                continue
            t.drain_until = min(t.drain_until, self.now() + t.unlist_delay)
            t.unlist_delay = None
            self.note(
                "info", f"{self.role}.unlisted", instance_id=t.instance_id, until=t.drain_until
            )

    def next_drain_due(self) -> float:
        """When the next drained instance is due to go (inf when none is). One whose termination
        was tried and failed (or is a dry run) is retried with the next cycle, not before."""
        return min(
            (
                t.drain_until
                for t in self.tracked.values()
                if t.phase is Phase.DRAINING
                and t.drain_until is not None
                and t.drain_until > self._terminate_tried_at
            ),
            default=math.inf,
        )

    def terminate_due(self) -> Plan:
        now = self._terminate_tried_at = self.now()
        due = [
            t
            for t in self.tracked.values()
            if t.phase is Phase.DRAINING and t.drain_until is not None and t.drain_until <= now
        ]
        # A launch that never became ready within request_timeout is abandoned.
        stuck = [t for t in self.tracked.values() if t.phase is Phase.BOOTING and now > t.ready_by]
        for t in stuck:
            self.note("warning", "instance.boot_timeout", instance_id=t.instance_id)
            self._cool_down(t.instance_type, t.zone)
            self._move(t, Phase.DRAINING)
            t.down_reason = LostReason.UNREACHABLE  # it never answered the readiness probe
        due += stuck
        # Asked to terminate a while ago and still alive: ask again.
        again = [t for t in self.tracked.values() if t.phase is Phase.TERMINATING and t.resend]
        for t in again:
            self.note("warning", "instance.terminate_again", instance_id=t.instance_id)
        due += again
        if not due:
            return
        ids = [t.instance_id for t in due]
        result = yield TerminateCall(tuple(ids), dry_run=self.dry_run)
        if self.dry_run:
            self.note(
                "info", "dry_run.would_terminate", instance_ids=ids, check=_outcome(result.error)
            )
            return
        if not result.ok:
            assert result.error is not None
            self._provider_error(result.error)
            return
        unknown = set(result.not_found)
        taken = []
        for t in due:
            if t.instance_id in unknown and not t.confirmed and not self._visibility_passed(t):
                # EC2 does not know it yet, so it goes on running: ask again shortly.
                self.note("info", "instance.terminate_not_found_yet", instance_id=t.instance_id)
                t.drain_until = now + NOT_FOUND_RETRY_SECONDS
                continue
            self._move(t, Phase.TERMINATING)
            t.terminate_sent_at, t.resend = now, False
            taken.append(t.instance_id)
        if taken:
            self.note("info", "instances.terminating", instance_ids=taken)

    def _expire_requests(self, view: FleetView) -> Plan:
        """Cancel spot requests left open past request_timeout; their type/zone cools down."""
        now_wall = self.wall_clock()
        timeout = self.config.scaling.request_timeout
        stale = [
            r for r in view.requests if r.state == "open" and now_wall - r.created_at > timeout
        ]
        if not stale:
            return
        for r in stale:
            self._cool_down(r.instance_type, r.zone)
        ids = [r.request_id for r in stale]
        result = yield CancelCall(tuple(ids), dry_run=self.dry_run)
        self.note("warning", "requests.cancelled_unfilled", request_ids=ids, ok=result.ok)
        if result.ok and not self.dry_run:
            self.pending_requests = max(0, self.pending_requests - len(ids))

    def _launch(self, count: int) -> Plan:
        if self.group_id is None:
            self.note("warning", "launch.waiting", reason="no security group yet")
            return
        keys = self.keys
        if not keys.image_id:
            self.note("error", "launch.refused", reason=f"{keys.image_key} is empty: set an AMI id")
            return
        zone = keys.availability_zone
        types = [t for t in keys.instance_types if not self._cooling(t, zone)]
        if not types:
            if self.now() < self.starved_until:
                self.note("warning", "launch.no_type_available", types=keys.instance_types)
                return
            # Every type is cooling down: rather than wait out capacity_cooldown with nothing to
            # fall back on, probe the type that cools soonest, on a growing backoff.
            types = [min(keys.instance_types, key=lambda t: self.cooldowns.get((t, zone), 0.0))]
            self.starved_until = (
                self.now() + STARVED_BACKOFF[min(self.starved_tries, len(STARVED_BACKOFF) - 1)]
            )
            self.starved_tries += 1
            self.note("info", "launch.probing_capacity", instance_type=types[0])
        for instance_type in types:
            bid = keys.spot_bid
            if bid is not None:
                price = yield PriceCall(instance_type, zone or self._any_zone())
                if price is not None and price > bid:
                    self.note(
                        "info",
                        "launch.waiting_for_price",
                        instance_type=instance_type,
                        spot_price=price,
                        spot_bid=bid,
                    )
                    continue
            spec = LaunchSpec(
                fleet=self.fleet,
                role=self.role,
                image_id=keys.image_id,
                instance_type=instance_type,
                count=count,
                client_token=launch_token(self.fleet),
                zone=zone,
                subnet=keys.subnet,
                security_group_ids=(self.group_id,) if self.group_id != "sg-dryrun" else (),
                key_name=keys.key_name,
                user_data=keys.user_data,
                max_price=bid,
                snapshots=keys.snapshots,
                dry_run=self.dry_run,
            )
            result = yield LaunchCall(spec)
            if self.dry_run:
                self.note(
                    "info",
                    "dry_run.would_launch",
                    count=count,
                    instance_type=instance_type,
                    check=_outcome(result.error),
                )
                return
            if result.error is not None and not result.instances:
                self._provider_error(result.error)
                if result.error.kind is ErrorKind.CAPACITY:
                    self._cool_down(instance_type, zone)
                    continue  # the next type in the list
                return
            self.starved_tries = 0
            for inst in result.instances:
                if inst.instance_id not in self.tracked:
                    self._adopt(inst).confirmed = False
            self.note(
                "info",
                "instances.launched",
                count=len(result.instances),
                instance_type=instance_type,
                instance_ids=[i.instance_id for i in result.instances],
            )
            return
        self.note("warning", "launch.no_type_available", types=keys.instance_types)

    # ---- prices and cooldowns --------------------------------------------------------------

    def _cool_down(self, instance_type: str, zone: str) -> None:
        """Skip this type for capacity_cooldown. The key is the zone launches ask for: with no
        `availability_zone` EC2 picks the zone, so the failure in `zone` cools the whole type."""
        key = (instance_type, self.keys.availability_zone)
        self.cooldowns[key] = self.now() + self.config.scaling.capacity_cooldown
        self.note("info", "capacity.cooldown", instance_type=instance_type, zone=zone or "any")

    def _launch_failed(self, t: Tracked, state_reason: str) -> None:
        """EC2 ended a booting instance for a reason of the launch's making: launching the same
        again would fail the same way (and bill a minute each time), so its type pauses."""
        self.note(
            "error",
            "launch.failed_on_start",
            instance_id=t.instance_id,
            instance_type=t.instance_type,
            state_reason=state_reason,
            hint="check the image, its snapshots and their KMS keys, and the instance's limits",
        )
        self._provider_error(
            ProviderError(
                kind=ErrorKind.INVALID,
                code=state_reason,
                message=f"{t.instance_id} ended while starting ({state_reason}): "
                f"{t.instance_type} paused for capacity_cooldown",
                operation="RunInstances",
                instance_type=t.instance_type,
                zone=t.zone,
            )
        )
        self._cool_down(t.instance_type, t.zone)

    def _cooling(self, instance_type: str, zone: str) -> bool:
        until = self.cooldowns.get((instance_type, zone))
        return until is not None and until > self.now()

    def _any_zone(self) -> str:
        return next((t.zone for t in self.tracked.values() if t.zone), "")

    def _refresh_prices(self) -> Plan:
        keys = {(t.instance_type, t.zone) for t in self.tracked.values()}
        keys.add((self.keys.instance_types[0], self._any_zone()))
        for key in keys:
            cached = self.prices.get(key)
            if cached is not None and self.now() - cached[1] < PRICE_REFRESH_SECONDS:
                continue
            price = yield PriceCall(*key)
            if price is not None:
                self.prices[key] = (price, self.now())

    def _price(self, instance_type: str, zone: str) -> float:
        cached = self.prices.get((instance_type, zone))
        return cached[0] if cached else 0.0

    def _price_for_next_launch(self) -> float:
        return self._price(self.keys.instance_types[0], self._any_zone())

    def _cost_per_hour(self) -> float:
        return sum(
            self._price(t.instance_type, t.zone)
            for t in self.tracked.values()
            if t.phase is not Phase.GONE
        )

    # ---- reporting -------------------------------------------------------------------------

    def _move(self, t: Tracked, phase: Phase) -> None:
        if t.phase is not phase:
            t.phase = check_transition(t.phase, phase)
            t.since_wall = self.wall_clock()

    def _provider_error(self, error: ProviderError) -> None:
        self.last_error = error
        self.note(
            "warning",
            "ec2.error",
            kind=str(error.kind),
            code=error.code,
            operation=error.operation,
            message=error.message,
        )
        self.publish(
            ProviderErrorSeen(
                at=self.now(),
                kind=error.kind,
                code=error.code,
                message=error.message,
                operation=error.operation,
            )
        )

    def publish_fleet(self) -> None:
        self.publish(
            FleetObserved(
                at=self.now(),
                slaves=tuple(
                    SlaveView(
                        instance_id=t.instance_id,
                        address=t.address,
                        state=str(t.phase),
                        healthy=t.phase is Phase.READY,
                        since=t.since_wall,
                        instance_type=t.instance_type,
                        zone=t.zone,
                    )
                    for t in self.tracked.values()
                ),
                pending_requests=self.pending_requests,
                cost_per_hour=self._cost_per_hour(),
            )
        )


def _queue_keys(config: Config, cluster: ClusterSection) -> tuple[object, ...]:
    """What QueuePolicy.for_cluster reads."""
    return (
        cluster.min_nodes,
        cluster.max_nodes,
        cluster.node_slots,
        cluster.idle_seconds,
        config.scaling.max_cost_per_hour,
    )


def _outcome(error: ProviderError | None) -> str:
    """How EC2's DryRun permission check came out, for the dry-run log lines."""
    if error is None or error.kind is ErrorKind.DRY_RUN_OK:
        return "permitted"
    return f"{error.kind}: {error.code} {error.message}"
