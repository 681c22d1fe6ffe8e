"""What the Stats actor knows: the fleet as folded from the bus, pure and clock-free.

Every message any actor publishes goes through `FleetState.apply`; nothing here does I/O or reads
a clock. Times are the messages' loop times (`at`); `snapshot(now, wall_now)` turns them into
wall-clock epoch seconds for people (the page and `controller status`), given both clocks' "now".
SpotPool's FleetObserved is the authority on which members (slaves or nodes) exist;
SlaveReady/SlaveLost (NodeReady/NodeSetupFailed in cluster mode) arrive in between and say
whether each one answers, so their verdict overrides the pool's `healthy` until the member leaves
the fleet.

A batch cluster (`run --cluster`) is folded too: QueueSampler's QueueSample is the sensor's good
reading there (as LoadSample is the farm's), so a good qstat after a failed one shows the sensor
ok again; the queue and the nodes by state (controller.status.queueview) are kept for people.
`mode` is "cluster" once any cluster message is seen (or from the start, when Stats is told).
"""

from __future__ import annotations

import collections
import math
from dataclasses import dataclass, field, replace

from controller.messages import (
    ActorStateChanged,
    Decision,
    ErrorKind,
    FleetObserved,
    InstanceDown,
    InstanceId,
    InstanceUp,
    LoadSample,
    LostReason,
    NodeReady,
    NodeSetupFailed,
    ProviderErrorSeen,
    QueueSample,
    Role,
    SensorLost,
    SlaveLost,
    SlaveReady,
    SlaveView,
)
from controller.status.queueview import LOAD_SOURCES, QueueView, count_states, node_state

DECISIONS_KEPT = 50
SERIES_STEP_SECONDS = 60.0  # one chart point per minute: the latest values in that minute
SERIES_SPAN_SECONDS = 6 * 3600.0
_SEEN_IDS_KEPT = 4096  # enough to count each instance once over months of churn

_INTERRUPTED = {LostReason.INTERRUPTED, LostReason.INTERRUPTION_WARNING}


@dataclass(frozen=True, slots=True)
class ActorStatus:
    state: str
    restarts: int
    error: str | None
    at: float


@dataclass(frozen=True, slots=True)
class SeriesPoint:
    at: float
    load: float | None
    desired: int | None
    ready: int
    cost: float
    pending: int | None = None  # cluster mode: jobs waiting (None while the sensor is lost)
    running: int | None = None  # cluster mode: jobs running


@dataclass(frozen=True, slots=True)
class Health:
    """The last readiness/liveness verdict on one slave; `at` is loop time."""

    healthy: bool
    state: str
    at: float


@dataclass
class FleetState:
    """The folded model. Mutable, but only `apply` changes it."""

    dry_run: bool = False
    mode: str = "gbrowse"  # or "cluster": a batch cluster's nodes (`run --cluster`)
    load: float | None = None
    load_window: float | None = None
    load_at: float | None = None
    sensor_ok: bool = True
    sensor_since: float | None = None
    sensor_reason: str = ""
    queue: QueueView | None = None  # the latest QueueSample (cluster mode)
    band: tuple[int, int] | None = None
    desired: int | None = None
    members: dict[InstanceId, SlaveView] = field(default_factory=dict)  # slaves or nodes
    health: dict[InstanceId, Health] = field(default_factory=dict)
    pending_requests: int = 0
    cost_per_hour: float = 0.0
    cost_at: float | None = None
    spend_settled: float = 0.0  # dollars up to cost_at
    # The decisions that changed something (a launch, a removal, a new band or target): a
    # steady state repeats "hold" every poll and would push them out within minutes.
    decisions: collections.deque[Decision] = field(
        default_factory=lambda: collections.deque(maxlen=DECISIONS_KEPT)
    )
    last_decision: Decision | None = None
    series: collections.deque[SeriesPoint] = field(default_factory=collections.deque)
    actors: dict[str, ActorStatus] = field(default_factory=dict)
    actor_restarts_total: collections.Counter[str] = field(default_factory=collections.Counter)
    ec2_errors: collections.Counter[str] = field(default_factory=collections.Counter)
    last_error: ProviderErrorSeen | None = None
    launches: int = 0
    terminations: int = 0
    interruptions: int = 0
    started_at: float | None = None
    _up_seen: dict[InstanceId, None] = field(default_factory=dict)
    _down_seen: dict[InstanceId, None] = field(default_factory=dict)
    # nodes EC2 said run (InstanceUp), by loop time: their setup has begun
    _announced: dict[InstanceId, float] = field(default_factory=dict)

    # folding

    def apply(self, msg: object) -> None:
        """Fold one bus message into the model; types it does not know are ignored."""
        at = getattr(msg, "at", None)
        if self.started_at is None and isinstance(at, int | float):
            self.started_at = at
        match msg:
            case LoadSample():
                self._sensor_answers(msg.at)
                self.load, self.load_window, self.load_at = msg.rps, msg.window_rps, msg.at
            case QueueSample():
                self.mode = "cluster"
                self._sensor_answers(msg.at)
                self.queue = QueueView.of(msg)
            case SensorLost():
                if msg.source not in LOAD_SOURCES:
                    self.mode = "cluster"
                self.sensor_ok, self.sensor_since, self.sensor_reason = False, msg.since, msg.reason
            case Decision():
                if msg.launch or msg.remove or (msg.band, msg.desired) != (self.band, self.desired):
                    self.decisions.append(msg)
                self.last_decision = msg
                self.band, self.desired = msg.band, msg.desired
                self.dry_run = self.dry_run or msg.dry_run
                self._sample(msg.at)
            case FleetObserved():
                self._settle_spend(msg.at)
                self.cost_per_hour = msg.cost_per_hour
                self.pending_requests = msg.pending_requests
                self.members = {view.instance_id: view for view in msg.members}
                # A verdict newer than this observation may concern a slave it does not show yet.
                self.health = {
                    i: h for i, h in self.health.items() if i in self.members or h.at > msg.at
                }
                self._announced = {
                    i: at for i, at in self._announced.items() if i in self.members or at > msg.at
                }
            case SlaveReady():
                self.health[msg.instance_id] = Health(True, "ready", msg.at)
            case SlaveLost():
                self.health[msg.instance_id] = Health(False, f"lost ({msg.reason})", msg.at)
            case NodeReady():
                self.mode = "cluster"
                self.health[msg.instance_id] = Health(True, "ready", msg.at)
            case NodeSetupFailed():
                self.mode = "cluster"
                self.health[msg.instance_id] = Health(False, f"setup failed ({msg.step})", msg.at)
            case InstanceUp():
                if _first_time(self._up_seen, msg.instance_id):
                    self.launches += 1
                if msg.role is Role.NODE:
                    self.mode = "cluster"
                    self._announced[msg.instance_id] = msg.at
            case InstanceDown():
                self._announced.pop(msg.instance_id, None)
                if _first_time(self._down_seen, msg.instance_id):
                    if msg.reason in _INTERRUPTED:
                        self.interruptions += 1
                    else:
                        self.terminations += 1
            case ProviderErrorSeen():
                if msg.kind is not ErrorKind.DRY_RUN_OK:
                    self.ec2_errors[str(msg.kind)] += 1
                    self.last_error = msg
            case ActorStateChanged():
                previous = self.actors.get(msg.actor)
                before = previous.restarts if previous else 0
                # The runtime may count restarts per window; the metric must only grow.
                self.actor_restarts_total[msg.actor] += max(0, msg.restarts - before)
                self.actors[msg.actor] = ActorStatus(msg.state, msg.restarts, msg.error, msg.at)

    def _sensor_answers(self, at: float) -> None:
        """A good reading: the sensor is ok again, since now if it was not."""
        if not self.sensor_ok or self.sensor_since is None:
            self.sensor_since = at
        self.sensor_ok, self.sensor_reason = True, ""

    def _settle_spend(self, at: float) -> None:
        """Integrate cost: each observed $/h holds until the next observation."""
        if self.cost_at is not None and at > self.cost_at:
            self.spend_settled += self.cost_per_hour * (at - self.cost_at) / 3600.0
        self.cost_at = at if self.cost_at is None else max(self.cost_at, at)

    def _sample(self, at: float) -> None:
        load = self.load if self.sensor_ok else None  # a gap in the chart, not a stale line
        queue = self.queue if self.sensor_ok else None
        point = SeriesPoint(
            at,
            load,
            self.desired,
            self.ready,
            self.cost_per_hour,
            pending=None if queue is None else queue.pending_jobs,
            running=None if queue is None else queue.running_jobs,
        )
        if self.series and _minute(self.series[-1].at) == _minute(at):
            self.series[-1] = point
        else:
            self.series.append(point)
        while self.series and self.series[0].at < at - SERIES_SPAN_SECONDS:
            self.series.popleft()

    # reading

    def member_views(self) -> list[SlaveView]:
        """The pool's instances with the latest probe verdict applied."""
        views = []
        for instance_id, view in self.members.items():
            verdict = self.health.get(instance_id)
            if verdict is not None:
                keep_state = view.state in ("draining", "terminating", "shutting-down")
                view = replace(
                    view,
                    healthy=verdict.healthy,
                    state=view.state if keep_state else verdict.state,
                )
            elif view.state == "booting" and instance_id in self._announced:
                view = replace(view, state="setting up")
            views.append(view)
        return views

    @property
    def ready(self) -> int:
        """The healthy members as member_views() shows them, counted without building the views
        (systemd's STATUS= line asks every few seconds, and a fleet may have 10,000)."""
        health = self.health
        return sum(
            1
            for iid, view in self.members.items()
            if (view.healthy if (verdict := health.get(iid)) is None else verdict.healthy)
        )

    @property
    def cluster(self) -> bool:
        return self.mode == "cluster"

    def node_counts(self) -> dict[str, int]:
        """Nodes by state (controller.status.queueview.NODE_STATES), without building views."""
        health, announced = self.health, self._announced
        return count_states(
            [
                node_state(
                    view.state,
                    view.healthy if (verdict := health.get(iid)) is None else verdict.healthy,
                    iid in announced,
                )
                for iid, view in self.members.items()
            ]
        )

    def spend(self, now: float) -> float:
        """Dollars spent since the first cost observation, up to `now` (loop time)."""
        if self.cost_at is None or now <= self.cost_at:
            return self.spend_settled
        return self.spend_settled + self.cost_per_hour * (now - self.cost_at) / 3600.0

    def decision_latency(self, decision: Decision) -> float | None:
        """Seconds from the load (or queue) sample a decision read to the decision, if it read
        one."""
        sampled = self.queue.at if self.cluster and self.queue is not None else self.load_at
        if decision.load_rps is None or sampled is None or decision.at < sampled:
            return None
        return decision.at - sampled

    def recent_decisions(self) -> list[Decision]:
        """Newest first: the latest decision (even a hold), then the ones that changed something."""
        notable = list(reversed(self.decisions))
        if self.last_decision is not None and (not notable or notable[0] is not self.last_decision):
            notable.insert(0, self.last_decision)
        return notable

    def summary(self) -> str:
        """One line for systemd's STATUS= and logs."""
        desired = "?" if self.desired is None else str(self.desired)
        sensor = "" if self.sensor_ok else " sensor lost"
        if self.cluster:
            q = self.queue
            queue = "?" if q is None else f"{q.pending_jobs} pending, {q.running_jobs} running"
            return (
                f"jobs {queue}, nodes desired {desired}, ready {self.ready}, "
                f"requests {self.pending_requests}, ${self.cost_per_hour:.3f}/h{sensor}"
            )
        load = "?" if self.load is None else f"{self.load:.2f}"
        return (
            f"load {load} req/s, desired {desired}, ready {self.ready}, "
            f"pending {self.pending_requests}, ${self.cost_per_hour:.3f}/h{sensor}"
        )

    def snapshot(self, now: float, wall_now: float) -> dict:
        """The /status document; `now` is loop time, `wall_now` the epoch at the same instant."""

        def wall(at: float | None) -> float | None:
            return None if at is None else round(at - now + wall_now, 3)

        slaves = []
        for view in self.member_views():
            verdict = self.health.get(view.instance_id)
            since = wall(verdict.at) if verdict is not None else view.since
            slaves.append(
                {
                    "instance_id": view.instance_id,
                    "address": view.address,
                    "state": view.state,
                    "healthy": view.healthy,
                    "since": since,
                    "instance_type": view.instance_type,
                    "zone": view.zone,
                }
            )
        return {
            "now": round(wall_now, 3),
            "mode": self.mode,
            "dry_run": self.dry_run,
            "load": _num(self.load),
            "load_window": _num(self.load_window),
            "table_band": list(self.band) if self.band is not None else None,
            "desired": self.desired,
            "ready": self.ready,
            "slaves": slaves,  # ../shared/SPEC.md's name, nodes included
            "pending_requests": self.pending_requests,
            "cost_per_hour": self.cost_per_hour,
            "spend": self.spend(now),
            "uptime": 0.0 if self.started_at is None else round(now - self.started_at, 3),
            "sensor": {
                "ok": self.sensor_ok,
                "since": wall(self.sensor_since),
                "reason": self.sensor_reason,
            },
            "queue": None if self.queue is None else self.queue.document(wall(self.queue.at)),
            "nodes": self.node_counts() if self.cluster else None,
            "actors": {
                name: {"state": s.state, "restarts": s.restarts, "error": s.error}
                for name, s in sorted(self.actors.items())
            },
            "decisions": [
                {
                    "at": wall(d.at),
                    "load": _num(d.load_rps),
                    "band": list(d.band),
                    "desired": d.desired,
                    "launch": d.launch,
                    "remove": list(d.remove),
                    "reason": d.reason,
                    "dry_run": d.dry_run,
                }
                for d in self.recent_decisions()
            ],
            "series": [
                {
                    "t": wall(p.at),
                    "load": _num(p.load),
                    "desired": p.desired,
                    "ready": p.ready,
                    "cost": round(p.cost, 6),
                    "pending": p.pending,
                    "running": p.running,
                }
                for p in self.series
            ],
            "counters": {
                "launches": self.launches,
                "terminations": self.terminations,
                "interruptions": self.interruptions,
                "ec2_errors": dict(sorted(self.ec2_errors.items())),
            },
            "last_error": None
            if self.last_error is None
            else {
                "at": wall(self.last_error.at),
                "kind": str(self.last_error.kind),
                "code": self.last_error.code,
                "operation": self.last_error.operation,
                "message": self.last_error.message,
            },
        }


def _first_time(seen: dict[InstanceId, None], instance_id: InstanceId) -> bool:
    """True once per id; a bounded, insertion-ordered memory of the ids counted."""
    if instance_id in seen:
        return False
    seen[instance_id] = None
    if len(seen) > _SEEN_IDS_KEPT:
        del seen[next(iter(seen))]
    return True


def _minute(at: float) -> int:
    return math.floor(at / SERIES_STEP_SECONDS)


def _num(value: float | None) -> float | None:
    return None if value is None else round(value, 4)
