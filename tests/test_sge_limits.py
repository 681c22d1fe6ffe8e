"""Against a real Grid Engine 8.1.9 (tests.harness.gridengine): the h_rt of running jobs, read
from live qstat output into QueueSample.running_limits, and a launch the policy spares because a
running job's limit ends within a boot. (tests/data/sge/qstat_f_r_h_rt.xml was recorded the same
way.) Only the head runs jobs here, so it stands for a busy node."""

from __future__ import annotations

import time

import pytest

from controller.gridengine.sge import parse_qstat
from controller.gridengine.sge_source import SgeQueueSource
from controller.messages import QueueSample
from controller.policy.queue_policy import Node, QueueInput, QueuePolicy
from tests.harness.gridengine import SLOTS, GridEngine

pytestmark = [pytest.mark.timeout(90)]


def qsub(ge: GridEngine, *args: str) -> str:
    out = ge.run("qsub", "-terse", "-b", "y", "-o", "/dev/null", "-e", "/dev/null", *args)
    return out.stdout.strip()


def wait_running(ge: GridEngine, jobs: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if len(parse_qstat(ge.run("qstat", "-f", "-xml", "-u", "*").stdout).running) >= jobs:
            return
        time.sleep(0.2)
    raise AssertionError(f"no {jobs} job(s) running on the head within 30s")


async def read(ge: GridEngine) -> QueueSample:
    sample = await SgeQueueSource(ge.client()).read(at=0.0)
    assert isinstance(sample, QueueSample), sample
    return sample


async def test_live_h_rt_gives_the_time_left_and_spares_a_launch(ge: GridEngine):
    assert SLOTS == 2  # the head's two slots: both taken by jobs with a limit
    ten_minutes = qsub(ge, "-l", "h_rt=0:10:0", "sleep", "600")
    one_minute = qsub(ge, "-l", "h_rt=60", "sleep", "600")
    wait_running(ge, 2)
    qsub(ge, "sleep", "600")  # no limit: it waits for a slot
    sample = await read(ge)

    left = dict(sample.running_limits)
    assert set(left) == {ten_minutes, one_minute}
    assert 600 - 30 < left[ten_minutes] <= 600
    assert 60 - 30 < left[one_minute] <= 60
    assert sample.pending_jobs == 1

    # The head as the cluster's one busy node: the job that ends within a minute frees the slot
    # the waiting job needs before a new node could boot, so nothing is launched.
    head = Node(instance_id="i-head", hostname=ge.master_host, launched_at=0.0, ready=True)
    inp = QueueInput(now=0.0, sample=sample, nodes=(head,))
    spared = QueuePolicy(min_nodes=0, max_nodes=4, node_slots=SLOTS, hold_seconds=0.0)
    d = spared.decide(inp)
    assert (d.desired, d.launch) == (2, 0)
    assert "1 slot(s) freed by time limits within a boot" in d.reason
    # With a boot too short for that limit to end first, the node is launched.
    quick = QueuePolicy(
        min_nodes=0, max_nodes=4, node_slots=SLOTS, hold_seconds=0.0, limit_horizon=20.0
    )
    assert quick.decide(inp).launch == 1
