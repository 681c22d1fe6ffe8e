"""StarCluster 0.95's `loadbalance` for Grid Engine, as a pure policy on our QueueInput.

A baseline for cluster mode: `bench/cluster.py` replays it against
`controller.policy.queue_policy` on real batch traces. Pure like the policies it is compared with:
no I/O, no clock reads.
"""

from __future__ import annotations

from controller.policy.band import PolicyDecision
from controller.policy.queue_policy import QueueInput

DAY = 86400


class StarClusterQueuePolicy:
    """StarCluster 0.95's SGELoadBalancer (jtriley/StarCluster, starcluster/balancers/sge/
    __init__.py: `run`, `_eval_add_node`, `_eval_remove_node`, `_should_remove`;
    docs/sphinx/manual/load_balancer.rst). Its defaults: polling interval 60 s, wait_time
    900 s, add_nodes_per_iteration 1, stabilization_time 180 s, kill_after 45 min, min_nodes 1
    (the master), max_nodes the cluster's size. wait_time "must be at least 300 seconds" (its
    docstring); its later code raises lower values to 300, and so does this.

    Each pass, from qstat's view of the queue:
    - add, unless the cluster holds max_nodes, or nothing is queued (qw) and it holds min_nodes,
      or it changed within stabilization_time (while it has any slot). Below min_nodes: up to
      min; no slot at all: 1 at once; queued slots beyond the free ones and the oldest queued
      job waited more than wait_time: `queued slots // slots per host` (floor: 0 if they need
      less than a whole host). At most add_nodes_per_iteration, never above max_nodes.
    - remove, only when nothing is queued and the cluster is stable, down to min_nodes: every
      idle host (running no job) that has been up `kill_after` minutes past the hour.
    - `add_nodes` blocks until the new nodes are set up; the stabilization clock starts when it
      returns, and the loop sleeps a polling interval after that. `blocks_while_booting` tells
      the benchmark to call again when the nodes are ready: that call starts the clock and does
      nothing else. While any node is not ready it waits (`is_cluster_up` is false).

    Mapping to our input:
    - the master is not a node here (both policies keep it; it costs the same to both), so
      min_nodes counts workers: 0 by default. In StarCluster the master is an exec host too,
      so "no slot at all" never arises there; here it does whenever no worker is up, and then
      a node comes without waiting wait_time (in StarCluster's favour);
    - free slots (its `total_slots - used_slots`): the QueueSample's free_slots; a sensor
      without it leaves idle hosts x slots to stand in, a lower bound. Under immediate dispatch
      a job stays queued only when it does not fit the free slots, so `queued slots > free
      slots` holds exactly when jobs are queued either way;
    - times use `timedelta.seconds` as StarCluster does (an age over a day wraps round);
    - kill_after: the rule exists to use the hour already paid for. Under per-second billing
      it only keeps idle nodes longer; kill_after=0 removes any idle node (queue empty, stable).
    """

    name = "starcluster"
    blocks_while_booting = True  # add_nodes returns when the nodes are up; see the docstring

    def __init__(
        self,
        *,
        max_nodes: int,
        node_slots: int,
        min_nodes: int = 0,
        wait_time: float = 900.0,
        stabilization_time: float = 180.0,
        add_nodes_per_iteration: int = 1,
        kill_after: float = 45.0,
        polling_interval: float = 60.0,
    ) -> None:
        if node_slots < 1:
            raise ValueError("node_slots must be at least 1")
        if min_nodes > max_nodes:
            raise ValueError("min_nodes cannot be greater than max_nodes")
        self.band = (min_nodes, max_nodes)
        self.node_slots = node_slots
        self.wait_time = max(300.0, wait_time)
        self.stabilization_time = stabilization_time
        self.add_nodes_per_iteration = add_nodes_per_iteration
        self.kill_after = kill_after
        self.poll_interval = polling_interval
        self._last_change: float | None = None  # None: stable (the balancer started long ago)
        self._adding = False

    def _stable(self, now: float) -> bool:
        if self._last_change is None:
            return True
        return int(now - self._last_change) % DAY >= self.stabilization_time

    def decide(self, inp: QueueInput) -> PolicyDecision:
        now = inp.now
        nodes = [n for n in inp.nodes if not n.draining]
        count = len(nodes) + inp.pending_requests
        low, high = self.band

        def hold(reason: str) -> PolicyDecision:
            return PolicyDecision(band=self.band, desired=count, launch=0, remove=(), reason=reason)

        if inp.pending_requests or any(not n.ready for n in nodes):
            return hold("waiting for all nodes to come up")
        if self._adding:
            self._adding = False
            self._last_change = now
            return hold("nodes added: stabilizing")
        sample = inp.sample
        if sample is None:
            return hold("no qstat reading: waiting")

        queued = sample.pending_jobs
        stable = self._stable(now)
        total_slots = len(nodes) * self.node_slots
        if count < high and (queued or count < low) and (stable or total_slots == 0):
            need = 0
            if count < low:
                need = low - count
            elif total_slots == 0:
                need = 1
            else:
                free_slots = sample.free_slots  # see the docstring
                if free_slots is None:
                    free_slots = len(sample.idle_hosts) * self.node_slots
                waited = int(sample.oldest_pending_seconds) % DAY
                if sample.pending_slots > free_slots and waited > self.wait_time:
                    need = sample.pending_slots // self.node_slots
            launch = min(self.add_nodes_per_iteration, need, high - count)
            if launch > 0:
                self._adding = True
                return PolicyDecision(
                    band=self.band,
                    desired=count + launch,
                    launch=launch,
                    remove=(),
                    reason=f"{queued} queued, {count} node(s): add {launch}",
                )

        remove: list[str] = []
        if queued == 0 and stable and count > low:
            busy = set(sample.busy_hosts)
            for n in sorted(nodes, key=lambda n: (n.launched_at, n.hostname)):
                if len(remove) >= count - low:
                    break
                minutes_past_hour = (int(now - n.launched_at) % DAY) // 60 % 60
                if n.hostname not in busy and minutes_past_hour >= self.kill_after:
                    remove.append(n.instance_id)
        if remove:
            self._last_change = now
            return PolicyDecision(
                band=self.band,
                desired=count - len(remove),
                launch=0,
                remove=tuple(remove),
                reason=f"queue empty: remove {len(remove)} idle node(s)",
            )
        return hold(f"{queued} queued, {count} node(s): no change")
