"""A batch node chosen for scale-in is terminated only on Grid Engine's word (FleetReconciler's).

The policy chooses idle nodes on the newest queue sample, which may be older than Grid Engine's
last dispatch: a node idle in the sample may have been given a job since. With `confirm_release`
(the daemon's node pool, where ClusterNodeSetup answers), a scale-in announces the node down
(InstanceDown) as before, but it is terminated only once ClusterNodeSetup says it disabled the
node's queue, found it empty and took it out of Grid Engine (NodeReleased). NodeKept (it runs a
job after all, or Grid Engine could not tell) puts it back in service: the decision is dropped,
noted and counted (`removals_dropped`), and the policy starts its idle clock afresh; until a
queue sample newer than that answer arrives, the node is not chosen again (the same stale
sample would only choose it again, cycle after cycle). No answer
within RELEASE_GRACE is taken as kept too: a busy node is never ended on a guess. Other reasons
(a failed setup, a spot warning, teardown) end the node without asking.
"""

from __future__ import annotations

from typing import Any

from controller.messages import LostReason, NodeKept, NodeReleased
from controller.policy.fleet_plans import Tracked
from controller.policy.lifecycle import Phase

# What ClusterNodeSetup answers about a node announced down for scale-in.
RELEASE_NEWS = (NodeReleased, NodeKept)
# Far more than the few Grid Engine calls a release takes, even queued behind other nodes'.
RELEASE_GRACE = 300.0


class ReleasePlans:
    """FleetReconciler's part that waits for a scale-in's release (it owns the state)."""

    tracked: dict[Any, Tracked]
    confirm_release: bool = False
    sample: Any  # the newest queue sample (FleetReconciler's)
    removals_dropped: int = 0  # scale-ins dropped: the node had a job when looked at again

    def _await_release(self, t: Tracked, reason: LostReason) -> None:
        """Called as `t` drains: a scale-in waits for NodeReleased (at most RELEASE_GRACE)."""
        if not self.confirm_release or reason is not LostReason.SCALE_IN or self.dry_run:
            return
        t.awaiting_release = True
        t.drain_until = self.now() + RELEASE_GRACE

    def _release_news(self, msg: NodeReleased | NodeKept) -> None:
        t = self.tracked.get(msg.instance_id)
        if t is None or not t.awaiting_release or t.phase is not Phase.DRAINING:
            return  # not waiting (a second answer, or a node gone meanwhile)
        t.awaiting_release = False
        if isinstance(msg, NodeKept):
            self._keep(t, msg.reason)
            return
        t.drain_until = self.now()
        self.note("info", "node.released", instance_id=t.instance_id)

    def _unanswered(self, due: list[Tracked]) -> list[Tracked]:
        """`due` less the scale-ins whose release never came: those are kept."""
        late = [t for t in due if t.awaiting_release]
        for t in late:
            t.awaiting_release = False
            self._keep(t, f"no word from Grid Engine within {RELEASE_GRACE:g}s")
        return [t for t in due if t not in late]

    def _kept_since_sample(self, t: Tracked, reason: LostReason) -> bool:
        """Kept by Grid Engine after the newest sample was taken: that sample cannot remove it."""
        if reason is not LostReason.SCALE_IN or t.kept_at is None:
            return False
        sample = self.sample
        return sample is None or sample.at <= t.kept_at

    def _keep(self, t: Tracked, why: str) -> None:
        self.removals_dropped += 1
        t.kept_at = self.now()
        t.drain_until = None
        t.down_reason = None
        self._move(t, Phase.READY)
        self.urgent = True  # decide again with it counted
        self.note(
            "warning",
            "node.removal_dropped",
            instance_id=t.instance_id,
            why=why,
            dropped=self.removals_dropped,
        )
