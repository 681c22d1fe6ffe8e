"""SpotPool with the node profile (a batch cluster's pool), in fake loop time against SimCloud,
and the node profile's launch settings.

The test plays QueueSampler (QueueSample / SensorLost(source="sge")), FirewallKeeper
(SecurityGroupReady) and ClusterNodeSetup (NodeReady / NodeSetupFailed). Cycles come every POLL
seconds from t=0; messages are published between cycles (t = x5).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from actors.spot_pool import SpotPool
from controller.cloud.sim_records import SimInstance
from controller.cloud.simcloud import SimCloud
from controller.config.schema import (
    ClusterSection,
    Config,
    ControllerSection,
    MasterSection,
    ScalingSection,
    VolumeSection,
)
from controller.messages import (
    Decision,
    DrainSlave,
    InstanceDown,
    InstanceId,
    InstanceUp,
    LostReason,
    NodeReady,
    NodeSetupFailed,
    QueueSample,
    Role,
    SecurityGroupReady,
    SensorLost,
)
from controller.policy.pool_profile import NodeProfile, node_user_data
from controller.policy.queue_policy import QueuePolicy
from controller.runtime.bus import Bus, Mailbox
from tests.actor_runner import listen, running

pytestmark = [pytest.mark.timeout(30)]
looptime = pytest.mark.looptime(end=5000)

FLEET = "cluster-t"
POLL = 10.0
WALL = 1_700_000_000.0
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIH0test head@example"


def cluster_config(**cluster: Any) -> tuple[Config, ClusterSection]:
    defaults: dict[str, Any] = {
        "image_id": "ami-0123456789abcdef0",
        "node_instance_types": ("m5.xlarge",),
        "min_nodes": 0,
        "max_nodes": 4,
        "idle_seconds": 30.0,
        "volumes": ("build", "results", "data"),
    }
    section = ClusterSection(name="small", **(defaults | cluster))
    config = Config(
        controller=ControllerSection(fleet=FLEET, on_exit="teardown"),
        master=MasterSection(poll_interval=POLL),
        scaling=ScalingSection(request_timeout=1000.0),
        clusters=(section,),
        volumes=(
            VolumeSection(name="build", snapshot_id="snap-build", mount_path="/segway-build"),
            VolumeSection(name="results", volume_id="vol-shared", mount_path="/results"),
            VolumeSection(name="data", snapshot_id="snap-data", mount_path="/segway-data"),
        ),
    )
    return config, section


def now() -> float:
    return asyncio.get_running_loop().time()


async def until(t: float) -> None:
    assert t >= now(), f"the test is already at {now()}, past {t}"
    await asyncio.sleep(t - now())


def hostname(inst: SimInstance) -> str:
    return "ip-" + inst.private_ip.replace(".", "-")


class Cluster:
    def __init__(self, **cluster: Any) -> None:
        loop = asyncio.get_running_loop()
        config, section = cluster_config(**cluster)
        self.sim = SimCloud(clock=loop.time, boot_seconds=5.0, boot_spread=0.0, wall_offset=WALL)
        self.bus = Bus()
        self.out: Mailbox[Any] = listen(self.bus, InstanceUp, InstanceDown, DrainSlave, Decision)
        self.history: list[Any] = []
        self.pool = SpotPool(
            config=config,
            bus=self.bus,
            cloud=self.sim,
            policy=QueuePolicy.for_cluster(config, section),
            profile=NodeProfile(config, section, head_public_key=KEY),
            wall_clock=lambda: loop.time() + WALL,
        )
        self.bus.publish(SecurityGroupReady(at=0.0, group_id="sg-nodes", created=True))

    def queue(self, pending: int = 0, busy: tuple[str, ...] = (), idle: tuple[str, ...] = ()):
        self.bus.publish(
            QueueSample(
                at=now(),
                pending_jobs=pending,
                pending_slots=pending,
                running_jobs=len(busy),
                oldest_pending_seconds=0.0,
                busy_hosts=busy,
                idle_hosts=idle,
            )
        )

    def ready(self, *instances: SimInstance) -> None:
        for inst in instances:
            self.bus.publish(
                NodeReady(
                    at=now(),
                    instance_id=InstanceId(inst.instance_id),
                    address=inst.private_ip,
                    hostname=hostname(inst),
                )
            )

    async def seen(self, kind: type) -> list[Any]:
        while len(self.out):
            self.history.append(await self.out.get())
        return [m for m in self.history if isinstance(m, kind)]

    def live(self) -> list[SimInstance]:
        return [i for i in self.sim.live() if i.fleet == FLEET]


@looptime
async def test_the_queue_launches_nodes_that_are_announced_as_nodes() -> None:
    c = Cluster()
    c.queue(pending=3)
    async with running(c.pool):
        await until(15)
        nodes = c.live()
        assert len(nodes) == 3 and {n.role for n in nodes} == {Role.NODE}
        assert {n.security_groups for n in nodes} == {("sg-nodes",)}
        ups = await c.seen(InstanceUp)
        assert {(u.at, u.role) for u in ups} == {(10.0, Role.NODE)}
        decision = (await c.seen(Decision))[0]
        assert (decision.load_rps, decision.desired, decision.launch) == (3.0, 3, 3)
        await until(95)
        assert len(c.live()) == 3  # booting nodes count: no second launch


@looptime
async def test_a_failed_setup_is_taken_down_and_replaced() -> None:
    c = Cluster()
    c.queue(pending=1)
    async with running(c.pool):
        await until(15)
        (node,) = c.live()
        c.bus.publish(
            NodeSetupFailed(
                at=now(),
                instance_id=InstanceId(node.instance_id),
                address=node.private_ip,
                step="ssh",
                reason="refused",
            )
        )
        await until(16)
        downs = await c.seen(InstanceDown)
        assert [(d.instance_id, d.reason) for d in downs] == [
            (node.instance_id, LostReason.UNREACHABLE)
        ]
        await until(25)
        (replacement,) = c.live()
        assert replacement.instance_id != node.instance_id
        assert await c.seen(DrainSlave) == []  # a node leaves Grid Engine, not renderfarm.conf


@looptime
async def test_idle_nodes_leave_after_idle_seconds_and_a_lost_queue_holds() -> None:
    c = Cluster()
    c.queue(pending=2)
    async with running(c.pool):
        await until(15)
        a, b = c.live()
        c.ready(a, b)
        c.queue(busy=(hostname(a),), idle=(hostname(b),))
        await until(45)  # b idle from the 20 cycle; 30 s later is the 50 cycle
        assert len(c.live()) == 2
        c.bus.publish(SensorLost(at=now(), since=now(), reason="x", source="apache"))
        await until(55)  # another source's outage changes nothing: b goes at 50
        assert [i.instance_id for i in c.live()] == [a.instance_id]
        downs = await c.seen(InstanceDown)
        assert (downs[0].at, downs[0].instance_id, downs[0].reason) == (
            50.0,
            b.instance_id,
            LostReason.SCALE_IN,
        )
        # The queue sensor is lost: a, idle now, is held however long it lasts.
        c.bus.publish(SensorLost(at=now(), since=now(), reason="qstat", source="sge"))
        await until(500)
        assert [i.instance_id for i in c.live()] == [a.instance_id]
        reasons = {d.reason for d in await c.seen(Decision) if d.at > 55}
        assert reasons == {"queue sensor lost: holding 1 node(s)"}


@looptime
async def test_teardown_announces_nodes_down_before_terminating() -> None:
    c = Cluster()
    c.queue(pending=2)
    order: list[str] = []
    c.bus.listen(lambda m: order.append("down") if isinstance(m, InstanceDown) else None)
    terminate = c.sim.terminate

    async def recording_terminate(ids, *, dry_run=False):
        order.append("terminate")
        return await terminate(ids, dry_run=dry_run)

    c.sim.terminate = recording_terminate  # type: ignore[method-assign]
    async with running(c.pool):
        await until(15)
        assert len(c.live()) == 2
    assert c.live() == []
    assert order[:3] == ["down", "down", "terminate"]


@looptime
async def test_a_reload_resizes_the_running_cluster() -> None:
    c = Cluster(max_nodes=2)
    c.queue(pending=4)
    async with running(c.pool):
        await until(15)
        assert len(c.live()) == 2  # max_nodes caps the queue's 4
        config, _ = cluster_config(max_nodes=4, node_instance_types=("c5.xlarge",))
        c.pool.reconfigure(config)
        await until(25)
        nodes = c.live()
        assert len(nodes) == 4
        assert sorted(n.instance_type for n in nodes) == ["c5.xlarge"] * 2 + ["m5.xlarge"] * 2
        c.ready(*nodes)
        c.queue(busy=(hostname(nodes[0]),), idle=tuple(hostname(n) for n in nodes[1:]))
        # max_nodes lowered below the fleet: the surplus goes at once, the busy node stays.
        config, _ = cluster_config(max_nodes=1)
        c.pool.reconfigure(config)
        await until(35)
        assert [n.instance_id for n in c.live()] == [nodes[0].instance_id]


def test_node_launch_settings_map_snapshots_in_volume_order_and_install_the_head_key() -> None:
    config, section = cluster_config(spot_bid=0.26, subnet="subnet-1", availability_zone="z")
    launch = NodeProfile(config, section, head_public_key=KEY).launch_settings()
    # build -> /dev/sdf, data -> /dev/sdg (the shared NFS volume takes no device), as
    # controller.gridengine.node_volumes mounts them.
    assert launch.snapshots == ("snap-build", "snap-data")
    assert (launch.instance_types, launch.image_id, launch.spot_bid) == (
        ("m5.xlarge",),
        "ami-0123456789abcdef0",
        0.26,
    )
    assert (launch.subnet, launch.availability_zone, launch.key_name) == ("subnet-1", "z", "")
    assert launch.user_data == node_user_data(KEY, "root")
    assert launch.user_data.startswith("#!/bin/sh\n")
    assert f"'{KEY}'" in launch.user_data and "authorized_keys" in launch.user_data
    assert NodeProfile(config, section).launch_settings().user_data == ""
    with pytest.raises(ValueError, match="one OpenSSH public key line"):
        node_user_data(KEY + "\n" + KEY)
