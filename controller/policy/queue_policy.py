"""Pure scaling decisions for a batch cluster: how many nodes the Grid Engine queue calls for.

The node pool (actors.spot_pool with the node profile) calls `QueuePolicy.decide` each cycle
with the latest QueueSample and its nodes; nothing here does I/O or reads a clock. The rules,
meant to beat StarCluster's `loadbalance` at its best settings on both wait and cost
(bench/cluster.py):

- demand: the nodes running jobs now, plus the nodes the pending jobs need beyond the free
  slots of partly used nodes (held and error jobs do not count: a node would not start them),
  as controller.policy.queue_demand counts them: a job too wide to start before running jobs
  end, even at max_nodes, is not demand yet (once counted, it stays counted until it starts),
  and a job that has waited less than `hold_seconds` keeps nodes but launches none as long as
  running jobs hold the slots it needs (the slots they free serve many such jobs first).
  The rest is launched in one cycle; booting and idle nodes and open requests count as
  already there, so a slow boot never causes a second launch;
- running tasks whose hard run-time limit (Grid Engine's h_rt, Slurm's time limit) ends within
  `limit_horizon` (a boot and a poll) free their slots by then at the latest, sooner than a new
  node could take the job: those slots serve the jobs that waited `hold_seconds` first, so they
  launch that much less. Only that part: jobs beyond what running jobs occupy still launch at
  once, and the nodes kept (`desired`) do not change. A limit is a bound, not a guess, so there
  is nothing to tune;
- the result is clamped to [min_nodes, max_nodes]: launches never go above max, removals never
  below min;
- a node is idle while it runs no job and the cluster holds more nodes than the demand; once idle
  for `idle_seconds` without a break it is removed (the longest idle first), so a node that
  gets work, or is needed again by the queue, starts its idle clock afresh;
- a cluster above max_nodes (max lowered by a reload, an adopted larger fleet) sheds the surplus
  at once: nodes under a spot interruption warning first, then idle ones, then the youngest
  booting; a busy node is never chosen;
- a lost queue sensor (`sample is None`) holds: no removals, and launches only to get back to
  the last desired count (replacing nodes that went away) and to min_nodes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from controller.config.schema import ClusterSection, Config
from controller.messages import QueueSample
from controller.policy.band import PolicyDecision
from controller.policy.queue_demand import sample_demand

# How long a pending job waits for freed slots before a node is launched for it, chosen
# leave-one-out on the KTH and LLNL traces (bench/cluster_tune.py).
HOLD_SECONDS = 120.0
# How long after a launch a node takes jobs: [scaling] boot_seconds and one poll, by default.
LIMIT_HORIZON = 90.0 + 30.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Node:
    instance_id: str
    hostname: str  # the name Grid Engine knows it by (ip-10-0-1-23)
    launched_at: float  # same clock as `now`
    ready: bool  # set up over SSH and registered with Grid Engine
    draining: bool = False  # being removed (not counted)
    interrupted: bool = False  # spot interruption warning: counted as going away


@dataclass(frozen=True, slots=True, kw_only=True)
class QueueInput:
    now: float
    sample: QueueSample | None  # None = the queue sensor is lost -> hold
    nodes: tuple[Node, ...]
    pending_requests: int = 0  # launches asked for that are not instances yet
    cost_per_hour: float = 0.0
    price_per_instance: float = 0.0


class QueuePolicy:
    name = "queue"

    def __init__(
        self,
        *,
        min_nodes: int,
        max_nodes: int,
        node_slots: int = 1,
        idle_seconds: float = 300.0,
        hold_seconds: float = HOLD_SECONDS,
        max_cost_per_hour: float | None = None,
        limit_horizon: float = LIMIT_HORIZON,
    ) -> None:
        if node_slots < 1:
            raise ValueError("node_slots must be at least 1")
        self.band = (min_nodes, max_nodes)
        self.node_slots = node_slots
        self.idle_seconds = idle_seconds
        self.hold_seconds = hold_seconds
        self.max_cost_per_hour = max_cost_per_hour
        self.limit_horizon = limit_horizon
        self._idle_since: dict[str, float] = {}
        self._last_desired: int | None = None
        self._counted: frozenset[str] = frozenset()  # pending jobs counted as demand last time

    @classmethod
    def for_cluster(cls, config: Config, cluster: ClusterSection) -> QueuePolicy:
        return cls(
            min_nodes=cluster.min_nodes,
            max_nodes=cluster.max_nodes,
            node_slots=cluster.node_slots,
            idle_seconds=cluster.idle_seconds,
            max_cost_per_hour=config.scaling.max_cost_per_hour,
            limit_horizon=config.scaling.boot_seconds + config.master.poll_interval,
        )

    def decide(self, inp: QueueInput) -> PolicyDecision:
        held = [n for n in inp.nodes if not n.draining]
        alive = [n for n in held if not n.interrupted]
        held_count = len(held) + inp.pending_requests
        serving = len(alive) + inp.pending_requests

        if inp.sample is None:
            self._idle_since.clear()
            target = _clamp(
                self._last_desired if self._last_desired is not None else held_count, self.band
            )
            launch = _budget_allows(inp, max(0, target - serving), self.max_cost_per_hour)
            return PolicyDecision(
                band=self.band,
                desired=target,
                launch=launch,
                remove=(),
                reason=f"queue sensor lost: holding {target} node(s)"
                + (f", replacing {launch}" if launch else ""),
            )

        sample = inp.sample
        ns = self.node_slots
        busy_hosts = set(sample.busy_hosts)
        busy = {n.instance_id for n in alive if n.ready and n.hostname in busy_hosts}
        idle = sum(1 for n in held if n.ready and n.hostname not in busy_hosts)
        booting = sum(1 for n in alive if not n.ready) + inp.pending_requests
        free = sample.free_slots if sample.free_slots is not None else idle * ns
        free_on_busy = max(0, free - idle * ns)  # on partly used nodes (and the head)
        room = max(0, self.band[1] - held_count)
        demand = sample_demand(
            sample,
            capacity=free + (booting + room) * ns,
            hold_seconds=self.hold_seconds,
            counted_before=self._counted,
        )
        self._counted = demand.counted
        # Jobs held back wait for the slots running jobs free: beyond those, nodes go at once.
        occupied = max(0, len(busy) * ns - free_on_busy)
        beyond_running = demand.keep_slots - occupied
        # Slots that time limits free within a boot serve those jobs before a new node could.
        freed = _slots_freed(sample, self.limit_horizon)
        launch_slots = max(0, demand.launch_slots - freed, beyond_running)
        spared = max(demand.launch_slots, beyond_running) - launch_slots
        # Free slots on partly used nodes serve the queue only if it waits for slots: a job
        # that would fit them waits for something else (memory, a host), and needs a node.
        if not sample.waiting or any(slots <= free for _, _, slots, _ in sample.waiting):
            free_on_busy = 0
        keep = _nodes_for(demand.keep_slots - free_on_busy, ns)
        want = _nodes_for(launch_slots - free_on_busy, ns)
        desired = _clamp(len(busy) + keep, self.band)
        self._last_desired = desired
        launch = max(0, _clamp(len(busy) + want, self.band) - serving)
        held_back = max(0, desired - serving) - launch
        launch = _budget_allows(inp, launch, self.max_cost_per_hour)

        surplus = held_count - desired
        self._track_idle(inp.now, held, busy, surplus > 0)
        remove = self._choose_removals(inp.now, held, busy, surplus, held_count)
        reason = (
            f"{sample.pending_slots} pending slot(s), {len(busy)} busy node(s): "
            f"want {desired} in [{self.band[0]}, {self.band[1]}]"
        )
        if held_back:
            reason += f", {held_back} launch(es) held back while their jobs wait for freed slots"
        if spared:
            reason += f", {spared} slot(s) freed by time limits within a boot"
        if demand.too_wide:
            reason += f", {demand.too_wide} job(s) too wide until running jobs end"
        if launch:
            reason += f", launch {launch}"
        if remove:
            reason += f", remove {len(remove)}"
        elif surplus > 0:
            reason += f", {surplus} surplus waiting out idle_seconds"
        return PolicyDecision(
            band=self.band, desired=desired, launch=launch, remove=remove, reason=reason
        )

    def _track_idle(self, now: float, held: list[Node], busy: set[str], surplus: bool) -> None:
        """Start the idle clock of ready nodes running nothing while the cluster has more nodes
        than it needs; stop it for everything else."""
        idle_now = {n.instance_id for n in held if n.ready and n.instance_id not in busy}
        if not surplus:
            idle_now = set()
        self._idle_since = {iid: self._idle_since.get(iid, now) for iid in sorted(idle_now)}

    def _choose_removals(
        self, now: float, held: list[Node], busy: set[str], surplus: int, held_count: int
    ) -> tuple[str, ...]:
        if surplus <= 0:
            return ()
        chosen: list[str] = []
        over_max = held_count - self.band[1]
        if over_max > 0:
            candidates = [n for n in held if n.instance_id not in busy]
            candidates.sort(
                key=lambda n: (
                    not n.interrupted,
                    n.instance_id not in self._idle_since,
                    self._idle_since.get(n.instance_id, 0.0),
                    -n.launched_at,
                    n.instance_id,
                )
            )
            chosen = [n.instance_id for n in candidates[:over_max]]
        long_idle = sorted(
            (since, iid)
            for iid, since in self._idle_since.items()
            if now - since >= self.idle_seconds and iid not in chosen
        )
        chosen += [iid for _, iid in long_idle[: surplus - len(chosen)]]
        for iid in chosen:
            self._idle_since.pop(iid, None)
        return tuple(chosen)


def _slots_freed(sample: QueueSample, horizon: float) -> int:
    """Slots of the running tasks whose run-time limit ends within `horizon` seconds."""
    ending = {task for task, left in sample.running_limits if left <= horizon}
    return sum(slots for task, _, slots in sample.running if task in ending)


def _nodes_for(slots: int, node_slots: int) -> int:
    return max(0, math.ceil(slots / node_slots))


def _clamp(n: int, band: tuple[int, int]) -> int:
    return max(band[0], min(band[1], n))


def _budget_allows(inp: QueueInput, launch: int, max_cost_per_hour: float | None) -> int:
    """How many of `launch` fit under [scaling] max_cost_per_hour (all when there is no cap)."""
    if max_cost_per_hour is None or launch <= 0 or inp.price_per_instance <= 0:
        return launch
    room = math.floor((max_cost_per_hour - inp.cost_per_hour) / inp.price_per_instance + 1e-9)
    return max(0, min(launch, room))
