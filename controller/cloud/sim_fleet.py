"""SimFleet: EC2's instances, spot requests, reclaims and billing in memory, on a clock it is given.

It behaves like EC2 for the controller's purposes: a launch gets instances that boot for
`boot_seconds` (plus or minus `boot_spread`), some launches are refused for capacity, some spot
requests never fill, spot instances are reclaimed at random with the two-minute notice EC2 gives,
and every instance is billed per second (one minute at least) from launch until it ends.

Two users drive it. `controller run --dry-run` without AWS calls the async port methods of
SimCloud (controller.cloud.simcloud, which adds them and security groups) with loop time as the
clock. `simulate` steps virtual time itself and calls the synchronous core
(`launch_now`, `terminate_now`, `booted`, `notices`, `cost`): per-call asyncio overhead would make
a month of polls slow, and the decisions come from the same policy objects either way.

Every random draw comes from one seeded generator, so a run is reproducible. Addresses are
loopback (127.64.0.0/16): nothing probing a simulated slave can reach another machine.

Tests script faults exactly with three knobs: `capacity_errors_for` (instance types always refused
for capacity, e.g. to see the next type tried), `describe_fails` (DescribeInstances fails, to see
the fleet hold) and `reclaim_at()` (spot reclaims one instance at a given time).
"""

from __future__ import annotations

import collections
import math
import random
from collections.abc import Callable, Collection, Sequence
from typing import Self

from controller.cloud.port import (
    SPOT_INTERRUPTION_REASON,
    CloudInstance,
    FleetView,
    InstanceState,
    LaunchResult,
    LaunchSpec,
    OpResult,
    SpotRequest,
)
from controller.cloud.sim_records import (
    KEEP_ENDED_SECONDS,
    MIN_BILLED_SECONDS,
    NOTICE_SECONDS,
    InterruptionNotice,
    SimCounters,
    SimInstance,
    SimRequest,
    sim_error,
)
from controller.config.schema import Config
from controller.messages import ErrorKind, InstanceId, RequestId


class SimFleet:
    """An in-memory EC2 fleet on an injected clock (loop time or the simulator's virtual time)."""

    def __init__(
        self,
        *,
        clock: Callable[[], float],
        boot_seconds: float = 90.0,
        boot_spread: float = 0.2,
        spot_price: float = 0.035,
        unfilled_rate: float = 0.0,
        capacity_error_rate: float = 0.0,
        interruption_rate_per_hour: float = 0.0,
        seed: int = 1,
        zones: Sequence[str] = ("sim-1a", "sim-1b"),
        wall_offset: float = 0.0,
        capacity_errors_for: Collection[str] = (),
        describe_fails: bool = False,
        visibility_lag: float = 0.0,
        launch_limit: int | None = None,
    ):
        self.clock = clock
        self.boot_seconds = boot_seconds
        self.boot_spread = boot_spread
        self.price = spot_price
        self.unfilled_rate = unfilled_rate
        self.capacity_error_rate = capacity_error_rate
        self.interruption_rate_per_hour = interruption_rate_per_hour
        self.zones = tuple(zones)
        self.wall_offset = wall_offset  # added to clock() for EC2's epoch LaunchTime fields
        # Scripted faults (tests may change them at any time): these instance types are always
        # refused for capacity, and while describe_fails is set every describe_fleet fails.
        self.capacity_errors_for: set[str] = set(capacity_errors_for)
        self.describe_fails = describe_fails
        # EC2's eventual consistency: for this long after its launch an instance is missing
        # from describe_fleet and TerminateInstances does not know it (it goes on running).
        self.visibility_lag = visibility_lag
        # At most this many per launch (EC2 fills MinCount 1..MaxCount; moto MinCount); None: all
        self.launch_limit = launch_limit
        # Scripted: every RunInstances refused with this (kind, code): a bad image, no permission
        self.launch_refusal: tuple[ErrorKind, str] | None = None
        # Scripted: TerminateInstances answers NotFound for these running ids (a lagging replica)
        self.terminate_not_found: set[str] = set()
        self.counters = SimCounters()
        self._rng = random.Random(seed)
        self._seq = 0
        self._instances: dict[str, SimInstance] = {}
        self._live: dict[str, SimInstance] = {}
        # ended instances in the order they ended, kept while EC2 would still list them
        self._ended: collections.deque[SimInstance] = collections.deque()
        self._views: dict[str, CloudInstance] = {}
        self._interruptible: dict[str, SimInstance] = {}
        self._requests: dict[str, SimRequest] = {}
        self._open: dict[str, SimRequest] = {}  # requests not filled (unfilled_rate)
        self._tokens: dict[str, LaunchResult] = {}
        self._closed_seconds = 0.0
        self._live_launch_sum = 0.0
        self.ends = 0  # instances ended so far: what is booted changes only with it and time
        # the last fleet_view: (what it depends on, valid from, valid until, the view)
        self._last_view: tuple[tuple[object, ...], float, float, FleetView] | None = None

    @classmethod
    def from_config(
        cls,
        config: Config,
        *,
        clock: Callable[[], float],
        seed: int = 1,
        wall_offset: float = 0.0,
    ) -> Self:
        """The cloud `[simulate]` describes; `wall_offset` turns clock() into epoch seconds."""
        sim = config.simulate
        return cls(
            clock=clock,
            boot_seconds=config.scaling.boot_seconds,
            boot_spread=sim.boot_spread,
            spot_price=sim.spot_price,
            unfilled_rate=sim.unfilled_rate,
            capacity_error_rate=sim.capacity_error_rate,
            interruption_rate_per_hour=sim.interruption_rate_per_hour,
            seed=seed,
            wall_offset=wall_offset,
        )

    # the synchronous core

    def _next_id(self, prefix: str) -> str:
        self._seq += 1
        return f"{prefix}-sim{self._seq:08x}"

    def advance(self) -> None:
        """Let spot reclaim the instances whose interruption time has come."""
        now = self.clock()
        if not self._interruptible:
            return
        due = [
            i
            for i in self._interruptible.values()
            if i.interrupt_at is not None and i.interrupt_at <= now
        ]
        for inst in due:
            del self._interruptible[inst.instance_id]
            if inst.ended_at is None:
                assert inst.interrupt_at is not None
                self._end(inst, inst.interrupt_at, SPOT_INTERRUPTION_REASON)
                self.counters.interrupted += 1

    def launch_now(self, spec: LaunchSpec) -> LaunchResult:
        """Launch `spec.count` spot instances now (some may stay unfilled requests)."""
        self.advance()
        now = self.clock()
        if spec.client_token and spec.client_token in self._tokens:
            return self._tokens[spec.client_token]
        if spec.dry_run:
            return LaunchResult(
                error=sim_error(ErrorKind.DRY_RUN_OK, "DryRunOperation", "RunInstances")
            )
        if spec.count <= 0:
            return LaunchResult()
        if spec.max_price is not None and spec.max_price < self.price:
            err = sim_error(
                ErrorKind.PRICE,
                "SpotMaxPriceTooLow",
                "RunInstances",
                f"max price {spec.max_price} is below the spot price {self.price}",
                spec,
            )
            return LaunchResult(error=err)
        if self.launch_refusal is not None:
            kind, code = self.launch_refusal
            msg = f"{code} for {spec.instance_type} (simulated)"
            return LaunchResult(error=sim_error(kind, code, "RunInstances", msg, spec))
        refused = spec.instance_type in self.capacity_errors_for
        if refused or (self.capacity_error_rate and self._rng.random() < self.capacity_error_rate):
            self.counters.capacity_errors += 1
            err = sim_error(
                ErrorKind.CAPACITY,
                "InsufficientInstanceCapacity",
                "RunInstances",
                f"no spot capacity for {spec.instance_type} (simulated)",
                spec,
            )
            return LaunchResult(error=err)
        made: list[CloudInstance] = []
        for _ in range(min(spec.count, self.launch_limit or spec.count)):
            zone = spec.zone or self._rng.choice(self.zones)
            req = SimRequest(
                request_id=self._next_id("sir"),
                fleet=spec.fleet,
                created_at=now,
                instance_type=spec.instance_type,
                zone=zone,
            )
            self._requests[req.request_id] = req
            if self.unfilled_rate and self._rng.random() < self.unfilled_rate:
                self.counters.unfilled += 1
                self._open[req.request_id] = req
                continue
            inst = self._start(spec, req, now)
            made.append(self._view(inst))
        result = LaunchResult(instances=tuple(made))
        if spec.client_token:
            self._tokens[spec.client_token] = result
        return result

    def _start(self, spec: LaunchSpec, req: SimRequest, now: float) -> SimInstance:
        spread = self._rng.uniform(-self.boot_spread, self.boot_spread)
        boot = max(0.0, self.boot_seconds * (1.0 + spread))
        interrupt_at = None
        if self.interruption_rate_per_hour > 0:
            interrupt_at = now + self._rng.expovariate(self.interruption_rate_per_hour / 3600.0)
        n = self._seq
        inst = SimInstance(
            instance_id=self._next_id("i"),
            fleet=spec.fleet,
            role=spec.role,
            instance_type=spec.instance_type,
            zone=req.zone,
            private_ip=f"127.64.{(n // 250) % 250}.{n % 250 + 1}",
            launched_at=now,
            ready_at=now + boot,
            interrupt_at=interrupt_at,
            request_id=req.request_id,
            security_groups=spec.security_group_ids,
        )
        req.state, req.status_code, req.instance_id = "active", "fulfilled", inst.instance_id
        self._instances[inst.instance_id] = inst
        self._live[inst.instance_id] = inst
        self._live_launch_sum += now
        if interrupt_at is not None:
            self._interruptible[inst.instance_id] = inst
        self.counters.launched += 1
        return inst

    def _end(self, inst: SimInstance, at: float, reason: str) -> None:
        self.ends += 1
        inst.ended_at = at
        inst.state_reason = reason
        del self._live[inst.instance_id]
        self._ended.append(inst)
        self._live_launch_sum -= inst.launched_at
        self._closed_seconds += max(at - inst.launched_at, MIN_BILLED_SECONDS)
        req = self._requests.get(inst.request_id)
        if req is not None and req.state == "active":
            req.state, req.status_code = "closed", "instance-terminated-by-user"

    def terminate_now(self, ids: Sequence[str]) -> OpResult:
        """Terminate the ids EC2 knows; the others come back in `not_found` (as Ec2Cloud
        reports EC2's InvalidInstanceID.NotFound, id by id)."""
        self.advance()
        now = self.clock()
        known = [
            i
            for i in ids
            if i in self._instances
            and self._visible(self._instances[i])
            and i not in self.terminate_not_found
        ]
        unknown = tuple(i for i in ids if i not in known)
        for iid in known:
            inst = self._instances[iid]
            if inst.ended_at is None:
                self._end(inst, now, "Client.UserInitiatedShutdown")
                self._interruptible.pop(iid, None)
                self.counters.terminated += 1
        return OpResult(not_found=unknown)

    def _visible(self, inst: SimInstance) -> bool:
        """Past EC2's lag after its launch (see `visibility_lag`)."""
        return self.clock() >= inst.launched_at + self.visibility_lag

    def end_now(self, instance_id: str, reason: str) -> None:
        """EC2 ends this live instance by itself, with state reason `reason` (e.g. a launch
        failing on a KMS key it may not use: Client.InternalError)."""
        inst = self._live[instance_id]
        self._interruptible.pop(instance_id, None)
        self._end(inst, self.clock(), reason)

    def cancel_now(self, ids: Sequence[str]) -> OpResult:
        for rid in ids:
            req = self._open.pop(rid, None)
            if req is not None:
                req.state, req.status_code = "cancelled", "canceled-before-fulfillment"
                self.counters.cancelled += 1
        return OpResult()

    def booted(self, instance_id: str) -> bool:
        """Would the readiness probe pass now (boot complete and not ended)?"""
        inst = self._instances.get(instance_id)
        now = self.clock()
        return inst is not None and inst.ended_at is None and inst.ready_at <= now

    def reclaim_at(self, instance_id: str, at: float) -> None:
        """Make spot reclaim this live instance at `at` (its notice comes NOTICE_SECONDS before)."""
        inst = self._live[instance_id]
        inst.interrupt_at = at
        self._interruptible[instance_id] = inst

    def instance(self, instance_id: str) -> SimInstance | None:
        return self._instances.get(instance_id)

    def instances(self, fleet: str) -> list[SimInstance]:
        """Every instance of the fleet ever launched, ended ones too, in launch order."""
        return [i for i in self._instances.values() if i.fleet == fleet]

    def live(self) -> list[SimInstance]:
        self.advance()
        return list(self._live.values())

    def open_requests(self) -> list[SimRequest]:
        """Spot requests still open: they never fill here, until cancelled."""
        return list(self._open.values())

    def notices(self) -> tuple[InterruptionNotice, ...]:
        """Interruption warnings in force now (what EventBridge would have delivered)."""
        self.advance()
        now = self.clock()
        return tuple(
            InterruptionNotice(
                instance_id=InstanceId(inst.instance_id),
                notice_at=inst.interrupt_at - NOTICE_SECONDS,
                action_at=inst.interrupt_at,
            )
            for inst in self._interruptible.values()
            if inst.interrupt_at is not None  # always, for what is in _interruptible
            and inst.ended_at is None
            and inst.interrupt_at - NOTICE_SECONDS <= now
        )

    def billed_count(self) -> int:
        self.advance()
        return len(self._live)

    def billed_seconds(self) -> float:
        """Instance-seconds billed so far (live instances up to now)."""
        self.advance()
        now = self.clock()
        live = len(self._live) * now - self._live_launch_sum
        return self._closed_seconds + live

    def cost(self) -> float:
        """Dollars billed so far."""
        return self.billed_seconds() * self.price / 3600.0

    def cost_per_hour(self) -> float:
        return self.billed_count() * self.price

    # views

    def _view(self, inst: SimInstance) -> CloudInstance:
        now = self.clock()
        if inst.ended_at is not None:
            state = InstanceState.TERMINATED
        elif inst.ready_at <= now:
            state = InstanceState.RUNNING
        else:
            state = InstanceState.PENDING
        cached = self._views.get(inst.instance_id)
        if cached is not None and cached.state is state:
            return cached  # an instance's view changes only with its state
        view = self._views[inst.instance_id] = CloudInstance(
            instance_id=InstanceId(inst.instance_id),
            state=state,
            private_ip=inst.private_ip,
            instance_type=inst.instance_type,
            zone=inst.zone,
            launched_at=inst.launched_at + self.wall_offset,
            role=inst.role,
            spot=True,
            spot_request_id=RequestId(inst.request_id),
            state_reason=inst.state_reason,
        )
        return view

    def _current_requests(self) -> list[SimRequest]:
        """Open requests, and the active ones of live instances (what describe lists)."""
        active = (self._requests.get(i.request_id) for i in self._live.values())
        return [*self._open.values(), *(r for r in active if r is not None and r.state == "active")]

    def fleet_view(self, fleet: str, *, with_requests: bool = True) -> FleetView:
        """What DescribeInstances (and, `with_requests`, DescribeSpotInstanceRequests) list.

        A month replayed describes the fleet at every poll, and mostly nothing has changed: the
        last view is given again while no instance or request was made, ended or cancelled and
        no instance has reached its boot, its visibility or the end of its listing since."""
        self.advance()
        now = self.clock()
        depends = (
            fleet,
            with_requests,
            self._seq,
            self.ends,
            self.counters.cancelled,
            self.visibility_lag,
            self.wall_offset,
        )
        last = self._last_view
        if last is not None and last[0] == depends and last[1] <= now < last[2]:
            return last[3]
        ended = self._ended
        while ended and now - (ended[0].ended_at or now) >= KEEP_ENDED_SECONDS:
            ended.popleft()
        # live and recently ended only (not every instance ever), in launch order as EC2 lists
        shown = sorted(
            (i for i in (*self._live.values(), *ended) if i.fleet == fleet and self._visible(i)),
            key=lambda i: i.instance_id,  # i-sim<seq, zero-padded>
        )
        instances = tuple(self._view(i) for i in shown)
        requests = tuple(
            SpotRequest(
                request_id=RequestId(r.request_id),
                state=r.state,
                status_code=r.status_code,
                instance_id=InstanceId(r.instance_id) if r.instance_id else None,
                created_at=r.created_at + self.wall_offset,
                instance_type=r.instance_type,
                zone=r.zone,
            )
            for r in (self._current_requests() if with_requests else ())
            if r.fleet == fleet
        )
        view = FleetView(instances=instances, requests=requests, requests_read=with_requests)
        self._last_view = (depends, now, self._view_changes_after(now), view)
        return view

    def _view_changes_after(self, now: float) -> float:
        """The first time after `now` at which a view would differ by time alone: an instance
        boots (pending -> running) or becomes visible, or an ended one drops off the list."""
        times = [
            t
            for i in (*self._live.values(), *self._ended)
            for t in (i.ready_at, i.launched_at + self.visibility_lag)
            if t > now
        ]
        if self._ended:
            times.append((self._ended[0].ended_at or now) + KEEP_ENDED_SECONDS)
        return min(times, default=math.inf)
