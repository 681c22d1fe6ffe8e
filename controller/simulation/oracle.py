"""The oracle: every slave launched exactly one boot before the demand needs it, computed from
the future (controller.policy.baselines.oracle_plan): the physical limit under the same boot
time."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from controller.config.schema import Config
from controller.policy.baselines import oracle_plan
from controller.simulation.report import SimResult, Timeline, make_report
from controller.simulation.trace import Trace, demand_of


@dataclass(slots=True)
class _OracleRun:
    trace: Trace
    config: Config
    seed: int
    name: str = "oracle"
    demand: list[int] = field(default_factory=list)
    timeline: Timeline = field(default_factory=Timeline)
    seg_d: list[float] = field(default_factory=list)
    seg_s: list[float] = field(default_factory=list)
    seg_dt: list[float] = field(default_factory=list)
    bucket_supply: list[float] = field(default_factory=list)
    polls: int = 0


def oracle(trace: Trace, config: Config, seed: int) -> SimResult:
    cap = config.scaling.slave_capacity_rps
    boot = config.scaling.boot_seconds
    price = config.simulate.spot_price
    n, b = len(trace.rps), trace.bucket_seconds
    run = _OracleRun(trace=trace, config=config, seed=seed)
    run.demand = [demand_of(r, cap) for r in trace.rps]
    times = [trace.time(j) for j in range(n)]
    plan = oracle_plan(times, run.demand, trace.end, boot)
    ready_diff = [0] * (n + 1)
    billed_diff = [0] * (n + 1)
    for r in plan:
        ready_diff[round((r.ready_at - trace.start) / b)] += 1
        ready_diff[round((r.end - trace.start) / b)] -= 1
        first_billed = max(0, math.ceil((r.launched_at - trace.start) / b - 1e-9))
        billed_diff[first_billed] += 1
        billed_diff[round((r.end - trace.start) / b)] -= 1
    ready = billed = 0
    tl = run.timeline
    for j in range(n):
        ready += ready_diff[j]
        billed += billed_diff[j]
        tl.t_seconds.append(times[j])
        tl.load_rps.append(trace.rps[j])
        tl.desired.append(ready)
        tl.billed.append(billed)
        tl.ready.append(ready)
        tl.cost_per_hour.append(billed * price)
        run.bucket_supply.append(ready)
        d = run.demand[j]
        if run.seg_d and run.seg_d[-1] == d and run.seg_s[-1] == ready:
            run.seg_dt[-1] += b
        else:
            run.seg_d.append(d)
            run.seg_s.append(ready)
            run.seg_dt.append(b)
    seconds = sum(max(r.end - r.launched_at, 60.0) for r in plan)
    warm = run.demand[0] if n else 0
    report = make_report(
        run,
        cost=seconds * price / 3600.0,
        instance_hours=seconds / 3600.0,
        launches=len(plan) - warm,
        terminations=sum(1 for r in plan if r.end < trace.end),
        interruptions=0,
        capacity_errors=0,
        unfilled=0,
    )
    return SimResult(report=report, timeline=tl, actions=())
