"""A batch cluster's queue and nodes, as /status, /metrics and `controller status` show them.

Pure: FleetState (controller.status.fleetstate) keeps the latest QueueSample as a QueueView and
asks `node_state` where each node is. QueueSampler's sample says what the scheduler holds; the node
pool's FleetObserved (its lifecycle phase), InstanceUp (EC2 says the node runs, so
ClusterNodeSetup logs in) and NodeReady (set up and registered) say where a node is in its life,
in the four states an operator asks about:

  booting     launched; EC2 has not said it runs yet
  setting_up  running; ClusterNodeSetup mounts its volumes, runs the plugins, registers it
  ready       registered with the scheduler: jobs may run on it
  draining    leaving: out of the scheduler, being terminated
"""

from __future__ import annotations

from dataclasses import dataclass

from controller.messages import QueueSample

NODE_STATES = ("booting", "setting_up", "ready", "draining")
LEAVING_STATES = frozenset({"draining", "terminating", "shutting-down"})
LOAD_SOURCES = frozenset({"apache"})  # a SensorLost from any other source is a queue's


@dataclass(frozen=True, slots=True)
class QueueView:
    """The latest queue reading; `at` is its loop time."""

    at: float
    pending_jobs: int
    pending_slots: int
    running_jobs: int
    oldest_pending_seconds: float
    pending_mem_mb: float
    busy_hosts: int
    idle_hosts: int
    source: str

    @classmethod
    def of(cls, sample: QueueSample) -> QueueView:
        return cls(
            at=sample.at,
            pending_jobs=sample.pending_jobs,
            pending_slots=sample.pending_slots,
            running_jobs=sample.running_jobs,
            oldest_pending_seconds=sample.oldest_pending_seconds,
            pending_mem_mb=sample.pending_mem_mb,
            busy_hosts=len(sample.busy_hosts),
            idle_hosts=len(sample.idle_hosts),
            source=sample.source,
        )

    def document(self, wall_at: float) -> dict:
        """The /status `queue` object; `wall_at` is `at` as epoch seconds."""
        return {
            "at": wall_at,
            "source": self.source,
            "pending_jobs": self.pending_jobs,
            "pending_slots": self.pending_slots,
            "running_jobs": self.running_jobs,
            "oldest_pending_seconds": round(self.oldest_pending_seconds, 3),
            "pending_mem_mb": round(self.pending_mem_mb, 3),
            "busy_hosts": self.busy_hosts,
            "idle_hosts": self.idle_hosts,
        }


def node_state(pool_state: str, healthy: bool, announced: bool) -> str:
    """Which of NODE_STATES a node is in: the pool's phase says whether it is leaving, the
    readiness verdict whether it is ready, InstanceUp whether its setup has begun."""
    if pool_state in LEAVING_STATES:
        return "draining"
    if healthy:
        return "ready"
    return "setting_up" if announced else "booting"


def count_states(states: list[str]) -> dict[str, int]:
    """How many nodes are in each of NODE_STATES (every state present, zeros included)."""
    counts = dict.fromkeys(NODE_STATES, 0)
    for state in states:
        counts[state] += 1
    return counts
