"""What `controller simulate --cluster` reports: cost, job waits, churn (and the text of it)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from controller.simulation.queue_model import quantile


@dataclass(frozen=True, slots=True)
class Waits:
    """Seconds from submit to start, over the jobs that started."""

    mean: float
    p50: float
    p95: float
    max: float

    @classmethod
    def of(cls, waits: Sequence[float]) -> Waits:
        ordered = sorted(waits)
        if not ordered:
            return cls(0.0, 0.0, 0.0, 0.0)
        return cls(
            sum(ordered) / len(ordered),
            quantile(ordered, 0.5),
            quantile(ordered, 0.95),
            ordered[-1],
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class ClusterReport:
    trace: str
    cluster: str
    policy: str
    seed: int
    # the replay
    jobs: int  # replayed
    left_out: int  # asking more slots than max_nodes x node_slots: they could never run
    never_started: int  # still queued when the cluster stopped making progress (see summary)
    start_seconds: float  # the first submit
    end_seconds: float  # the last job's end (or where it stalled)
    node_slots: int
    min_nodes: int
    max_nodes: int
    idle_seconds: float
    poll_seconds: float
    boot_seconds: float
    spot_price: float
    # cost
    cost: float
    node_hours: float
    packed_node_hours: float  # the jobs' core-hours / node_slots: no boot, no idle slot
    # waits
    waits: Waits
    # churn
    launches: int
    never_ran: int  # launched nodes that never ran a job
    terminations: int
    peak_nodes: int
    restarts: int  # jobs that ran again: their node went away under them
    removals_dropped: int  # scale-ins kept: a job had reached the node since the queue sample
    polls: int
    capacity_errors: int
    unfilled_requests: int

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def cluster_summary(r: ClusterReport) -> str:
    """The human report."""
    days = (r.end_seconds - r.start_seconds) / 86400.0
    w = r.waits
    share = f" ({100.0 * r.never_ran / r.launches:.1f} %)" if r.launches else ""
    ratio = f", {r.node_hours / r.packed_node_hours:.2f}x" if r.packed_node_hours > 0 else ""
    lines = [
        f"trace        {r.trace}: {r.jobs} jobs over {days:.1f} days"
        + (f" ({r.left_out} left out: wider than max_nodes x node_slots)" if r.left_out else ""),
        f"cluster      {r.cluster}: policy {r.policy} (seed {r.seed}); "
        f"{r.min_nodes}..{r.max_nodes} nodes of {r.node_slots} slot(s), idle_seconds "
        f"{r.idle_seconds:g}, poll {r.poll_seconds:g} s, boot {r.boot_seconds:g} s, "
        f"${r.spot_price:g}/node-hour",
        f"cost         ${r.cost:.2f} for {r.node_hours:.1f} node-hours (the jobs packed "
        f"perfectly fill {r.packed_node_hours:.1f}{ratio})",
        f"waits        mean {w.mean / 60:.1f} min, p50 {w.p50 / 60:.1f} min, "
        f"p95 {w.p95 / 60:.1f} min, max {w.max / 60:.1f} min",
        f"churn        {r.launches} launches, {r.never_ran} never ran a job{share}, "
        f"{r.terminations} terminations, peak {r.peak_nodes} nodes, {r.restarts} jobs restarted, "
        f"{r.removals_dropped} scale-ins dropped (busy when looked at again), "
        f"{r.capacity_errors} capacity errors, {r.unfilled_requests} unfilled requests",
    ]
    if r.never_started:
        lines.append(
            f"stalled      {r.never_started} job(s) never started: the cluster ran nothing for a "
            "day with jobs queued (is max_nodes, spot_bid or image_id what you meant?)"
        )
    return "\n".join(lines)
