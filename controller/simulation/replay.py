"""Trace replay in virtual time: the daemon's controller against the simulated cloud, scored.

A trace is `t_seconds,requests` per bucket (controller.simulation.trace). The controller is the
one `controller run` runs: the fleet reconciler (controller.policy.reconciler) with the chosen
policy, executed on SimCloud by controller.simulation.fleet_executor, which also stands in for the
sampler, the readiness probe, renderfarm.conf and the interruption queue by the daemon's rules.
So a slave serves from the cycle that finds it booted and listed, leaves service when it is
drained (scale-in, interruption warning), and is terminated when its drain ends; unfilled requests
are cancelled after `request_timeout`; capacity errors fall through the instance types.

Scoring: demand is `ceil(load / slave_capacity_rps)` for each bucket, supply is the number of
slaves listed and alive, both integrated exactly over time; controller.simulation.elasticity
turns them into the SPEC RG metrics (controller.simulation.report). Every policy starts from the
same warm fleet: as many booted slaves as the first bucket demands, adopted at the first cycle
as after a restart. The oracle is computed from the future instead (controller.simulation.oracle).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace

from controller.cloud.port import SPOT_INTERRUPTION_REASON, LaunchSpec
from controller.cloud.simcloud import SimCloud
from controller.config.schema import Config
from controller.messages import Role
from controller.policy.band import Policy
from controller.policy.factory import make_policy
from controller.policy.pool_profile import SlaveProfile
from controller.simulation.fleet_executor import FleetExecutor
from controller.simulation.oracle import oracle
from controller.simulation.report import SimResult, Timeline, make_report
from controller.simulation.trace import Trace, demand_of, load_rate

MAX_ACTIONS_KEPT = 2000
PROGRESS_STEPS = 1000  # progress is reported this many times over a replay, at most

Progress = Callable[[float], None]  # told the share of the trace replayed so far, 0 to 1


def simulate(
    trace: Trace,
    config: Config,
    policy: str = "ours",
    *,
    seed: int = 1,
    warm: bool = True,
    progress: Progress | None = None,
) -> SimResult:
    """Replay `trace` under `policy` (any make_policy name, or "oracle"); `warm`: start with the
    first bucket's demand booted, as a controller that had been running; `progress`: called
    now and then with the share of the trace replayed (a month of polls takes seconds)."""
    if policy == "oracle":
        result = oracle(trace, config, seed)
    else:
        replay = _Replay(trace, config, make_policy(policy, config), policy, seed, warm)
        result = replay.run(progress)
    if progress is not None:
        progress(1.0)
    return result


class _Replay:
    """The daemon's controller (controller.simulation.fleet_executor) on SimCloud, scored."""

    def __init__(
        self, trace: Trace, config: Config, policy: Policy, name: str, seed: int, warm: bool
    ):
        self.trace = trace
        if not config.slave.image_id:  # the simulated cloud launches any image
            config = replace(config, slave=replace(config.slave, image_id="ami-simulated"))
        self.config = config
        self.name = name
        self.seed = seed
        self.now = trace.start
        self.cloud = SimCloud.from_config(config, clock=lambda: self.now, seed=seed)
        self.demand = [demand_of(r, config.scaling.slave_capacity_rps) for r in trace.rps]
        self.cur_demand = self.demand[0]
        self.seg_start = trace.start
        self.seg_d: list[float] = []
        self.seg_s: list[float] = []
        self.seg_dt: list[float] = []
        self.bucket_area = 0.0  # integral of supply over the current bucket
        self.bucket_supply: list[float] = []  # mean supply of each bucket (for instability)
        self.timeline = Timeline()
        self.warm = self._warm_start() if warm else 0
        self.fleet = FleetExecutor(
            config=config,
            policy=policy,
            cloud=self.cloud,
            clock=lambda: self.now,
            set_clock=self._set_now,
            rate=load_rate(trace),
            on_change=self._mark,
        )
        self.polls = 0

    def _set_now(self, t: float) -> None:
        self.now = t

    def _mark(self, t: float) -> None:
        """Close the segment of constant demand and supply that ends at t."""
        dt = t - self.seg_start
        if dt <= 0:
            return
        d, s = self.cur_demand, self.fleet.serving()
        self.bucket_area += s * dt
        if self.seg_d and self.seg_d[-1] == d and self.seg_s[-1] == s:
            self.seg_dt[-1] += dt
        else:
            self.seg_d.append(d)
            self.seg_s.append(s)
            self.seg_dt.append(dt)
        self.seg_start = t

    def _warm_start(self) -> int:
        """As a controller that had been running: the first bucket's demand, booted before the
        start (the pool adopts them at its first describe, as after a restart)."""
        n = self.demand[0]
        if n <= 0:
            return 0
        boot = self.config.scaling.boot_seconds * (1 + self.config.simulate.boot_spread)
        self.now = self.trace.start - (boot + 1)
        launch = SlaveProfile(self.config).launch_settings()  # what the pool would launch
        spec = LaunchSpec(
            fleet=self.config.controller.fleet,
            role=Role.SLAVE,
            image_id=launch.image_id,
            instance_type=launch.instance_types[0],
            count=n,
            client_token="",
            user_data=launch.user_data,
            snapshots=launch.snapshots,
        )
        warm = len(self.cloud.launch_now(spec).instances)
        self.now = self.trace.start
        return warm

    def _record(self, j: int) -> None:
        billed = self.cloud.billed_count()
        tl = self.timeline
        tl.t_seconds.append(self.trace.time(j))
        tl.load_rps.append(self.trace.rps[j])
        tl.desired.append(self.fleet.desired)
        tl.billed.append(billed)
        tl.ready.append(self.fleet.serving())
        tl.cost_per_hour.append(billed * self.cloud.price)

    def _reclaimed(self) -> set[str]:
        fleet = self.config.controller.fleet
        return {
            i.instance_id
            for i in self.cloud.instances(fleet)
            if i.state_reason == SPOT_INTERRUPTION_REASON
        }

    def run(self, progress: Progress | None = None) -> SimResult:
        tr = self.trace
        n, b = len(tr.rps), tr.bucket_seconds
        every = max(1, n // PROGRESS_STEPS)
        for j in range(n):
            if progress is not None and j % every == 0:
                progress(j / n)
            t = tr.time(j)
            self.fleet.run_until(t)
            self._mark(t)
            if j > 0:
                self.bucket_supply.append(self.bucket_area / b)
            self.bucket_area = 0.0
            self.cur_demand = self.demand[j]
            if j > 0 and tr.rps[j] != tr.rps[j - 1]:
                self.fleet.rate_changed(t)
            self.fleet.run_until(math.nextafter(t, math.inf))  # what is due at t itself
            self._record(j)
        self.fleet.run_until(tr.end)
        self._mark(tr.end)
        self.bucket_supply.append(self.bucket_area / b)
        self.polls = self.fleet.polls
        counters = self.cloud.counters
        launches, terminations = counters.launched, counters.terminated
        self.cloud.terminate_now([i.instance_id for i in self.cloud.live()])
        report = make_report(
            self,
            cost=self.cloud.cost(),
            instance_hours=self.cloud.billed_seconds() / 3600.0,
            launches=launches - self.warm,
            terminations=terminations,
            interruptions=len(self.fleet.warned | self._reclaimed()),
            capacity_errors=counters.capacity_errors,
            unfilled=counters.unfilled,
        )
        actions = tuple((d.at, d.reason) for d in self.fleet.decisions if d.launch or d.remove)[
            :MAX_ACTIONS_KEPT
        ]
        return SimResult(
            report=report,
            timeline=self.timeline,
            actions=actions,
            record=self.fleet.record(),
        )
