"""What a replay reports: the per-bucket timeline, cost and churn, and the SPEC RG elasticity
metrics from the exact timeline of demand and supply."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from controller.config.schema import Config, LoadRow, LoadTableSection
from controller.policy.band import band_for
from controller.simulation.elasticity import (
    ElasticityMetrics,
    instability,
    over_accuracy,
    over_timeshare,
    under_accuracy,
    under_timeshare,
)
from controller.simulation.fleet_executor import FleetRecord
from controller.simulation.trace import Trace

TIMELINE_HEADER = ("t_seconds", "load_rps", "desired", "billed", "ready", "cost_per_hour")


@dataclass(slots=True)
class Timeline:
    """One row per bucket, as `--timeline` writes it."""

    t_seconds: list[float] = field(default_factory=list)
    load_rps: list[float] = field(default_factory=list)
    desired: list[int] = field(default_factory=list)
    billed: list[int] = field(default_factory=list)
    ready: list[int] = field(default_factory=list)
    cost_per_hour: list[float] = field(default_factory=list)

    def rows(self) -> list[tuple[float, float, int, int, int, float]]:
        return list(
            zip(
                self.t_seconds,
                self.load_rps,
                self.desired,
                self.billed,
                self.ready,
                self.cost_per_hour,
                strict=True,
            )
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class SimReport:
    policy: str
    trace: str
    seed: int
    start_seconds: float
    end_seconds: float
    bucket_seconds: float
    buckets: int
    slave_capacity_rps: float
    boot_seconds: float
    spot_price: float
    cost: float  # dollars
    instance_hours: float
    demand_hours: float  # slave-hours the demand itself needs (no boots, no spare)
    launches: int
    terminations: int
    interruptions: int
    capacity_errors: int
    unfilled_requests: int
    peak_demand: int
    peak_billed: int
    table_short_pct: float  # % of time the load table's max for the load is below its demand
    polls: int
    elasticity: ElasticityMetrics

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            name: getattr(self, name) for name in self.__slots__ if name != "elasticity"
        }
        out["elasticity"] = self.elasticity.as_dict()
        out["duration_hours"] = (self.end_seconds - self.start_seconds) / 3600.0
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class SimResult:
    report: SimReport
    timeline: Timeline
    actions: tuple[tuple[float, str], ...]  # (t, reason) of decisions that changed the fleet
    record: FleetRecord | None = None  # what the controller did (None for the oracle)


def make_report(
    run: Any,
    *,
    cost: float,
    instance_hours: float,
    launches: int,
    terminations: int,
    interruptions: int,
    capacity_errors: int,
    unfilled: int,
) -> SimReport:
    tr, cfg = run.trace, run.config
    return SimReport(
        policy=run.name,
        trace=tr.path,
        seed=run.seed,
        start_seconds=tr.start,
        end_seconds=tr.end,
        bucket_seconds=tr.bucket_seconds,
        buckets=len(tr.rps),
        slave_capacity_rps=cfg.scaling.slave_capacity_rps,
        boot_seconds=cfg.scaling.boot_seconds,
        spot_price=cfg.simulate.spot_price,
        cost=cost,
        instance_hours=instance_hours,
        demand_hours=sum(run.demand) * tr.bucket_seconds / 3600.0,
        launches=launches,
        terminations=terminations,
        interruptions=interruptions,
        capacity_errors=capacity_errors,
        unfilled_requests=unfilled,
        peak_demand=max(run.demand, default=0),
        peak_billed=max(run.timeline.billed, default=0),
        table_short_pct=table_short_pct(trace=tr, config=cfg, demand=run.demand),
        polls=run.polls,
        elasticity=elasticity_of(run.seg_d, run.seg_s, run.seg_dt, run.demand, run.bucket_supply),
    )


def elasticity_of(
    seg_d: list[float],
    seg_s: list[float],
    seg_dt: list[float],
    bucket_demand: Sequence[float],
    bucket_supply: Sequence[float],
) -> ElasticityMetrics:
    """Accuracy and timeshare from the exact timeline; instability on the bucket grid.

    Instability compares the direction of consecutive changes, so it needs a regular grid (on
    event segments every boundary is a change by construction): it uses each bucket's demand
    and the bucket's time-averaged supply.
    """
    return ElasticityMetrics(
        theta_u=under_accuracy(seg_d, seg_s, seg_dt),
        theta_o=over_accuracy(seg_d, seg_s, seg_dt),
        tau_u=under_timeshare(seg_d, seg_s, seg_dt),
        tau_o=over_timeshare(seg_d, seg_s, seg_dt),
        instability=instability(bucket_demand, bucket_supply),
    )


def table_short_pct(*, trace: Trace, config: Config, demand: Sequence[int]) -> float:
    """% of buckets whose load gets a band with a max below its demand: the table limits."""
    rows = config.load_table.rows
    short = sum(1 for r, d in zip(trace.rps, demand, strict=True) if band_for(rows, r)[1] < d)
    return 100.0 * short / len(demand) if demand else 0.0


# the oracle


# a load table for a trace


def capacity_table(
    capacity_rps: float, top: int, *, spare: float = 0.5, least_spare: int = 2
) -> LoadTableSection:
    """A load table derived from the slave capacity, as an admin who knows it would write it.

    Row k applies from k * capacity requests/sec, where the demand is k + 1 slaves (k = 0 at a
    token 1 % of one slave's capacity): min = k + 1 (the demand of that load), max = min plus
    `spare` of it (at least `least_spare`) as the seed's hysteresis. Rows go up to `top` slaves.
    Used by bench/policy.py so the table is a real bound but not what limits a policy.
    """
    rows = [LoadRow(rps=0.01 * capacity_rps, min_instances=1, max_instances=1 + least_spare)]
    for k in range(1, top):
        low = k + 1
        high = low + max(least_spare, math.ceil(spare * low))
        rows.append(LoadRow(rps=k * capacity_rps, min_instances=low, max_instances=high))
    return LoadTableSection(rows=tuple(rows))


def write_timeline(timeline: Timeline, path: str) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(TIMELINE_HEADER)
        for t, load, desired, billed, ready, cph in timeline.rows():
            w.writerow([f"{t:g}", f"{load:.6g}", desired, billed, ready, f"{cph:.6g}"])
