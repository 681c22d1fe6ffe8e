"""Slurm as a cluster's scheduler, without a Slurm: QueueSampler over SlurmQueueSource, and
SlurmSide's join wait and removal, with real processes standing in for Slurm's clients (through
SlurmClient's `prefix`: a shell script that answers from recorded JSON and logs every call).
The same against a real Slurm is in test_slurm_cluster.py."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from actors.queue_sampler import QueueSampler
from controller.config.plugins import SgePlugin, SlurmPlugin
from controller.config.schema import Config
from controller.gridengine.sge_side import SgeSide
from controller.messages import QueueSample, SensorLost
from controller.runtime.bus import Bus
from controller.scheduler.side import scheduler_side
from controller.scheduler.source import queue_source
from controller.slurm.slurm_client import NODE_BUSY, NODE_GONE, SlurmClient
from controller.slurm.slurm_side import SlurmJoinTimeout, SlurmSide
from controller.slurm.slurm_source import SlurmQueueSource
from tests.actor_runner import listen, next_of, running

DATA = Path(__file__).parent / "data" / "slurm"
SUBMITTED = 1796532123  # submit_time of every job in squeue_mixed.json
NODE = "ip-127-0-20-5"


def fake_slurm(tmp: Path, script: str) -> SlurmClient:
    """Slurm's clients replaced by `script` (sh; the command as $@, each call logged)."""
    log = tmp / "calls"
    body = f'echo "$*" >> {shlex.quote(str(log))}\n{script}'
    return SlurmClient(prefix=("sh", "-c", body, "sh"), timeout=5)


def calls(tmp: Path) -> list[str]:
    path = tmp / "calls"
    return path.read_text().splitlines() if path.exists() else []


ANSWERS = f"""
case "$1" in
  squeue) cat {DATA}/squeue_mixed.json ;;
  sinfo) cat {DATA}/sinfo_allocated.json ;;
esac
"""


async def test_sampler_publishes_slurm_demand_with_epoch_waits(tmp_path):
    source = SlurmQueueSource(fake_slurm(tmp_path, ANSWERS), wall_clock=lambda: SUBMITTED + 90)
    bus = Bus()
    samples = listen(bus, QueueSample)
    async with running(QueueSampler(config=Config(), bus=bus, source=source, poll_interval=5)):
        sample = await next_of(samples, QueueSample)
    assert sample.source == "slurm"
    assert (sample.pending_jobs, sample.pending_slots, sample.running_jobs) == (6, 10, 2)
    assert sample.oldest_pending_seconds == pytest.approx(90.0)
    assert sample.busy_hosts == (NODE,)


async def test_sampler_loses_the_slurm_sensor_and_says_so(tmp_path):
    said = "slurm_load_jobs error: Unable to contact slurm controller (connect failure)"
    source = SlurmQueueSource(fake_slurm(tmp_path, f"echo '{said}' >&2; exit 1"))
    bus = Bus()
    lost = listen(bus, SensorLost)
    async with running(QueueSampler(config=Config(), bus=bus, source=source, poll_interval=5)):
        first = await next_of(lost, SensorLost)
    assert first.source == "slurm"
    assert "`squeue --json` exited with 1" in first.reason
    assert "Unable to contact slurm controller" in first.reason


async def test_unreadable_slurm_output_is_a_lost_sensor(tmp_path):
    source = SlurmQueueSource(fake_slurm(tmp_path, "echo 'not json'"))
    reason = await source.read(0.0)
    assert isinstance(reason, str) and reason.startswith("unreadable Slurm output: squeue")


async def no_wait(seconds: float) -> None:
    return None


async def test_joined_once_sinfo_lists_the_node(tmp_path):
    # The node appears at the third sinfo.
    script = f"""
n=$(grep -c sinfo {tmp_path}/calls)
if [ "$n" -ge 3 ]; then cat {DATA}/sinfo_allocated.json; else echo '{{"nodes": []}}'; fi
"""
    side = SlurmSide(fake_slurm(tmp_path, script), SlurmPlugin(name="slurm"))
    await side.joined(NODE, no_wait)
    assert calls(tmp_path) == ["sinfo --json"] * 3


async def test_a_node_that_never_joins_fails_its_setup_with_the_reason(tmp_path):
    side = SlurmSide(
        fake_slurm(tmp_path, """echo '{"nodes": []}'"""), SlurmPlugin(name="s"), join_timeout=3
    )
    with pytest.raises(SlurmJoinTimeout, match="Slurm does not list the node after 3s") as info:
        await side.joined(NODE, no_wait)
    assert "MaxNodeCount" in str(info.value)
    assert len(calls(tmp_path)) == 4


async def test_a_lost_node_is_set_down_then_deleted(tmp_path):
    side = SlurmSide(fake_slurm(tmp_path, ""), SlurmPlugin(name="s"))
    assert await side.deregister(NODE, no_wait) == []
    assert calls(tmp_path) == [
        f"scontrol update nodename={NODE} state=down reason=controller: instance removed",
        f"scontrol delete nodename={NODE}",
    ]


async def test_a_node_slurm_does_not_have_passes_at_once(tmp_path):
    script = f'echo "{NODE_GONE}" >&2; exit 1'
    side = SlurmSide(fake_slurm(tmp_path, script), SlurmPlugin(name="s"))
    assert await side.deregister(NODE, no_wait) == []
    assert len(calls(tmp_path)) == 1


async def test_delete_is_tried_again_while_jobs_complete(tmp_path):
    # delete answers busy twice (the jobs of a node set DOWN are still completing), then works.
    script = f"""
[ "$2" = delete ] || exit 0
[ "$(grep -c delete {tmp_path}/calls)" -ge 3 ] && exit 0
echo "delete_node: {NODE_BUSY}" >&2; exit 1
"""
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    side = SlurmSide(fake_slurm(tmp_path, script), SlurmPlugin(name="s"))
    assert await side.deregister(NODE, sleep) == []
    assert slept == [1.0, 2.0]


async def test_delete_that_keeps_failing_names_the_node_and_what_to_do(tmp_path):
    script = f"""
[ "$2" = delete ] || exit 0
echo "delete_node: {NODE_BUSY}" >&2; exit 1
"""
    side = SlurmSide(fake_slurm(tmp_path, script), SlurmPlugin(name="s"))
    [failure] = await side.deregister(NODE, no_wait)
    assert failure.startswith(f"delete {NODE} from Slurm: `scontrol delete nodename={NODE}`")
    assert failure.endswith(f"delete it later with `scontrol delete nodename={NODE}`")


def test_the_plugins_pick_the_scheduler_and_its_queue():
    slurm = scheduler_side([SlurmPlugin(name="s", conf_server="head-1:6817")])
    assert isinstance(slurm, SlurmSide) and slurm.head_host() == "head-1"
    assert isinstance(queue_source(slurm), SlurmQueueSource)
    sge = scheduler_side([SgePlugin(name="g")])
    assert isinstance(sge, SgeSide) and queue_source(sge).name == "sge"
    assert scheduler_side([]) is None
