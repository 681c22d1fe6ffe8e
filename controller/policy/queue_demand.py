"""What the pending jobs of a Grid Engine queue ask of new nodes: pure, no I/O, no clock.

Two rules keep QueuePolicy from launching nodes that would find no job (bench/cluster.py
measured both on the KTH and LLNL traces):

- a job too wide to start before a node could boot, even with the cluster at max_nodes (its
  slots are held by running jobs), is not demand yet: nodes launched for it would only wait,
  idle, for those jobs to end. It counts once free, booting and launchable slots cover it, and
  from then on until it starts (Grid Engine without reservations lets later jobs that fit take
  the slots meant for it: the nodes are replaced rather than given up, or it could starve).
  Jobs are taken in the scheduler's order and the slots of the ones counted are set aside;
- a job that has waited less than `hold_seconds` keeps the nodes it could use but does not
  launch new ones yet: the slots running jobs free in that time serve many such jobs (as far
  as running jobs hold slots at all: QueuePolicy launches at once beyond those).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from controller.messages import QueueSample

Waiting = tuple[str, float, int, int]  # job id, seconds waited, slots per task, tasks


@dataclass(frozen=True, slots=True)
class QueueDemand:
    keep_slots: int  # slots of the jobs that could start within a boot: nodes for them stay
    launch_slots: int  # of those, the jobs that waited hold_seconds: nodes are launched for them
    too_wide: int  # tasks that cannot start before running jobs end, left out of both
    counted: frozenset[str] = frozenset()  # the jobs counted: pass them back as `counted_before`


def queue_demand(
    waiting: Sequence[Waiting],
    *,
    capacity: int,
    hold_seconds: float,
    counted_before: frozenset[str] = frozenset(),
) -> QueueDemand:
    """The demand of `waiting` (in the scheduler's order) on a cluster that could offer
    `capacity` slots within a boot (its free slots, its booting nodes' and the nodes max_nodes
    still allows); `counted_before`: the jobs the last call counted."""
    keep = launch = too_wide = 0
    counted = set()
    for job, waited, slots, tasks in waiting:
        if job in counted_before or slots <= 0:
            fit = tasks
        else:
            fit = min(tasks, max(0, capacity - keep) // slots)
        if fit:
            counted.add(job)
        keep += fit * slots
        if waited >= hold_seconds:
            launch += fit * slots
        too_wide += tasks - fit
    return QueueDemand(keep, launch, too_wide, frozenset(counted))


def sample_demand(
    sample: QueueSample,
    *,
    capacity: int,
    hold_seconds: float,
    counted_before: frozenset[str] = frozenset(),
) -> QueueDemand:
    """queue_demand of a sample; a sensor that lists no pending jobs (only their total) makes
    every pending slot demand at once."""
    if sample.waiting or not sample.pending_slots:
        return queue_demand(
            sample.waiting,
            capacity=capacity,
            hold_seconds=hold_seconds,
            counted_before=counted_before,
        )
    return QueueDemand(sample.pending_slots, sample.pending_slots, 0)
