"""Against a real Grid Engine 8.1.9 (tests.harness.gridengine): a node chosen for scale-in is
released only if it is empty, and the `mem_requested` consumable exists from the start.

Only the head runs jobs here (a second execd cannot be emulated on these machines, see
../shared/TESTING.md), so the busy node is the head itself, running a real job; the empty node
is an EC2-named host registered the way ClusterNodeSetup registers one.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import subprocess
import time
from pathlib import Path

import pytest

from actors.cluster_node_setup import ClusterNodeSetup
from actors.queue_sampler import QueueSampler
from controller.config.plugins import SgePlugin
from controller.config.reader import parse_config
from controller.config.schema import Config
from controller.gridengine.host_keys import HostKeyStore
from controller.gridengine.sge import format_memory, list_names, parse_qstat, queue_sample
from controller.gridengine.sge_deregister import release_node
from controller.gridengine.sge_head import register_node
from controller.messages import FleetObserved, InstanceId, QueueSample, SlaveView
from controller.policy.queue_policy import Node, QueueInput, QueuePolicy
from controller.runtime.bus import Bus
from tests.actor_runner import listen, next_of, running
from tests.harness.gridengine import MASTER_MEMORY, GridEngine

pytestmark = [pytest.mark.timeout(90)]

NODE = "ip-127-0-20-5"


@pytest.fixture
def ge(grid_engine: GridEngine):
    grid_engine.delete_all_jobs()
    try:
        yield grid_engine
    finally:
        grid_engine.delete_all_jobs()
        master = grid_engine.master_host
        grid_engine.run("qmod", "-e", f"all.q@{master}", check=False)
        grid_engine.run("qconf", "-purge", "queue", "slots", f"all.q@{master}", check=False)
        grid_engine.run("qconf", "-aattr", "queue", "hostlist", master, "all.q", check=False)
        for argv in (
            ("qconf", "-dattr", "queue", "hostlist", NODE, "all.q"),
            ("qconf", "-de", NODE),
            ("qconf", "-ds", NODE),
            ("qconf", "-dh", NODE),
        ):
            grid_engine.run(*argv, check=False)


def qsub(ge: GridEngine, *args: str) -> subprocess.CompletedProcess:
    return ge.run("qsub", "-b", "y", "-o", "/dev/null", "-e", "/dev/null", *args, check=False)


def plugin(ge: GridEngine, **options: object) -> SgePlugin:
    return SgePlugin(
        name="sge",
        sge_root=str(ge.sge_root),
        cell=ge.env["SGE_CELL"],
        **options,  # type: ignore[arg-type]
    )


def wait_running(ge: GridEngine, jobs: int = 1) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        snapshot = parse_qstat(ge.run("qstat", "-f", "-xml", "-r", "-u", "*").stdout)
        if len(snapshot.running) >= jobs:
            return
        time.sleep(0.2)
    raise AssertionError(f"no {jobs} job(s) running on the head within 30s")


def state_of(ge: GridEngine, host: str) -> str:
    snapshot = parse_qstat(ge.run("qstat", "-f", "-xml", "-u", "*").stdout)
    return next(i.state for i in snapshot.instances if i.host == host)


def registered(ge: GridEngine, host: str) -> bool:
    hosts = list_names(ge.run("qconf", "-sel", check=False).stdout)
    hosts |= list_names(ge.run("qconf", "-sh").stdout)
    return host in hosts


# never remove a busy node


async def test_a_node_given_a_job_since_the_sample_is_kept(ge: GridEngine):
    # The policy chose the head on a sample that showed it idle; a job has started there since.
    qsub(ge, "-l", "mem_requested=1G", "sleep", "60")
    wait_running(ge)
    release = await release_node(ge.client(), plugin(ge), ge.master_host)
    assert not release.released
    assert "1 slot(s) in use on" in release.reason and "was disabled" in release.reason
    assert state_of(ge, ge.master_host) == ""  # enabled again: it goes on taking jobs
    assert registered(ge, ge.master_host)
    assert len(parse_qstat(ge.run("qstat", "-f", "-xml", "-u", "*").stdout).running) == 1


async def test_a_queue_the_operator_disabled_stays_disabled(ge: GridEngine):
    qsub(ge, "sleep", "60")
    wait_running(ge)
    ge.run("qmod", "-d", f"all.q@{ge.master_host}")
    release = await release_node(ge.client(), plugin(ge), ge.master_host)
    assert not release.released
    assert "stays disabled, as it was before" in release.reason
    assert "d" in state_of(ge, ge.master_host)


async def test_an_empty_node_is_disabled_then_released(ge: GridEngine):
    await register_node(ge.client(), plugin(ge), NODE, "4G")
    assert registered(ge, NODE) and "u" in state_of(ge, NODE)  # no execd behind it: unknown
    release = await release_node(ge.client(), plugin(ge), NODE)
    assert release.released and release.failures == []
    assert not registered(ge, NODE)
    assert NODE not in ge.run("qconf", "-sq", "all.q").stdout


async def test_a_node_grid_engine_never_knew_is_released(ge: GridEngine):
    release = await release_node(ge.client(), plugin(ge), "ip-127-0-20-6")
    assert release.released and release.failures == []


async def test_without_an_answer_from_grid_engine_the_node_is_kept(ge: GridEngine):
    client = ge.client(timeout=5)
    client.cell = "no-such-cell"  # the clients cannot find the qmaster
    release = await release_node(client, plugin(ge), ge.master_host)
    assert not release.released
    assert release.reason.startswith(f"cannot disable all.q@{ge.master_host}")


# the consumable from the start


def cluster_config(ge: GridEngine, **sge: object) -> Config:
    return parse_config(
        {
            "cluster": {"segway": {"plugins": ["sge"]}},
            "plugin": {
                "sge": {
                    "kind": "sge",
                    "sge_root": str(ge.sge_root),
                    "cell": ge.env["SGE_CELL"],
                    "start_execd": False,
                    **sge,
                }
            },
        },
        "test.toml",
    )


def node_setup(ge: GridEngine, config: Config, bus: Bus, tmp_path: Path) -> ClusterNodeSetup:
    return ClusterNodeSetup(
        config=config,
        cluster=config.clusters[0],
        bus=bus,
        known_hosts_path=tmp_path / "known_hosts",
        sge=ge.client(),
    )


def consumable(ge: GridEngine) -> list[str] | None:
    for line in ge.run("qconf", "-sc").stdout.splitlines():
        if line.startswith("mem_requested "):
            return line.split()
    return None


def without_consumable(ge: GridEngine) -> str:
    """Take the consumable away, as after a plain Grid Engine install; the old complex list."""
    complexes = ge.run("qconf", "-sc").stdout
    ge.run("qconf", "-rattr", "exechost", "complex_values", "NONE", ge.master_host)
    ge.run_with_file(
        "qconf",
        "-Mc",
        text="".join(f"{ln}\n" for ln in complexes.splitlines() if "mem_requested" not in ln),
    )
    return complexes


def restore(ge: GridEngine, complexes: str) -> None:
    ge.run_with_file("qconf", "-Mc", text=complexes)
    ge.run(
        "qconf",
        "-rattr",
        "exechost",
        "complex_values",
        f"mem_requested={MASTER_MEMORY}",
        ge.master_host,
    )


def memory_of_this_machine() -> str:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return format_memory(int(line.split()[1]) * 1024)
    raise AssertionError("no MemTotal in /proc/meminfo")


async def test_a_mem_requested_job_before_any_node_is_accepted_and_pending(
    ge: GridEngine, tmp_path: Path
):
    complexes = without_consumable(ge)
    try:
        # The deadlock of a plain install: the request names an attribute Grid Engine lacks.
        refused = qsub(ge, "-l", "mem_requested=4G", "sleep", "60")
        assert refused.returncode != 0 and "mem_requested" in refused.stdout + refused.stderr

        bus = Bus()
        config = cluster_config(ge, head_is_exec_host=False)
        async with running(node_setup(ge, config, bus, tmp_path)):
            assert consumable(ge) == "mem_requested mem_requested MEMORY <= YES YES 0 0".split()
            accepted = qsub(ge, "-l", "mem_requested=4G", "sleep", "60")
            assert accepted.returncode == 0, accepted.stdout + accepted.stderr
            # head_is_exec_host = false: the head has no slots, so nothing can run the job.
            assert f"[{ge.master_host}=0]" in ge.run("qconf", "-sq", "all.q").stdout

            samples = listen(bus, QueueSample)
            sampler = QueueSampler(config=config, bus=bus, client=ge.client(), poll_interval=0.3)
            async with running(sampler):
                sample = await next_of(samples, QueueSample, within=10)
        assert (sample.pending_jobs, sample.pending_slots) == (1, 1)
        assert sample.pending_mem_mb == 4096
        policy = QueuePolicy.for_cluster(config, config.clusters[0])
        decision = policy.decide(QueueInput(now=0.0, sample=sample, nodes=()))
        assert (decision.desired, decision.launch) == (1, 1)
    finally:
        ge.delete_all_jobs()
        restore(ge, complexes)


async def test_the_head_gets_its_memory_and_an_existing_definition_is_left(
    ge: GridEngine, tmp_path: Path
):
    complexes = without_consumable(ge)
    try:
        config = cluster_config(ge)  # head_is_exec_host = true, the default
        async with running(node_setup(ge, config, Bus(), tmp_path)):
            pass
        assert consumable(ge) is not None
        values = ge.run("qconf", "-se", ge.master_host).stdout
        assert f"complex_values        mem_requested={memory_of_this_machine()}" in values

        # The operator's own definition and the head's own value stay as they are.
        custom = "mem_requested mr MEMORY <= YES YES 1G 5\n"
        ge.run_with_file("qconf", "-Mc", text=complexes.replace("mem_requested", "#x") + custom)
        ge.run("qconf", "-rattr", "exechost", "complex_values", "mem_requested=3G", ge.master_host)
        async with running(node_setup(ge, config, Bus(), tmp_path)):
            pass
        assert consumable(ge) == custom.split()
        assert (
            "complex_values        mem_requested=3G"
            in ge.run("qconf", "-se", ge.master_host).stdout
        )
    finally:
        restore(ge, complexes)


async def test_grid_engine_down_at_start_does_not_stop_the_start(ge: GridEngine, tmp_path: Path):
    config = cluster_config(ge)
    actor = node_setup(ge, config, Bus(), tmp_path)
    actor.sge.cell = "no-such-cell"  # type: ignore[union-attr]
    actor.sge.timeout = 5  # type: ignore[union-attr]
    actor.head_host = ge.master_host  # act_qmaster is read from the cell
    async with running(actor):
        await asyncio.sleep(0.5)
        assert not actor._head_ready
        actor.sge.cell = ge.env["SGE_CELL"]  # type: ignore[union-attr]
        for _ in range(60):
            if actor._head_ready:
                break
            await asyncio.sleep(0.2)
    assert actor._head_ready


# no host without an instance


async def test_after_a_restart_the_hosts_of_gone_instances_leave_grid_engine(
    ge: GridEngine, tmp_path: Path
):
    # The known_hosts file a killed controller left: it had set up two nodes; one instance
    # ended while no controller ran, so nothing will ever announce it down.
    keys = HostKeyStore(tmp_path / "known_hosts")
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIH0test"
    keys.pin("127.0.20.7", key, "i-gone")
    keys.pin("127.0.20.8", key, "i-alive")
    for host in ("ip-127-0-20-7", "ip-127-0-20-8"):
        await register_node(ge.client(), plugin(ge), host, "4G")
    bus = Bus()
    config = cluster_config(ge)
    try:
        async with running(node_setup(ge, config, bus, tmp_path)):
            alive = SlaveView(
                instance_id=InstanceId("i-alive"),
                address="127.0.20.8",
                state="booting",
                healthy=False,
                since=0.0,
            )
            bus.publish(
                FleetObserved(at=0.0, members=(alive,), pending_requests=0, cost_per_hour=0)
            )
            for _ in range(100):
                if not await asyncio.to_thread(registered, ge, "ip-127-0-20-7"):
                    break
                await asyncio.sleep(0.1)
        assert not registered(ge, "ip-127-0-20-7")
        assert registered(ge, "ip-127-0-20-8")  # its instance runs: adopted, not touched
        assert [p.instance_id for p in keys.pins()] == ["i-alive"]
    finally:
        for argv in (
            ("qconf", "-dattr", "queue", "hostlist", "ip-127-0-20-8", "all.q"),
            ("qconf", "-de", "ip-127-0-20-8"),
            ("qconf", "-ds", "ip-127-0-20-8"),
            ("qconf", "-dh", "ip-127-0-20-8"),
        ):
            ge.run(*argv, check=False)


# the policy on qstat of real jobs


async def test_a_busy_node_is_never_chosen_and_goes_idle_seconds_after_its_last_job(
    ge: GridEngine,
):
    # qstat as Grid Engine prints it while a job with -l mem_requested runs on the head, and
    # once it ended; the head's name rewritten to a node's, as the node pool would see it.
    def reading() -> QueueSample:
        xml = ge.run("qstat", "-f", "-xml", "-r", "-u", "*").stdout
        xml = xml.replace(f"@{ge.master_host}<", f"@{NODE}<")
        return queue_sample(parse_qstat(xml), at=0.0, now=dt.datetime.now())

    qsub(ge, "-l", "mem_requested=1500M", "sleep", "600")
    wait_running(ge)
    busy = reading()
    ge.delete_all_jobs()
    idle = reading()
    assert busy.busy_hosts == (NODE,) and busy.running_jobs == 1
    assert idle.idle_hosts == (NODE,) and idle.running_jobs == 0

    policy = QueuePolicy(min_nodes=0, max_nodes=4, idle_seconds=300.0)
    node = Node(instance_id="i-0005", hostname=NODE, launched_at=0.0, ready=True)
    for t in range(0, 3600, 60):  # an hour of the job running: never chosen
        decision = policy.decide(QueueInput(now=float(t), sample=busy, nodes=(node,)))
        assert decision.remove == () and decision.desired == 1
    removed = []
    for t in range(3600, 4200, 10):  # it ended at 3600
        decision = policy.decide(QueueInput(now=float(t), sample=idle, nodes=(node,)))
        removed += [(t, iid) for iid in decision.remove]
    assert removed == [(3900, "i-0005")]
