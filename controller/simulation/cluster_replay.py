"""Batch trace replay in virtual time: the daemon's node pool against a Grid Engine model, scored.

A job trace (controller.simulation.job_trace) is submitted to the Grid Engine model of
controller.simulation.queue_model as the log has it. The nodes are the daemon's: the fleet
reconciler with the NodeProfile `run --cluster` gives it and the cluster's QueuePolicy
(controller.simulation.node_executor executes it on SimCloud and stands in for QueueSampler and
ClusterNodeSetup), so a node runs jobs from the cycle after it has booted (its InstanceUp comes
with a describe) until the pool drains it, and a launch boots in [scaling] boot_seconds +-
[simulate] boot_spread. `--policy starcluster` runs StarCluster's loadbalance rules
(controller.policy.starcluster_queue) in the same pool, polled at its own 60 s interval.

Scoring: cost and node-hours are what SimCloud billed (per second, one minute at least) from the
first submit to the last job's end; waits run from submit to start; a launch "never ran a job"
when no job ever got a slot on it. A cluster with min_nodes starts with them booted and
registered, as one that had been running (not counted as launches). Jobs wider than max_nodes x
node_slots could never run and are left out (counted). If the cluster runs nothing for
STALL_SECONDS after the last submit while jobs wait, the replay stops there and counts them.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Sequence
from dataclasses import replace

from controller.cloud.port import LaunchSpec
from controller.cloud.simcloud import SimCloud
from controller.config.schema import ClusterSection, Config
from controller.messages import Role
from controller.policy.queue_policy import QueuePolicy
from controller.policy.starcluster_queue import StarClusterQueuePolicy
from controller.simulation.cluster_report import ClusterReport, Waits
from controller.simulation.job_trace import Job
from controller.simulation.node_executor import NodeExecutor
from controller.simulation.queue_model import JobQueue, Model

CLUSTER_POLICIES = ("ours", "starcluster")
STALL_SECONDS = 86400.0
PROGRESS_STEPS = 1000  # progress is reported this many times over a replay, at most

Progress = Callable[[float], None]  # told the share of the jobs finished so far, 0 to 1


class ClusterReplayError(Exception):
    """The replay cannot start (one line naming what is wrong)."""


def simulate_cluster(
    jobs: Sequence[Job],
    config: Config,
    cluster: ClusterSection,
    policy: str = "ours",
    *,
    seed: int = 1,
    trace_name: str = "",
    sample_lag: float = 0.0,
    progress: Progress | None = None,
) -> ClusterReport:
    """Replay `jobs` (sorted by submit time) through `cluster`'s node pool under `policy` (one
    of CLUSTER_POLICIES); `sample_lag`: see controller.simulation.node_executor; `progress`:
    called now and then with the share of the jobs finished (a big trace takes minutes)."""
    if policy not in CLUSTER_POLICIES:
        raise ClusterReplayError(
            f"--policy {policy}: not a cluster policy; choose one of {', '.join(CLUSTER_POLICIES)}"
        )
    width = cluster.max_nodes * cluster.node_slots
    fit = [j for j in jobs if j.cores <= width]
    if not fit:
        raise ClusterReplayError(
            f"{trace_name or 'the trace'}: every job asks more slots than [cluster.{cluster.name}] "
            f"max_nodes x node_slots = {width}: nothing could run"
        )
    replay = _ClusterReplay(fit, config, cluster, policy, seed, sample_lag)
    report = replay.run(trace_name=trace_name, left_out=len(jobs) - len(fit), progress=progress)
    if progress is not None:
        progress(1.0)
    return report


class _ClusterReplay:
    def __init__(
        self,
        jobs: Sequence[Job],
        config: Config,
        cluster: ClusterSection,
        policy_name: str,
        seed: int,
        sample_lag: float,
    ) -> None:
        if not cluster.image_id:  # the simulated cloud launches any image
            cluster = replace(cluster, image_id="ami-simulated")
        policy: QueuePolicy | StarClusterQueuePolicy
        if policy_name == "starcluster":
            policy = StarClusterQueuePolicy(
                max_nodes=cluster.max_nodes,
                min_nodes=cluster.min_nodes,
                node_slots=cluster.node_slots,
            )
            config = replace(
                config, master=replace(config.master, poll_interval=policy.poll_interval)
            )
        else:
            policy = QueuePolicy.for_cluster(config, cluster)
        self.jobs = jobs
        self.config = config
        self.cluster = cluster
        self.policy_name = policy_name
        self.seed = seed
        self.start = jobs[0].submit
        self.now = self.start
        self.cloud = SimCloud.from_config(config, clock=lambda: self.now, seed=seed)
        self.model = Model(slots=cluster.node_slots)
        self.queue = JobQueue(jobs, self.model)
        self.reclaims: list[tuple[float, str]] = []  # (when spot takes it, instance id)
        self.warm = self._warm_start()
        self.executor = NodeExecutor(
            config=config,
            cluster=cluster,
            policy=policy,
            cloud=self.cloud,
            clock=lambda: self.now,
            sample=self.queue.sample,
            joined=self._joined,
            left=self._left,
            busy=self._busy,
            sample_lag=sample_lag,
        )

    def _warm_start(self) -> set[str]:
        """min_nodes booted before the first submit (adopted at the first describe)."""
        n = self.cluster.min_nodes
        if n <= 0:
            return set()
        boot = self.config.scaling.boot_seconds * (1 + self.config.simulate.boot_spread)
        self.now = self.start - (boot + 1)
        spec = LaunchSpec(
            fleet=self.config.controller.fleet,
            role=Role.NODE,
            image_id=self.cluster.image_id,
            instance_type=self.cluster.node_instance_types[0],
            count=n,
            client_token="",
        )
        made = self.cloud.launch_now(spec).instances
        self.now = self.start
        return {i.instance_id for i in made}

    # ClusterNodeSetup's effect on Grid Engine

    def _joined(self, instance_id: str, hostname: str) -> None:
        inst = self.cloud.instance(instance_id)
        assert inst is not None
        self.model.join(instance_id, hostname, inst.launched_at, self.now)
        if inst.interrupt_at is not None:
            heapq.heappush(self.reclaims, (inst.interrupt_at, instance_id))
        self.queue.dispatch(self.now)

    def _left(self, instance_id: str) -> None:
        if instance_id in self.model.nodes:
            self.queue.evict(instance_id)
            self.model.remove(instance_id, self.now)
            self.queue.dispatch(self.now)

    def _busy(self, instance_id: str) -> bool:
        node = self.model.nodes.get(instance_id)
        return node is not None and node.used > 0

    def _reclaim_due(self) -> None:
        while self.reclaims and self.reclaims[0][0] <= self.now:
            _, iid = heapq.heappop(self.reclaims)
            self._left(iid)  # its execd is gone: Grid Engine runs nothing more there

    # the loop

    def run(self, *, trace_name: str, left_out: int, progress: Progress | None) -> ClusterReport:
        queue, executor = self.queue, self.executor
        last_submit = self.jobs[-1].submit
        every, told = max(1, len(self.jobs) // PROGRESS_STEPS), -1
        moved, last_move = -1, self.now  # jobs started + finished, and when that last changed
        while True:
            queue.step(self.now)
            self._reclaim_due()
            if queue.finished():
                break
            executor.run_due()
            if progress is not None and queue.finished_jobs // every != told:
                told = queue.finished_jobs // every
                progress(queue.finished_jobs / len(self.jobs))
            if queue.started + queue.finished_jobs != moved:
                moved, last_move = queue.started + queue.finished_jobs, self.now
            elif (
                not queue.running
                and queue.next_submit == len(self.jobs)
                and self.now - max(last_move, last_submit) > STALL_SECONDS
            ):
                break
            self.now = min(
                queue.next_event(),
                executor.next_wake(),
                self.reclaims[0][0] if self.reclaims else math.inf,
            )
        return self._report(trace_name, left_out)

    def _report(self, trace_name: str, left_out: int) -> ClusterReport:
        cloud, queue, cluster = self.cloud, self.queue, self.cluster
        end = self.now
        fleet = self.config.controller.fleet
        launched = [i for i in cloud.instances(fleet) if i.instance_id not in self.warm]
        counters = cloud.counters
        node_seconds = cloud.billed_seconds()
        terminations = counters.terminated
        cloud.terminate_now([i.instance_id for i in cloud.live()])
        core_seconds = sum(j.cores * j.run for j in self.jobs)
        return ClusterReport(
            trace=trace_name,
            cluster=cluster.name,
            policy=self.policy_name,
            seed=self.seed,
            jobs=len(self.jobs),
            left_out=left_out,
            never_started=len(self.jobs) - queue.started,
            start_seconds=self.start,
            end_seconds=end,
            node_slots=cluster.node_slots,
            min_nodes=cluster.min_nodes,
            max_nodes=cluster.max_nodes,
            idle_seconds=cluster.idle_seconds,
            poll_seconds=self.config.master.poll_interval,
            boot_seconds=self.config.scaling.boot_seconds,
            spot_price=cloud.price,
            cost=node_seconds * cloud.price / 3600.0,
            node_hours=node_seconds / 3600.0,
            packed_node_hours=core_seconds / cluster.node_slots / 3600.0,
            waits=Waits.of([w for w, s in zip(queue.waits, queue.ever_started, strict=True) if s]),
            launches=len(launched),
            never_ran=sum(1 for i in launched if i.instance_id not in self.model.worked),
            terminations=terminations,
            peak_nodes=_peak(
                [
                    (i.launched_at, i.ended_at if i.ended_at is not None else end)
                    for i in cloud.instances(fleet)
                ]
            ),
            restarts=queue.restarts,
            removals_dropped=self.executor.pool.removals_dropped,
            polls=self.executor.polls,
            capacity_errors=counters.capacity_errors,
            unfilled_requests=counters.unfilled,
        )


def _peak(intervals: Sequence[tuple[float, float]]) -> int:
    """The most intervals open at once (an end at t closes before a start at t opens)."""
    events = sorted([(a, 1) for a, _ in intervals] + [(b, -1) for _, b in intervals])
    peak = alive = 0
    for _, step in events:
        alive += step
        peak = max(peak, alive)
    return peak
