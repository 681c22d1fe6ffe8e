"""A Grid Engine cluster in virtual time: exec nodes, and a queue of batch jobs that run on them.

Shared by `controller simulate --cluster` (controller.simulation.cluster_replay, where the nodes
come and go as the daemon's node pool decides on SimCloud) and bench/cluster.py (where a policy
is called directly and `Model.launch` stands in for the cloud). The same scheduler serves both:

- Grid Engine's default without reservations: pending jobs in submit order, and at every event
  each one whose cores fit the free slots of the ready nodes starts at once (dispatch delay not
  modelled), filling one node's free slots before the next, oldest node first (a `$fill_up`
  parallel environment, hosts in seqno order); it holds them for its run time. A big job can
  starve behind small ones, as on a real cluster without reservations.
- What a policy sees is the QueueSample controller.gridengine.sge.queue_sample builds from
  qstat: pending jobs, slots and memory (and each pending job's wait and slots, in queue
  order), running jobs (each one's age and slots), the oldest pending job's wait, busy and
  idle exec hosts and their free slots (ready nodes only: a booting node is not an exec host
  yet).
- A node that leaves while it runs jobs (an interruption, or a removal the policy should never
  choose) takes them down: they go back to the queue in submit order and run again from the
  start (`JobQueue.restarts` counts them).

Pure: no I/O, no clock of its own.
"""

from __future__ import annotations

import bisect
import heapq
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

from controller.messages import QueueSample
from controller.policy.queue_policy import Node
from controller.simulation.job_trace import Job

BOOT_SPREAD = 0.2
INF = math.inf


@dataclass(slots=True)
class SimNode:
    instance_id: str
    hostname: str
    launched_at: float
    ready_at: float
    ready: bool = False
    used: int = 0


class Model:
    """The nodes of a Grid Engine cluster: their slots, and which are exec hosts (ready).

    `launch` boots a node of its own (bench/cluster.py's cloud: the k-th launch boots in
    `boot` +- 20 % seconds drawn from `seed`, billed from launch to removal); `join` registers a
    node someone else launched and set up (the daemon's node pool in `simulate --cluster`)."""

    def __init__(self, *, slots: int, boot: float = 90.0, seed: int = 1):
        self.slots = slots
        self.boot = boot
        self.rng = random.Random(seed)
        self.nodes: dict[str, SimNode] = {}  # alive, in launch (or join) order
        self.free = 0  # free slots on ready nodes
        self.launched = 0
        self.billed = 0.0  # node-seconds of removed nodes
        self.peak = 0
        self.worked: set[str] = set()  # instance ids that ever ran a job
        self._readies: list[tuple[float, int, str]] = []
        self._node_view: tuple[Node, ...] | None = None
        self._hosts: tuple[tuple[str, ...], tuple[str, ...]] | None = None

    def launch(self, now: float, *, ready_now: bool = False) -> SimNode:
        self.launched += 1
        k = self.launched
        boot = 0.0 if ready_now else self.boot * self.rng.uniform(1 - BOOT_SPREAD, 1 + BOOT_SPREAD)
        node = SimNode(f"i-{k:08x}", f"node{k:05d}", now, now + boot)
        self._add(node)
        heapq.heappush(self._readies, (node.ready_at, k, node.instance_id))
        return node

    def join(self, instance_id: str, hostname: str, launched_at: float, now: float) -> SimNode:
        """A node set up elsewhere becomes an exec host now."""
        node = SimNode(instance_id, hostname, launched_at, now, ready=True)
        self._add(node)
        self.free += self.slots
        self._hosts = None
        return node

    def _add(self, node: SimNode) -> None:
        self.nodes[node.instance_id] = node
        self.peak = max(self.peak, len(self.nodes))
        self._node_view = None

    def next_ready(self) -> float:
        return self._readies[0][0] if self._readies else INF

    def become_ready(self, now: float) -> bool:
        """Nodes whose boot ends by `now` join Grid Engine; True if any did."""
        joined = False
        while self._readies and self._readies[0][0] <= now:
            _, _, iid = heapq.heappop(self._readies)
            node = self.nodes.get(iid)
            if node is not None and not node.ready:
                node.ready = True
                self.free += self.slots
                joined = True
        if joined:
            self._node_view = self._hosts = None
        return joined

    def remove(self, iid: str, now: float) -> None:
        """An idle node leaves (a busy one is an error: JobQueue.evict its jobs first)."""
        node = self.nodes[iid]
        if node.used:
            raise AssertionError(f"{iid} chosen for removal while running {node.used} slot(s)")
        del self.nodes[iid]
        if node.ready:
            self.free -= self.slots
        self.billed += now - node.launched_at
        self._node_view = self._hosts = None

    def place(self, cores: int) -> list[tuple[SimNode, int]]:
        """Take `cores` free slots, filling the oldest ready node first ($fill_up)."""
        taken, left = [], cores
        for node in self.nodes.values():
            if node.ready and node.used < self.slots:
                k = min(self.slots - node.used, left)
                node.used += k
                self.worked.add(node.instance_id)
                taken.append((node, k))
                left -= k
                if left == 0:
                    break
        self.free -= cores
        self._hosts = None
        return taken

    def release(self, taken: list[tuple[SimNode, int]]) -> None:
        for node, k in taken:
            node.used -= k  # still there: a busy node is never removed
            self.free += k
        self._hosts = None

    def node_view(self) -> tuple[Node, ...]:
        if self._node_view is None:
            self._node_view = tuple(
                Node(
                    instance_id=n.instance_id,
                    hostname=n.hostname,
                    launched_at=n.launched_at,
                    ready=n.ready,
                )
                for n in self.nodes.values()
            )
        return self._node_view

    def hosts(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(busy, idle) exec hosts as qstat shows them: ready nodes, sorted by name."""
        if self._hosts is None:
            ready = [n for n in self.nodes.values() if n.ready]
            self._hosts = (
                tuple(n.hostname for n in ready if n.used),
                tuple(n.hostname for n in ready if not n.used),
            )
        return self._hosts

    def node_seconds(self, end: float) -> float:
        return self.billed + sum(end - n.launched_at for n in self.nodes.values())


class JobQueue:
    """Grid Engine's queue of `jobs` (sorted by submit time) on `model`'s nodes (module
    docstring): submit, dispatch, end; `step(now)` does what is due by `now`."""

    def __init__(self, jobs: Sequence[Job], model: Model) -> None:
        self.jobs = jobs
        self.model = model
        self.waits = [0.0] * len(jobs)  # submit to the start of the run that completed
        self.started = 0  # jobs that have started (a restarted one counts once)
        self.finished_jobs = 0
        self.restarts = 0
        self.ever_started = [False] * len(jobs)
        self.running: dict[int, tuple[float, list[tuple[SimNode, int]]]] = {}  # job -> end, slots
        self._ends: list[tuple[float, int]] = []  # (end, job index); stale after an eviction
        self.pending: list[int] = []  # job indices in submit order
        self.pending_slots = 0
        self.pending_mem = 0.0
        self.next_submit = 0  # the next job to arrive

    def finished(self) -> bool:
        return self.next_submit == len(self.jobs) and not self.pending and not self.running

    def next_event(self) -> float:
        """When the next job arrives or ends, or a node of the model's own is ready."""
        arrival = self.jobs[self.next_submit].submit if self.next_submit < len(self.jobs) else INF
        return min(arrival, self._ends[0][0] if self._ends else INF, self.model.next_ready())

    def step(self, now: float) -> None:
        """Ends, readiness and arrivals due by `now`, then the starts they allow."""
        freed = False
        while self._ends and self._ends[0][0] <= now:
            end, j = heapq.heappop(self._ends)
            entry = self.running.get(j)
            if entry is None or entry[0] != end:
                continue  # evicted and queued again
            del self.running[j]
            self.model.release(entry[1])
            self.finished_jobs += 1
            freed = True
        freed |= self.model.become_ready(now)
        first_new = len(self.pending)
        jobs = self.jobs
        while self.next_submit < len(jobs) and jobs[self.next_submit].submit <= now:
            self._enqueue(self.next_submit)
            self.pending.append(self.next_submit)
            self.next_submit += 1
        # Only freed slots can let an older job start; otherwise only the new ones may fit.
        self.dispatch(now, 0 if freed else first_new)

    def dispatch(self, now: float, first: int = 0) -> None:
        """Start every pending job from position `first` on that fits the free slots."""
        model = self.model
        if model.free <= 0 or first >= len(self.pending):
            return
        rest = []
        for j in self.pending[first:]:
            job = self.jobs[j]
            if job.cores <= model.free:
                self.pending_slots -= job.cores
                self.pending_mem -= job.cores * job.mem_mb
                self.waits[j] = now - job.submit
                if not self.ever_started[j]:
                    self.ever_started[j] = True
                    self.started += 1
                end = now + job.run
                self.running[j] = (end, model.place(job.cores))
                heapq.heappush(self._ends, (end, j))
            else:
                rest.append(j)
        self.pending[first:] = rest

    def evict(self, instance_id: str) -> int:
        """The node leaves: the jobs running on it go back to the queue; how many did."""
        hit = [
            j
            for j, (_, taken) in self.running.items()
            if any(node.instance_id == instance_id for node, _ in taken)
        ]
        for j in hit:
            _, taken = self.running.pop(j)
            self.model.release(taken)
            self._enqueue(j)
            bisect.insort(self.pending, j)
        self.restarts += len(hit)
        return len(hit)

    def _enqueue(self, j: int) -> None:
        job = self.jobs[j]
        self.pending_slots += job.cores
        self.pending_mem += job.cores * job.mem_mb

    def sample(self, now: float) -> QueueSample:
        """What QueueSampler would publish now (module docstring)."""
        busy, idle = self.model.hosts()
        jobs = self.jobs
        waiting = tuple((str(j), now - jobs[j].submit, jobs[j].cores, 1) for j in self.pending)
        return QueueSample(
            at=now,
            pending_jobs=len(self.pending),
            pending_slots=self.pending_slots,
            running_jobs=len(self.running),
            oldest_pending_seconds=waiting[0][1] if waiting else 0.0,
            pending_mem_mb=self.pending_mem,
            busy_hosts=busy,
            idle_hosts=idle,
            waiting=waiting,
            free_slots=self.model.free,
            running=tuple(
                (str(j), now - end + jobs[j].run, jobs[j].cores)
                for j, (end, _) in self.running.items()
            ),
        )


def quantile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank quantile of already sorted values."""
    if not sorted_values:
        return 0.0
    return sorted_values[max(0, math.ceil(q * len(sorted_values)) - 1)]
