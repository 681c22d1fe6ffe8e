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
a decision; the plan launches (controller.policy.launch_plans), drains and terminates
(controller.policy.retire_plans) accordingly. Nothing is remembered that the tags cannot rebuild:
a restarted process adopts the fleet on its first describe. Each instance moves through the
phases of controller.policy.lifecycle, whose table is the one list of transitions. A lost sensor
or a failed describe holds the fleet.

EC2's reads lag its writes: an instance launched moments ago may be missing from the describe.
Such an instance is kept (it counts, it is not announced down, nothing replaces it) until a
describe shows it or VISIBILITY_SECONDS pass.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from controller.cloud.port import (
    SPOT_INTERRUPTION_REASON,
    VISIBILITY_SECONDS,
    CloudInstance,
    FleetView,
    InstanceState,
    ProviderError,
    ended_on_our_side,
    error_seen,
)
from controller.config.schema import ClusterSection, Config
from controller.messages import (
    Decision,
    InstanceDown,
    InstanceId,
    InterruptionWarning,
    LostReason,
    SecurityGroupReady,
    SensorLost,
)
from controller.policy.band import Policy
from controller.policy.factory import make_policy
from controller.policy.fleet_plans import (
    ALIVE_STATES,
    TERMINATE_RESEND_SECONDS,
    DescribeFleet,
    Note,
    Plan,
    Publish,
    Tracked,
)
from controller.policy.fleet_views import FleetViews
from controller.policy.launch_plans import LaunchPlans
from controller.policy.lifecycle import Phase, check_transition
from controller.policy.pool_profile import NodeProfile, PoolProfile, SlaveProfile
from controller.policy.queue_policy import QueuePolicy
from controller.policy.refresh_plans import RefreshPlans
from controller.policy.release_plans import RELEASE_NEWS, ReleasePlans
from controller.policy.retire_plans import UNLISTING_NEWS, RetirePlans


class FleetReconciler(FleetViews, LaunchPlans, RetirePlans, RefreshPlans, ReleasePlans):
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
        confirm_release: bool = False,
    ) -> None:
        self.profile: PoolProfile = profile
        self.now = clock
        self.outbox: list[Publish | Note] = []
        self.config = config
        self.policy = policy
        self.dry_run = dry_run
        self.confirm_release = confirm_release  # a node's scale-in waits for NodeReleased
        self.wall_clock = wall_clock
        self.fleet = config.controller.fleet
        self.role = self.profile.role
        self.launch = self.profile.launch_settings()  # types, image, zone, bid, user data
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
        self.adopted_at: float | None = None  # when adopt() read the fleet
        self.view_failed = False  # the last describe failed: every cycle holds until one works
        self.hinted = 0  # the most slaves a sample has already called a cycle for (burst_seen)
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
            *(UNLISTING_NEWS if self.profile.drain_after_unlisting else ()),
            *(RELEASE_NEWS if self.confirm_release else ()),
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
        self.relaunch_with(self.profile.launch_settings())
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
        self.relaunch_with(self.profile.launch_settings())
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
        self.adopted_at = self.now()
        self.note("info", "fleet.adopted", instances=len(self.tracked))

    def handle(self, msg: Any) -> None:
        """Fold one message from the other actors in (sets `urgent` when it calls for a cycle
        now)."""
        profile = self.profile
        if isinstance(msg, profile.sample_types):  # every reading: the cheapest path
            self.sample = msg
            self.burst_seen(msg)
            return
        if isinstance(msg, profile.ready_type):
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
        elif isinstance(msg, RELEASE_NEWS):  # a node's scale-in: released or kept
            self._release_news(msg)
        elif isinstance(msg, UNLISTING_NEWS):  # renderfarm.conf rewritten, or failing to be
            self._renderfarm_news(msg)
        match msg:
            case SensorLost(source=source) if profile.sensor_source in (None, source):
                self.sample = None
            case SecurityGroupReady(group_id=group_id):
                self.group_id = group_id
            case InterruptionWarning(instance_id=iid, kind=kind):
                t = self.tracked.get(iid)
                if t is not None and t.phase in (Phase.BOOTING, Phase.READY):
                    t.interrupted = True
                    self.changed()
                    self.note(
                        "warning", f"{self.role}.interruption_warning", instance_id=iid, kind=kind
                    )
                    if kind == "interruption":
                        self._drain(t, LostReason.INTERRUPTION_WARNING, delay=None)
                    self.urgent = True

    def cycle_due(self, next_poll: float) -> tuple[bool, bool]:
        """(a cycle now, with a describe): the poll when it is due; an urgent cycle at once,
        as the poll itself when that is due within a reading (one cycle, not two)."""
        now = self.now()
        if now >= next_poll:
            return True, True
        if not self.urgent:
            return False, False
        return True, next_poll - now < self.config.master.reading_interval

    def next_poll(self, due: float) -> float:
        """After the poll that was due at `due`: the next one a poll later (the polls keep their
        cadence whether one ran a little early or its calls took a while), never in the past."""
        return max(due + self.config.master.poll_interval, self.now())

    def reconcile(self, describe: bool = True) -> Plan:
        """Observe the whole fleet, ask the policy, act; every branch logs its reason.

        A cycle between polls (urgent: a burst, a lost slave, a spot warning) acts on the fleet
        as the last describe and its own launches left it: EC2 is described once per poll."""
        if describe and self.adopted_at == self.now():
            describe = False  # the adoption has just read the whole fleet
        if describe:
            # Spot requests only while some are open (launches by RunInstances leave none); the
            # adoption at start reads them all.
            view = yield _DESCRIBE_WITH_REQUESTS if self.pending_requests > 0 else _DESCRIBE
            self.view_failed = view.error is not None
            if view.error is not None:
                self._provider_error(view.error)
                self.note("warning", "fleet.describe_failed", hold=True, reason=view.error.message)
                return
            self._observe(view)
            if view.requests:
                yield from self._expire_requests(view)
        elif self.view_failed:
            return  # the last describe failed: hold until one succeeds
        yield from self.terminate_due()
        yield from self._refresh_prices()

        now, profile, sample = self.now(), self.profile, self.sample
        decision = self.policy.decide(
            profile.policy_input(  # type: ignore[arg-type]  # each profile feeds its policy
                now=now,
                sample=sample,
                members=self.marked(self.members()),  # old slaves: one being replaced
                pending_requests=self.pending_requests,
                cost_per_hour=self._cost_per_hour(),
                price_per_instance=self._price_for_next_launch(),
            )
        )
        decision = self.refreshed(decision)  # old slaves first, one retired at a time
        load_rps, remove = profile.load_of(sample)[0], decision.remove
        self.publish(
            Decision(
                at=now,
                load_rps=load_rps,
                band=decision.band,
                desired=decision.desired,
                launch=decision.launch,
                remove=tuple(map(InstanceId, remove)) if remove else (),
                reason=decision.reason,
                dry_run=self.dry_run,
            )
        )
        self.note(
            "info",
            "decision",
            load_rps=load_rps,
            band=decision.band,
            desired=decision.desired,
            launch=decision.launch,
            remove=remove,
            reason=decision.reason,
        )
        for iid in remove:
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
        tracked, role = self.tracked, self.role
        for inst in view.instances:
            if inst.role is not role:
                continue
            seen.add(inst.instance_id)
            t = tracked.get(inst.instance_id)
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
                self.announce(t, inst.private_ip)
        vanished = [] if tracked.keys() <= seen else [i for i in tracked if i not in seen]
        for iid in vanished:
            t = self.tracked[iid]
            if not t.confirmed and not self._visibility_passed(t):
                continue  # launched moments ago: EC2's reads have not caught up yet
            self._gone(t, None)
        if view.requests_read:
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
            spec=inst.spec,
        )
        self.tracked[inst.instance_id] = t
        self.changed()
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
        self.changed()
        self.note("info", "instance.gone", instance_id=t.instance_id, reason=str(reason))
        self.publish(
            InstanceDown(at=self.now(), instance_id=t.instance_id, address=t.address, reason=reason)
        )

    # actions

    def _move(self, t: Tracked, phase: Phase) -> None:
        if t.phase is not phase:
            t.phase = check_transition(t.phase, phase)
            t.since_wall = self.wall_clock()
            self.changed()

    def _provider_error(self, error: ProviderError, hint: str | None = None) -> None:
        """Log and publish a refused call; `hint`: the setting to fix, when it is the config's
        (logged as an error then: no retry will help until someone changes it)."""
        self.last_error = error
        self.note(
            "error" if hint else "warning",
            "ec2.error",
            kind=str(error.kind),
            code=error.code,
            operation=error.operation,
            message=error.message,
            **({"hint": hint} if hint else {}),
        )
        self.publish(error_seen(error, self.now()))


_DESCRIBE = DescribeFleet(with_requests=False)  # calls are values: one of each serves every cycle
_DESCRIBE_WITH_REQUESTS = DescribeFleet(with_requests=True)


def _queue_keys(config: Config, cluster: ClusterSection) -> tuple[object, ...]:
    """What QueuePolicy.for_cluster reads."""
    return (
        cluster.min_nodes,
        cluster.max_nodes,
        cluster.node_slots,
        cluster.idle_seconds,
        config.scaling.max_cost_per_hour,
    )
