"""QueueSampler and the sge plugin against a real Grid Engine 8.1.9 (tests.harness.gridengine).

The Grid Engine runs in its own network namespace; every client call goes through
`ip netns exec`, which SgeClient takes as its command prefix. The "node" registered is an sshd on
127.0.20.5, which the namespace's hosts file names ip-127-0-20-5, as EC2 would.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from actors.cluster_node_setup import ClusterNodeSetup
from actors.queue_sampler import QueueSampler
from controller.config.reader import parse_config
from controller.config.schema import Config
from controller.gridengine.sge import format_memory, list_names
from controller.gridengine.sge_client import SgeClient, SgeError
from controller.messages import (
    InstanceDown,
    InstanceId,
    InstanceUp,
    LostReason,
    NodeKept,
    NodeReady,
    NodeReleased,
    NodeSetupFailed,
    QueueSample,
    Role,
    SensorLost,
)
from controller.runtime.bus import Bus
from tests.actor_runner import listen, next_of, running
from tests.harness.gridengine import MASTER_MEMORY, GridEngine
from tests.harness.sshd import Sshd

NODE = "ip-127-0-20-5"


@pytest.fixture
def bus() -> Bus:
    return Bus()


def qsub(ge: GridEngine, *args: str) -> None:
    ge.run("qsub", "-b", "y", "-o", "/dev/null", "-e", "/dev/null", *args)


async def test_queue_sampler_reports_the_waiting_demand(ge: GridEngine, bus: Bus):
    # The master offers 2 slots and mem_requested=2G: the first 1500M job runs, and then
    # nothing else fits (548M left).
    qsub(ge, "-N", "runs", "-l", "mem_requested=1500M", "sleep", "60")
    qsub(ge, "-l", "mem_requested=1500M", "sleep", "60")
    qsub(ge, "-l", "mem_requested=1500M", "sleep", "60")
    qsub(ge, "-t", "1-3", "-l", "mem_requested=1G", "sleep", "60")
    qsub(ge, "-h", "true")  # held: no node would start it
    samples = listen(bus, QueueSample, SensorLost)
    sampler = QueueSampler(config=Config(), bus=bus, client=ge.client(), poll_interval=0.3)
    async with running(sampler):
        async with asyncio.timeout(20):
            while (sample := await next_of(samples, QueueSample)).running_jobs < 1:
                pass
    assert sample.source == "sge"
    assert sample.running_jobs == 1
    assert sample.pending_jobs == 2 + 3
    assert sample.pending_slots == 5
    assert sample.pending_mem_mb == pytest.approx(2 * 1500 + 3 * 1024)
    assert 0.0 <= sample.oldest_pending_seconds < 60
    assert sample.busy_hosts == (ge.master_host,)
    assert sample.idle_hosts == ()


async def test_queue_sampler_reports_a_lost_qmaster_and_recovers(ge: GridEngine, bus: Bus):
    client = ge.client(timeout=5)
    client.cell = "no-such-cell"  # qstat cannot find the qmaster
    events = listen(bus, QueueSample, SensorLost)
    async with running(QueueSampler(config=Config(), bus=bus, client=client, poll_interval=0.5)):
        lost = await next_of(events, SensorLost, within=10)
        again = await next_of(events, SensorLost, within=10)
        client.cell = ge.env["SGE_CELL"]
        back = await next_of(events, QueueSample, within=10)
    assert lost.source == "sge" and again.since == lost.since
    assert "qstat -f -xml -r -u *" in lost.reason and "exited with" in lost.reason
    assert back.idle_hosts == (ge.master_host,)


async def test_missing_clients_are_named():
    client = SgeClient(bin_dir="/nonexistent/bin")
    with pytest.raises(SgeError, match="/nonexistent/bin/qstat not found"):
        await client.qstat_jobs()


def registered(ge: GridEngine, host: str) -> dict[str, bool]:
    queue = ge.run("qconf", "-sq", "all.q").stdout
    hostlist = next(line for line in queue.splitlines() if line.startswith("hostlist"))
    return {
        "exec": host in list_names(ge.run("qconf", "-sel", check=False).stdout),
        "admin": host in list_names(ge.run("qconf", "-sh").stdout),
        "submit": host in list_names(ge.run("qconf", "-ss").stdout),
        "all.q": host in hostlist.split()[1:],
    }


def memory_of_this_machine() -> str:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return format_memory(int(line.split()[1]) * 1024)
    raise AssertionError("no MemTotal in /proc/meminfo")


async def test_sge_plugin_registers_an_ec2_named_node_and_removes_it(
    ge: GridEngine, sshd_factory: Callable[..., Sshd], tmp_path: Path, bus: Bus
):
    master = ge.master_host
    complexes = ge.run("qconf", "-sc").stdout
    # Start from a cell without the consumable, as after a plain Grid Engine install.
    ge.run("qconf", "-rattr", "exechost", "complex_values", "NONE", master)
    ge.run_with_file(
        "qconf",
        "-Mc",
        text="".join(f"{ln}\n" for ln in complexes.splitlines() if "mem_requested" not in ln),
    )
    sshd = sshd_factory(address="127.0.20.5")
    config = parse_config(
        {
            "cluster": {
                "segway": {
                    "ssh_key_file": str(sshd.client_key_path),
                    "ssh_port": sshd.port,
                    "plugins": ["sge"],
                }
            },
            "plugin": {
                "sge": {
                    "kind": "sge",
                    "sge_root": str(ge.sge_root),
                    "cell": ge.env["SGE_CELL"],
                    "head_is_exec_host": False,
                    "start_execd": False,  # the node is this machine, whose execd already runs
                }
            },
        },
        "test.toml",
    )
    actor = ClusterNodeSetup(
        config=config,
        cluster=config.clusters[0],
        bus=bus,
        known_hosts_path=tmp_path / "known_hosts",
        sge=ge.client(),
        ssh_user=sshd.username,
    )
    events = listen(bus, NodeReady, NodeSetupFailed, NodeReleased, NodeKept)
    try:
        async with running(actor):
            bus.publish(
                InstanceUp(
                    at=0.0, instance_id=InstanceId("i-0005"), address="127.0.20.5", role=Role.NODE
                )
            )
            ready = await next_of(events, NodeReady, within=30)
            assert ready.hostname == NODE
            assert registered(ge, NODE) == dict.fromkeys(("exec", "admin", "submit", "all.q"), True)
            host = ge.run("qconf", "-se", NODE).stdout
            assert f"complex_values        mem_requested={memory_of_this_machine()}" in host
            consumable = next(
                ln.split()
                for ln in ge.run("qconf", "-sc").stdout.splitlines()
                if ln.startswith("mem_requested ")
            )
            assert consumable[2:6] == ["MEMORY", "<=", "YES", "YES"]
            # head_is_exec_host = false: the head runs no job, but stays in the queue so that
            # jobs are accepted while no node is up
            assert registered(ge, master)["all.q"] is True
            assert f"[{master}=0]" in ge.run("qconf", "-sq", "all.q").stdout

            bus.publish(
                InstanceDown(
                    at=0.0,
                    instance_id=InstanceId("i-0005"),
                    address="127.0.20.5",
                    reason=LostReason.SCALE_IN,
                )
            )
            # An empty node (no execd behind it here): disabled, found empty, released.
            released = await next_of(events, (NodeReleased, NodeKept), within=30)
            assert isinstance(released, NodeReleased), released
            assert released.instance_id == "i-0005"
            assert not any((await asyncio.to_thread(registered, ge, NODE)).values())
        assert not (tmp_path / "known_hosts").read_text().strip()  # the pin went with it
    finally:
        ge.run("qconf", "-purge", "queue", "slots", f"all.q@{master}", check=False)
        ge.run("qconf", "-aattr", "queue", "hostlist", master, "all.q", check=False)
        if "mem_requested" not in ge.run("qconf", "-sc").stdout:
            ge.run_with_file("qconf", "-Mc", text=complexes)
        ge.run(
            "qconf",
            "-rattr",
            "exechost",
            "complex_values",
            f"mem_requested={MASTER_MEMORY}",
            master,
        )
