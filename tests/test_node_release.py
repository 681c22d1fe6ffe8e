"""The node pool (SpotPool with the node profile, as `run --cluster` builds it: confirm_release)
terminates a node chosen for scale-in only once ClusterNodeSetup released it, in fake loop time
against SimCloud. The test plays ClusterNodeSetup's answers (NodeReleased / NodeKept); what
ClusterNodeSetup does on the real Grid Engine is in test_sge_release.py.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from actors.spot_pool import SpotPool
from controller.cloud.simcloud import SimCloud
from controller.messages import (
    Decision,
    InstanceDown,
    InstanceId,
    LostReason,
    NodeKept,
    NodeReleased,
    NodeSetupFailed,
    SecurityGroupReady,
)
from controller.policy.pool_profile import NodeProfile
from controller.policy.queue_policy import QueuePolicy
from controller.policy.release_plans import RELEASE_GRACE
from controller.runtime.bus import Bus
from tests.actor_runner import listen, running
from tests.test_node_pool import KEY, WALL, Cluster, cluster_config, hostname, now, until

pytestmark = [pytest.mark.timeout(30)]
looptime = pytest.mark.looptime(end=5000)


class ConfirmingCluster(Cluster):
    """test_node_pool's Cluster, with the pool `run --cluster` runs."""

    def __init__(self, **cluster: Any) -> None:
        loop = asyncio.get_running_loop()
        config, section = cluster_config(**cluster)
        self.sim = SimCloud(clock=loop.time, boot_seconds=5.0, boot_spread=0.0, wall_offset=WALL)
        self.bus = Bus()
        self.out = listen(self.bus, InstanceDown, Decision)
        self.history: list[Any] = []
        self.pool = SpotPool(
            config=config,
            bus=self.bus,
            cloud=self.sim,
            policy=QueuePolicy.for_cluster(config, section),
            profile=NodeProfile(config, section, head_public_key=KEY),
            wall_clock=lambda: loop.time() + WALL,
            confirm_release=True,
        )
        self.bus.publish(SecurityGroupReady(at=0.0, group_id="sg-nodes", created=True))

    def answer(self, kind: type, inst: Any, **fields: Any) -> None:
        self.bus.publish(
            kind(
                at=now(),
                instance_id=InstanceId(inst.instance_id),
                address=inst.private_ip,
                **fields,
            )
        )

    def live_ids(self) -> set[str]:
        return {i.instance_id for i in self.live()}


async def two_nodes_one_idle(c: ConfirmingCluster) -> tuple[Any, Any]:
    """Nodes a (busy) and b (idle from the 20 s cycle: chosen at 50, idle_seconds = 30)."""
    c.queue(pending=2)
    await until(15)
    a, b = c.live()
    c.ready(a, b)
    c.queue(busy=(hostname(a),), idle=(hostname(b),))
    await until(55)
    downs = await c.seen(InstanceDown)
    assert [(d.at, d.instance_id, d.reason) for d in downs] == [
        (50.0, b.instance_id, LostReason.SCALE_IN)
    ]
    return a, b


@looptime
async def test_a_node_given_a_job_since_the_sample_is_kept_and_one_released_goes() -> None:
    c = ConfirmingCluster()
    async with running(c.pool):
        a, b = await two_nodes_one_idle(c)
        assert c.live_ids() == {a.instance_id, b.instance_id}  # not terminated on the choice
        c.answer(NodeKept, b, reason="1 slot(s) in use on it after all.q@... was disabled")
        await until(58)
        assert c.pool.pool.removals_dropped == 1
        members = {m.instance_id: m for m in c.pool.pool.members()}
        assert members[b.instance_id].ready and not members[b.instance_id].draining
        # Back in service, and not chosen again on the sample that chose it (taken before
        # Grid Engine said busy), however many cycles that sample stays the newest.
        await until(75)
        assert len(await c.seen(InstanceDown)) == 1
        # A newer sample still shows b idle: the policy's idle clock started afresh at the 60
        # cycle, so b is chosen again at 90, and goes once Grid Engine released it.
        c.queue(busy=(hostname(a),), idle=(hostname(b),))
        await until(85)
        assert len(await c.seen(InstanceDown)) == 1
        await until(95)
        assert [d.at for d in await c.seen(InstanceDown)] == [50.0, 90.0]
        assert c.live_ids() == {a.instance_id, b.instance_id}
        c.answer(NodeReleased, b)
        await until(96)
        assert c.live_ids() == {a.instance_id}
        assert c.pool.pool.removals_dropped == 1


@looptime
async def test_without_an_answer_the_node_is_kept() -> None:
    c = ConfirmingCluster()
    async with running(c.pool):
        a, b = await two_nodes_one_idle(c)
        await until(50 + RELEASE_GRACE - 1)
        assert c.live_ids() == {a.instance_id, b.instance_id}
        members = {m.instance_id: m for m in c.pool.pool.members()}
        assert members[b.instance_id].draining
        await until(50 + RELEASE_GRACE + 1)
        assert c.live_ids() == {a.instance_id, b.instance_id}
        assert c.pool.pool.removals_dropped == 1
        members = {m.instance_id: m for m in c.pool.pool.members()}
        assert members[b.instance_id].ready and not members[b.instance_id].draining


@looptime
async def test_a_late_or_repeated_answer_changes_nothing() -> None:
    c = ConfirmingCluster()
    async with running(c.pool):
        a, b = await two_nodes_one_idle(c)
        c.answer(NodeReleased, b)
        await until(56)
        assert c.live_ids() == {a.instance_id}
        c.answer(NodeKept, b, reason="late")  # about a node already ended
        c.answer(NodeReleased, a)  # about a node never chosen
        await until(70)
        assert c.live_ids() == {a.instance_id}
        assert c.pool.pool.removals_dropped == 0


@looptime
async def test_a_failed_setup_ends_the_node_without_asking() -> None:
    c = ConfirmingCluster()
    c.queue(pending=1)
    async with running(c.pool):
        await until(15)
        (node,) = c.live()
        c.answer(NodeSetupFailed, node, step="ssh", reason="refused")
        await until(16)
        assert node.instance_id not in c.live_ids()
