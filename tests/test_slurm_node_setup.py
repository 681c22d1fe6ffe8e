"""ClusterNodeSetup on a Slurm cluster, over a real OpenSSH sshd on 127.0.20.5 standing in for a
booted node: the slurm plugin starts the node's slurmd (a stand-in that records its arguments),
the node is ready once sinfo lists it, and its removal goes through Slurm: a scale-in drains it
and keeps it while a CPU is allocated there; a lost node is set DOWN and deleted. Slurm's clients
on the head are a shell script answering from recorded sinfo JSON (no Slurm runs in the
loopback-only namespace); the real Slurm is in test_slurm_cluster.py."""

from __future__ import annotations

import asyncio
import shlex
from collections.abc import Callable
from pathlib import Path

from actors.cluster_node_setup import ClusterNodeSetup
from controller.config.reader import parse_config
from controller.messages import InstanceDown, LostReason, NodeKept, NodeReady, NodeSetupFailed
from controller.runtime.bus import Bus
from controller.slurm.slurm_client import SlurmClient
from tests.actor_runner import listen, next_of, running
from tests.harness.sshd import Sshd
from tests.test_cluster_node_setup import bus, node_up, tmp  # noqa: F401 - fixtures

DATA = Path(__file__).parent / "data" / "slurm"
NODE = "ip-127-0-20-5"


def slurm_cluster(tmp: Path, sshd: Sshd, slurmd: Path):  # noqa: F811
    return parse_config(
        {
            "cluster": {
                "small": {
                    "load_source": "slurm",
                    "ssh_key_file": str(sshd.client_key_path),
                    "ssh_port": sshd.port,
                    "plugins": ["slurm"],
                },
            },
            "plugin": {"slurm": {"kind": "slurm", "slurmd": str(slurmd), "cpus": 2}},
        },
        "test.toml",
    )


def head_clients(tmp: Path, started: Path) -> SlurmClient:  # noqa: F811
    """sinfo lists the node (2 CPUs allocated) once its slurmd was started; every call logged."""
    script = f"""
echo "$*" >> {tmp}/calls
case "$1" in
  sinfo) [ -e {started} ] && cat {DATA}/sinfo_allocated.json || echo '{{"nodes":[]}}' ;;
esac
"""
    return SlurmClient(prefix=("sh", "-c", script, "sh"), timeout=5)


def down(ready: NodeReady, reason: LostReason) -> InstanceDown:
    return InstanceDown(at=0.0, instance_id=ready.instance_id, address=ready.address, reason=reason)


async def test_node_joins_slurm_and_leaves_it_through_slurm(
    sshd_factory: Callable[..., Sshd],
    tmp: Path,  # noqa: F811
    bus: Bus,  # noqa: F811
):
    sshd = sshd_factory(address="127.0.20.5")
    started = tmp / "slurmd-args"
    slurmd = tmp / "fake-slurmd"
    slurmd.write_text(f'#!/bin/sh\necho "$@" > {shlex.quote(str(started))}\n')
    slurmd.chmod(0o755)
    config = slurm_cluster(tmp, sshd, slurmd)
    actor = ClusterNodeSetup(
        config=config,
        cluster=config.clusters[0],
        bus=bus,
        known_hosts_path=tmp / "state" / "known_hosts",
        ssh_user=sshd.username,
        head_host="head-1",
        slurm=head_clients(tmp, started),
        ssh_retry_delays=(0.1, 0.2),
        ssh_wait_timeout=20.0,
        node_state_dir=str(tmp / "node-state"),
    )
    events = listen(bus, NodeReady, NodeSetupFailed, NodeKept)
    async with running(actor):
        bus.publish(node_up("127.0.20.5"))
        ready = await next_of(events, NodeReady, within=30)
        assert ready.hostname == NODE
        assert started.read_text().split() == [
            "-Z", "-N", NODE, "--conf-server", "head-1", "--conf", "CPUs=2",
        ]  # fmt: skip

        # Scale-in: drained, looked at again, kept (a CPU is allocated) and resumed.
        bus.publish(down(ready, LostReason.SCALE_IN))
        kept = await next_of(events, NodeKept, within=20)
        assert f"CPU(s) in use on {NODE}" in kept.reason
        # Lost: DOWN, then deleted, whatever runs there.
        bus.publish(down(ready, LostReason.TERMINATED))
        for _ in range(100):
            if "delete" in (tmp / "calls").read_text():
                break
            await asyncio.sleep(0.1)
    scontrol = [c for c in (tmp / "calls").read_text().splitlines() if c.startswith("scontrol")]
    assert scontrol == [
        f"scontrol update nodename={NODE} state=drain reason=controller scale-in",
        f"scontrol update nodename={NODE} state=resume",
        f"scontrol update nodename={NODE} state=down reason=controller: instance removed",
        f"scontrol delete nodename={NODE}",
    ]
