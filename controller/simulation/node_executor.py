"""The daemon's node pool (`run --cluster`), executed on SimCloud in virtual time.

`controller simulate --cluster` runs the very fleet reconciler SpotPool runs
(controller.policy.reconciler) with the NodeProfile `run --cluster` gives it: the same
adoption, launches with type fallback and cooldowns, bids, drains and terminations. This module
is only the executor: it makes the cloud calls the plans yield on SimCloud's synchronous core and
stands in for the actors around the pool with the rules they follow in the daemon
(controller.app.build_cluster_actors):

- QueueSampler: a QueueSample of the queue model every poll_interval from the start, at a steady
  cadence (`sample_lag` seconds after the pool's cycle times; 0: just before them, the freshest
  the daemon's pool can decide on);
- ClusterNodeSetup: the pool announces a node (InstanceUp) when a describe shows it running,
  which on SimCloud is once it has booted; it is then registered with Grid Engine and NodeReady
  answers (after the cycle, as the actor's answer arrives). Setup itself takes no time here. On
  the InstanceDown of a scale-in, the node's queue is disabled and looked at again: a node that
  runs a job after all (the sample the choice was made on was older) is kept (NodeKept), an idle
  one leaves Grid Engine (NodeReleased) and is then terminated. On any other InstanceDown the
  node leaves Grid Engine at once; a node announced down before its setup finished never joins;
- FirewallKeeper: the nodes' group is ready from the start. There is no InterruptionWatcher in
  cluster mode: a reclaimed node just disappears, and takes its jobs with it.

The loop is SpotPool.run's: a cycle every poll_interval, at once (without a describe) when a
message is urgent, and terminations exactly when a drain ends.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from controller.cloud.simcloud import SimCloud
from controller.config.schema import ClusterSection, Config
from controller.gridengine.sge import ec2_hostname
from controller.messages import (
    Decision,
    InstanceDown,
    InstanceUp,
    LostReason,
    NodeKept,
    NodeReady,
    NodeReleased,
    QueueSample,
    SecurityGroupReady,
)
from controller.policy.fleet_plans import (
    CloudCall,
    Plan,
    Publish,
)
from controller.policy.pool_profile import NodeProfile
from controller.policy.reconciler import FleetReconciler
from controller.simulation.fleet_executor import sim_call

SIM_NODE_GROUP = "sg-simulated-nodes"


class NodeExecutor:
    """One cluster's node pool, SimCloud, and the other actors' stand-ins (module docstring).

    `sample(t)` is the QueueSample the sampler would read at `t`; `joined(instance_id, hostname)`
    registers a node with Grid Engine; `left(instance_id)` takes it out; `busy(instance_id)`:
    does Grid Engine run a job there now.
    """

    def __init__(
        self,
        *,
        config: Config,
        cluster: ClusterSection,
        policy: Any,
        cloud: SimCloud,
        clock: Callable[[], float],
        sample: Callable[[float], QueueSample],
        joined: Callable[[str, str], None],
        left: Callable[[str], None],
        busy: Callable[[str], bool],
        sample_lag: float = 0.0,
    ) -> None:
        self.config = config
        self.cloud = cloud
        self.now = clock
        self.sample = sample
        self.joined = joined
        self.left = left
        self.busy = busy
        self.poll = config.master.poll_interval
        self.pool = FleetReconciler(
            config=config,
            policy=policy,
            profile=NodeProfile(config, cluster),
            clock=clock,
            wall_clock=lambda: clock() + cloud.wall_offset,
            confirm_release=True,  # as build_cluster_actors runs it: ClusterNodeSetup answers
        )
        self.next_cycle = clock()
        self.next_sample = clock() + sample_lag
        # ClusterNodeSetup's, handled after the plan
        self.answers: list[NodeReady | NodeKept | NodeReleased] = []
        self.down: set[str] = set()  # announced down: never (again) an exec host
        self.decisions: list[Decision] = []
        self.polls = 0
        self.pool.handle(SecurityGroupReady(at=clock(), group_id=SIM_NODE_GROUP, created=True))
        self._execute(self.pool.adopt())  # SpotPool.setup

    def next_wake(self) -> float:
        """When the pool or the sampler next has something to do."""
        # An urgent message is always handled within run_due: it never waits for a wake.
        return min(self.next_cycle, self.pool.next_drain_due(), self.next_sample)

    def run_due(self) -> None:
        """Everything due by now: the sample, then cycles and terminations until none is."""
        pool = self.pool
        while True:
            now = self.now()
            if now >= self.next_sample:
                self.next_sample += self.poll
                pool.handle(self.sample(now))
                self._deliver()
            cycle, polled = pool.cycle_due(self.next_cycle)
            if cycle:
                pool.urgent = False
                self.polls += polled
                self._execute(pool.reconcile(describe=polled))
                if polled:
                    self.next_cycle = now + self.poll
            elif pool.next_drain_due() <= now:
                self._execute(pool.terminate_due())
                pool.publish_fleet()
                self._deliver()
            else:
                return

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
            if isinstance(answer, NodeReady):
                if answer.instance_id in self.down:
                    continue  # its setup was cancelled by the InstanceDown
                self.joined(answer.instance_id, answer.hostname)
            self.pool.handle(answer)
            self._deliver()

    def _call(self, call: CloudCall) -> Any:
        return sim_call(self.cloud, self.config.controller.fleet, call)

    def _deliver(self) -> None:
        """What the pool said to the other actors."""
        for item in self.pool.take_outbox():
            if not isinstance(item, Publish):
                continue
            match item.message:
                case InstanceUp(instance_id=iid, address=address) if iid not in self.down:
                    self.answers.append(
                        NodeReady(
                            at=self.now(),
                            instance_id=iid,
                            address=address,
                            hostname=ec2_hostname(address),
                        )
                    )
                case InstanceDown(instance_id=iid, address=address, reason=LostReason.SCALE_IN):
                    self._release(iid, address)
                case InstanceDown(instance_id=iid):
                    if iid not in self.down:
                        self.down.add(iid)
                        self.left(iid)
                case Decision() as decision:
                    self.decisions.append(decision)

    def _release(self, iid: str, address: str) -> None:
        """ClusterNodeSetup on a scale-in: kept if Grid Engine runs a job there, else out."""
        if iid in self.down:
            return
        if self.busy(iid):
            why = "a job runs there since the queue sample"
            self.answers.append(
                NodeKept(at=self.now(), instance_id=iid, address=address, reason=why)
            )
            return
        self.down.add(iid)
        self.left(iid)
        self.answers.append(NodeReleased(at=self.now(), instance_id=iid, address=address))
