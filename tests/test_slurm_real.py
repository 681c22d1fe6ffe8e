"""controller.slurm against a real Slurm 22.05 (tests.harness.slurm): real jobs read into a
QueueSample, and a dynamic node drained, checked and deleted, or kept while a job runs there.

Marked `slurm`: Slurm runs only outside the loopback-only network namespace, so these run in a
pytest run of their own (`pytest -m slurm`, as root, in the root namespace)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from controller.slurm.slurm_queue import parse_sinfo, parse_squeue, queue_sample
from controller.slurm.slurm_release import release_node
from tests.harness.slurm import Slurm

pytestmark = pytest.mark.slurm
NODE = "ip-127-0-20-5"


@pytest.fixture
def node(slurm: Slurm) -> Iterator[str]:
    """NODE joined (2 CPUs, 1000 MB); afterwards no job, no slurmd and no node are left."""
    with slurm.joined_node(NODE, cpus=2, memory_mb=1000) as name:
        yield name


async def test_real_jobs_are_read_into_a_queue_sample(slurm: Slurm, node: str):
    slurm.submit("-c", "1", "--mem=300", "--wrap", "sleep 300")  # runs
    slurm.submit("-c", "1", "--mem=300", "-a", "1-3", "--wrap", "sleep 300")  # task 1 runs
    slurm.wait_running(2)
    slurm.submit("-c", "2", "--mem-per-cpu=200", "--wrap", "sleep 300")  # waits: Resources
    slurm.submit("-H", "--wrap", "sleep 300")  # held: new nodes would not start it
    client = slurm.client()
    jobs = parse_squeue(await client.squeue())
    nodes = parse_sinfo(await client.sinfo())
    sample = queue_sample(jobs, nodes, at=1.0, now=time.time())
    assert sample.source == "slurm"
    assert sample.running_jobs == 2
    assert sample.pending_jobs == 2 + 1
    assert sample.pending_slots == 2 * 1 + 2
    assert sample.pending_mem_mb == pytest.approx(2 * 300 + 2 * 200)
    assert sample.busy_hosts == (node,) and sample.idle_hosts == ()
    assert sample.free_slots == 0
    assert 0 <= sample.oldest_pending_seconds < 600


async def test_idle_node_is_drained_then_deleted(slurm: Slurm, node: str):
    release = await release_node(slurm.client(), node)
    assert release.released and release.failures == []
    assert slurm.node_state(node) is None


async def test_busy_node_is_kept_and_resumed(slurm: Slurm, node: str):
    job = slurm.submit("-c", "1", "--wrap", "sleep 300")
    slurm.wait_running(1)
    release = await release_node(slurm.client(), node)
    assert not release.released
    assert f"CPU(s) in use on {node}" in release.reason
    assert "DRAIN" not in slurm.node_state(node)
    slurm.run("scancel", job)
    slurm.cancel_all()
    assert (await release_node(slurm.client(), node)).released
    assert slurm.node_state(node) is None


async def test_node_drained_by_the_operator_stays_drained_when_kept(slurm: Slurm, node: str):
    slurm.submit("-c", "1", "--wrap", "sleep 300")
    slurm.wait_running(1)
    slurm.run("scontrol", "update", f"nodename={node}", "state=drain", "reason=operator")
    release = await release_node(slurm.client(), node)
    assert not release.released and "stays drained" in release.reason
    assert "DRAIN" in slurm.node_state(node)
    reason = slurm.run("sinfo", "-h", "-N", "-n", node, "-o", "%E").stdout.strip()
    assert reason == "operator"


async def test_node_slurm_does_not_have_passes(slurm: Slurm):
    release = await release_node(slurm.client(), "ip-127-0-20-9")
    assert release.released and release.failures == []
