"""A Slurm cluster's scheduler pieces against a real Slurm 22.05 (tests.harness.slurm): the
QueueSampler reading squeue and sinfo, and SlurmSide waiting for a dynamic node to join and
taking a lost one out (DOWN, then deleted), even while a job runs there.

Marked `slurm`: Slurm runs only outside the loopback-only network namespace, so these run in a
pytest run of their own (`pytest -m slurm`, as root, in the root namespace)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from actors.queue_sampler import QueueSampler
from controller.config.plugins import SlurmPlugin
from controller.config.schema import Config
from controller.messages import QueueSample
from controller.runtime.bus import Bus
from controller.slurm.slurm_side import SlurmSide
from controller.slurm.slurm_source import SlurmQueueSource
from tests.actor_runner import listen, next_of, running
from tests.harness.slurm import Slurm

pytestmark = pytest.mark.slurm
NODE = "ip-127-0-20-6"


@pytest.fixture
def node(slurm: Slurm) -> Iterator[str]:
    """NODE joined (2 CPUs, 1000 MB); afterwards no job, no slurmd and no node are left."""
    with slurm.joined_node(NODE, cpus=2, memory_mb=1000) as name:
        yield name


async def test_sampler_publishes_the_pending_jobs_cpus(slurm: Slurm, node: str):
    slurm.submit("-c", "2", "--mem=100", "--wrap", "sleep 300")  # fills the node
    slurm.wait_running(1)
    slurm.submit("-c", "2", "--mem=100", "--wrap", "sleep 300")  # waits for a node
    bus = Bus()
    samples = listen(bus, QueueSample)
    source = SlurmQueueSource(slurm.client())
    async with running(QueueSampler(config=Config(), bus=bus, source=source, poll_interval=1)):
        sample = await next_of(samples, QueueSample, within=20)
    assert sample.source == "slurm"
    assert (sample.pending_jobs, sample.pending_slots, sample.running_jobs) == (1, 2, 1)
    assert sample.busy_hosts == (node,) and sample.free_slots == 0


async def test_joined_returns_once_slurm_lists_the_node(slurm: Slurm, node: str):
    side = SlurmSide(slurm.client(), SlurmPlugin(name="slurm"), join_timeout=10)
    await side.joined(node, asyncio.sleep)


async def test_a_lost_node_leaves_slurm(slurm: Slurm, node: str):
    side = SlurmSide(slurm.client(), SlurmPlugin(name="slurm"))
    assert await side.deregister(node, asyncio.sleep) == []
    assert slurm.node_state(node) is None
    assert await side.deregister(node, asyncio.sleep) == []  # gone already: passes


async def test_a_lost_node_with_a_job_leaves_slurm_all_the_same(slurm: Slurm, node: str):
    slurm.submit("-c", "1", "--wrap", "sleep 300")
    slurm.wait_running(1)
    side = SlurmSide(slurm.client(), SlurmPlugin(name="slurm"))
    assert await side.deregister(node, asyncio.sleep) == []
    assert slurm.node_state(node) is None
