"""The daemon's controller, executed on SimCloud in virtual time.

`controller simulate` runs the very fleet reconciler SpotPool runs
(controller.policy.reconciler): the same plans, the same launches with type fallback and
cooldowns, drains that wait for renderfarm.conf, terminations, cancelled requests. This module
is only the executor: it makes the cloud calls the plans yield on SimCloud's synchronous core,
and stands in for the other actors with the rules they follow in the daemon:

- LoadSampler: a reading every poll_interval from the start, and where the trace's rate changes
  (`rate_changed`) one `sample_interval` after the change (the daemon reads every
  `sample_interval`; the ones modelled are those at which a burst is first seen and the ones the
  polls decide on). Each
  reading is the rate over the last poll, raised to what its last `sample_interval` surely shows
  (controller.gbrowse.apache_status.surely_at_least of the requests it expects there), and the
  rate over `window_seconds`; every reading may call a cycle (a burst), the pool decides on
  the newest;
- SlaveHealth: a slave announced up (InstanceUp, at launch) is probed every `sample_interval`
  from then on and passes at the first probe after its boot: SlaveReady then (after the cycle when
  it has booted already, as the actor's answer arrives);
- RenderfarmWriter: every DrainSlave is a rewrite that no longer lists the slave (RenderfarmWritten,
  after the cycle), so its drain delay runs from there (the daemon's writer writes removals at
  once); a ready slave serves from its SlaveReady (the daemon's writer lists it at once, or
  within `settle_seconds` of the previous rewrite when several come close together);
- InterruptionWatcher: each spot interruption warning arrives at its notice time and wakes the
  pool at once, as the warning does in the daemon;
- FirewallKeeper: the group is ready from the start.

The loop is SpotPool.run's: a cycle every poll_interval, at once (without a describe) when a
message is urgent, and terminations exactly when a drain ends.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from controller.cloud.sim_records import NOTICE_SECONDS
from controller.cloud.simcloud import SimCloud
from controller.config.schema import Config
from controller.gbrowse.apache_status import surely_at_least
from controller.messages import (
    Decision,
    DrainSlave,
    InstanceId,
    InstanceUp,
    InterruptionWarning,
    LoadSample,
    RenderfarmWritten,
    SecurityGroupReady,
    SlaveReady,
)
from controller.policy.fleet_plans import (
    CancelCall,
    CloudCall,
    DescribeFleet,
    LaunchCall,
    Plan,
    PriceCall,
    Publish,
    TerminateCall,
)
from controller.policy.lifecycle import Phase
from controller.policy.pool_profile import SlaveProfile
from controller.policy.reconciler import FleetReconciler

SIM_GROUP = "sg-simulated"


@dataclass(frozen=True, slots=True, kw_only=True)
class FleetRecord:
    """What a controller did to a simulated fleet: enough to tell two controllers apart."""

    decisions: tuple[
        tuple[float, int, int, tuple[str, ...], str], ...
    ]  # at, desired, launch, remove, reason
    unlisted: tuple[tuple[float, str, str], ...]  # DrainSlave: at, instance, reason
    # every instance launched: id, type, zone, launched at, ended at, EC2's state reason
    instances: tuple[tuple[str, str, str, float, float | None, str | None], ...]
    capacity_errors: int
    unfilled: int
    cancelled: int


def record_of(
    cloud: SimCloud, fleet: str, decisions: Sequence[Decision], drains: Sequence[DrainSlave]
) -> FleetRecord:
    """The record of a run from its SimCloud and the Decisions and DrainSlaves it published."""
    return FleetRecord(
        decisions=tuple((d.at, d.desired, d.launch, tuple(d.remove), d.reason) for d in decisions),
        unlisted=tuple((d.at, d.instance_id, str(d.reason)) for d in drains),
        instances=tuple(
            sorted(
                (i.instance_id, i.instance_type, i.zone, i.launched_at, i.ended_at, i.state_reason)
                for i in cloud.instances(fleet)
            )
        ),
        capacity_errors=cloud.counters.capacity_errors,
        unfilled=cloud.counters.unfilled,
        cancelled=cloud.counters.cancelled,
    )


def trace_reading(rate: Callable[[float, float], float], config: Config, t: float) -> LoadSample:
    """What LoadSampler would publish at `t` of a trace delivering `rate(a, b)` (module
    docstring)."""
    master = config.master
    return _reading(rate, master.poll_interval, master.window_seconds, master.reading_interval, t)


def _reading(
    rate: Callable[[float, float], float], poll: float, window: float, every: float, t: float
) -> LoadSample:
    last = surely_at_least(rate(t - every, t) * every, every)
    return LoadSample(at=t, rps=max(rate(t - poll, t), last), window_rps=rate(t - window, t))


def sim_call(cloud: SimCloud, fleet: str, call: CloudCall) -> Any:
    """Make one cloud call a plan yielded on SimCloud's synchronous core; its result."""
    match call:
        case DescribeFleet(with_requests=with_requests):
            return cloud.fleet_view(fleet, with_requests=with_requests)
        case LaunchCall(spec=spec):
            return cloud.launch_now(spec)
        case TerminateCall(ids=ids):
            return cloud.terminate_now(ids)
        case CancelCall(ids=ids):
            return cloud.cancel_now(ids)
        case PriceCall():
            return cloud.price
    raise TypeError(f"not a cloud call: {call!r}")


class FleetExecutor:
    """One fleet: the reconciler, SimCloud, and the other actors' stand-ins (module docstring).

    `rate(a, b)` is the load the sensor would measure between virtual times a and b; `on_change`
    is called (with the time) just before anything that can change the serving set.
    """

    def __init__(
        self,
        *,
        config: Config,
        policy: Any,
        cloud: SimCloud,
        clock: Callable[[], float],
        set_clock: Callable[[float], None],
        rate: Callable[[float, float], float],
        on_change: Callable[[float], None] = lambda t: None,
    ) -> None:
        self.config = config
        self.cloud = cloud
        self.now = clock
        self._set_clock = set_clock
        self.rate = rate
        self.on_change = on_change
        self.pool = FleetReconciler(
            config=config,
            policy=policy,
            profile=SlaveProfile(config),
            clock=clock,
            wall_clock=lambda: clock() + cloud.wall_offset,
        )
        self.ports = config.slave.ports
        self.poll_interval = config.master.poll_interval
        self.reading_interval = config.master.reading_interval
        self.window_seconds = config.master.window_seconds
        self.next_cycle = clock()
        self.next_sample = clock()
        self.readings: deque[float] = deque()  # extra readings after rate changes, in order
        self.probes: list[tuple[float, int, str, str]] = []  # (passes at, seq, id, address)
        self.answers: list[Any] = []  # the other actors' answers, handled after the plan
        self.notices: list[tuple[float, str]] = []  # (notice time, instance id), a heap
        self._noticed: set[str] = set()
        self._scanned = -1  # pool.changes at the last scan for notices
        self._serving = (-1, -1, 0)  # (pool.changes, cloud.ends, serving()) when last counted
        self.warned: set[str] = set()  # instances that got a spot interruption warning
        self.desired = 0
        self.decisions: list[Decision] = []
        self.drains: list[DrainSlave] = []
        self.polls = 0
        self.pool.handle(SecurityGroupReady(at=clock(), group_id=SIM_GROUP, created=True))
        self._execute(self.pool.adopt())  # SpotPool.setup

    # what is serving

    def serving(self) -> int:
        """Slaves listed in renderfarm.conf and alive: the supply the elasticity metrics count.

        Counted again only when the pool's fleet changed (what is listed: pool.changes) or an
        instance has ended (what is alive): a listed slave has booted, and stays booted until
        it ends."""
        changes, ends = self.pool.changes, self.cloud.ends
        cached = self._serving
        if cached[0] != changes or cached[1] != ends:
            booted = self.cloud.booted
            count = sum(1 for t in self._listed() if booted(t.instance_id))
            self._serving = cached = (changes, ends, count)
        return cached[2]

    def _listed(self) -> Iterator[Any]:
        return (t for t in self.pool.tracked.values() if t.phase is Phase.READY)

    # the loop

    def run_until(self, until: float) -> None:
        """Execute everything due before `until` (exclusive), then stand at `until`."""
        pool, readings, probes = self.pool, self.readings, self.probes
        while True:
            # pool.next_drain_due() is cheap while nothing drains (the usual case)
            wake = min(self.next_cycle, self.next_sample, pool.next_drain_due())
            if self.notices or self._scanned != pool.changes:
                wake = min(wake, self._next_notice())
            if readings and readings[0] < wake:
                wake = readings[0]
            if probes and probes[0][0] < wake:
                wake = probes[0][0]
            if wake >= until:
                break
            now = self.now()
            self._set_clock(wake if wake > now else now)
            self._sample()
            if self.notices:
                self._deliver_notices()
            if probes:
                self._deliver_probes()
            cycle, polled = pool.cycle_due(self.next_cycle)
            if cycle:
                pool.urgent = False
                self._cycle(describe=polled)
                if polled:
                    self.next_cycle = pool.next_poll(self.next_cycle)
            elif pool.next_drain_due() <= self.now():
                self.on_change(self.now())
                self._execute(pool.terminate_due())
        self._set_clock(until)

    def rate_changed(self, at: float) -> None:
        """The trace's rate changes at `at`: the readings that see it (module docstring)."""
        t = at + self.reading_interval
        if not self.readings or t > self.readings[-1]:
            self.readings.append(t)

    def _sample(self) -> None:
        now, readings, pool = self.now(), self.readings, self.pool
        while True:
            t = self.next_sample
            if readings and readings[0] < t:
                t = readings[0]
            if t > now:
                return
            if t == self.next_sample:
                self.next_sample = t + self.poll_interval
            if readings and readings[0] == t:
                readings.popleft()
            # trace_reading's (written out: the most frequent step of a replay)
            pool.handle(
                _reading(
                    self.rate, self.poll_interval, self.window_seconds, self.reading_interval, t
                )
            )
            if pool.outbox:
                self._deliver()

    def _deliver_probes(self) -> None:
        now = self.now()
        while self.probes and self.probes[0][0] <= now:
            _, _, iid, address = heapq.heappop(self.probes)
            if self.cloud.booted(iid):
                self.on_change(now)
                self.pool.handle(SlaveReady(at=now, instance_id=InstanceId(iid), address=address))
                self._deliver()

    def _cycle(self, describe: bool = True) -> None:
        self.polls += describe
        self.on_change(self.now())
        self._execute(self.pool.reconcile(describe))

    def _next_notice(self) -> float:
        self._schedule_notices()
        return self.notices[0][0] if self.notices else math.inf

    def _schedule_notices(self) -> None:
        """Queue the interruption notice of each tracked instance spot will reclaim (drawn at
        launch). The scan runs only when the pool's fleet changed since the last
        (pool.changes): an instance joining the tracked set is such a change."""
        if self._scanned == self.pool.changes:
            return
        self._scanned = self.pool.changes
        for t in self.pool.tracked.values():
            iid = t.instance_id
            if iid in self._noticed:
                continue
            inst = self.cloud.instance(iid)
            if inst is not None and inst.interrupt_at is not None:
                self._noticed.add(iid)
                at = max(inst.launched_at, inst.interrupt_at - NOTICE_SECONDS)
                heapq.heappush(self.notices, (at, iid))

    def _deliver_notices(self) -> None:
        now = self.now()
        while self.notices and self.notices[0][0] <= now:
            _, iid = heapq.heappop(self.notices)
            self.warned.add(iid)
            self.on_change(now)
            self.pool.handle(
                InterruptionWarning(at=now, instance_id=InstanceId(iid), kind="interruption")
            )
            self._deliver()

    # executing plans

    def _execute(self, plan: Plan) -> None:
        result: Any = None
        try:
            while True:
                call = plan.send(result)
                self._deliver()
                result = self._call(call)
        except StopIteration:
            pass
        self._deliver()
        answers, self.answers = self.answers, []
        for answer in answers:
            self.on_change(self.now())
            self.pool.handle(self.handle_answer(answer))
            self._deliver()

    def _call(self, call: CloudCall) -> Any:
        return sim_call(self.cloud, self.config.controller.fleet, call)

    def _deliver(self) -> None:
        """What the pool said: the other actors' answers wait until its plan is done."""
        if not self.pool.outbox:
            return
        for item in self.pool.take_outbox():
            if not isinstance(item, Publish):
                continue
            message = item.message
            kind = type(message)  # most are a cycle's Decision and FleetObserved: one look each
            if kind is Decision:
                self.desired = message.desired
                self.decisions.append(message)
            elif kind is InstanceUp:
                iid, address = message.instance_id, message.address
                if self.cloud.booted(iid):
                    self.answers.append(SlaveReady(at=self.now(), instance_id=iid, address=address))
                else:
                    self._probe_until_booted(iid, address)
            elif kind is DrainSlave:
                self.drains.append(message)
                self.answers.append(_Unlisted())

    def _probe_until_booted(self, iid: str, address: str) -> None:
        """SlaveReady at the first probe (every sample_interval from now) after the boot."""
        inst = self.cloud.instance(iid)
        if inst is None:
            return
        every = self.config.master.reading_interval
        now = self.now()
        passes = now + math.ceil(max(0.0, inst.ready_at - now) / every - 1e-9) * every
        heapq.heappush(self.probes, (passes, len(self.probes), iid, address))

    def handle_answer(self, answer: Any) -> Any:
        """The message an answer stands for, made when it is handled (RenderfarmWritten lists
        what is listed then)."""
        if isinstance(answer, _Unlisted):
            urls = tuple(
                f"http://{t.address}:{port}" for t in self._listed() for port in self.ports
            )
            return RenderfarmWritten(at=self.now(), addresses=urls, reloaded=True)
        return answer

    def record(self) -> FleetRecord:
        return record_of(self.cloud, self.config.controller.fleet, self.decisions, self.drains)


class _Unlisted:
    """RenderfarmWriter's rewrite after a DrainSlave (its RenderfarmWritten is made when
    handled)."""
