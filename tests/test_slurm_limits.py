"""Against a real Slurm 22.05 (tests.harness.slurm): the time limits of running jobs, read from
live `squeue --json` into QueueSample.running_limits, and the policy's launch with them.

Marked `slurm`: Slurm runs only outside the loopback-only network namespace, so these run in a
pytest run of their own (`pytest -m slurm`, as root, in the root namespace)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from controller.messages import QueueSample
from controller.policy.queue_policy import Node, QueueInput, QueuePolicy
from controller.slurm.slurm_source import SlurmQueueSource
from tests.harness.slurm import Slurm

pytestmark = pytest.mark.slurm
NODE = "ip-127-0-20-5"
CPUS = 2


@pytest.fixture
def node(slurm: Slurm) -> Iterator[str]:
    """NODE joined (2 CPUs, 1000 MB); afterwards no job, no slurmd and no node are left."""
    with slurm.joined_node(NODE, cpus=CPUS, memory_mb=1000) as name:
        yield name


async def test_live_time_limits_give_the_time_left(slurm: Slurm, node: str):
    limited = slurm.submit("-c", "1", "--mem=300", "--time=5", "--wrap", "sleep 300")
    slurm.submit("-c", "1", "--mem=300", "--wrap", "sleep 300")  # no limit
    slurm.wait_running(2)
    slurm.submit("-c", "1", "--mem=300", "--wrap", "sleep 300")  # waits: Resources
    sample = await SlurmQueueSource(slurm.client()).read(at=0.0)
    assert isinstance(sample, QueueSample), sample
    assert sample.running_jobs == 2 and sample.pending_jobs == 1
    assert [job for job, _ in sample.running_limits] == [limited]
    assert 300 - 30 < sample.running_limits[0][1] <= 300

    # NODE busy, a job waiting for its CPU: 5 minutes is beyond a boot, so a node is launched;
    # with a horizon past the limit, the CPU it frees serves the job instead.
    busy = Node(instance_id="i-1", hostname=node, launched_at=0.0, ready=True)
    inp = QueueInput(now=0.0, sample=sample, nodes=(busy,))
    kw = {"min_nodes": 0, "max_nodes": 4, "node_slots": CPUS, "hold_seconds": 0.0}
    assert QueuePolicy(**kw).decide(inp).launch == 1
    d = QueuePolicy(**kw, limit_horizon=400.0).decide(inp)
    assert (d.desired, d.launch) == (2, 0)
    assert "1 slot(s) freed by time limits within a boot" in d.reason
