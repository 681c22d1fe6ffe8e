"""The node's side of ClusterNodeSetup, run for real: the actor logs in over asyncssh to a node host
(tests.harness.node_host: OpenSSH's sshd in the node's own namespaces, its /dev a tmpfs whose disks
are loop devices backed by image files here) and its plugin commands, volume mounts and execd
start really run there: files written to the node's /etc, ext4 made and mounted, sge_execd started.

The Grid Engine test puts the node in the test Grid Engine's network namespace as a second exec
host (the harness routes the node's connections to the qmaster from its own address): the node
registers, its execd reports, and a job submitted for it runs there.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from actors.cluster_node_setup import ClusterNodeSetup
from controller.config.reader import parse_config
from controller.config.schema import Config
from controller.messages import InstanceId, InstanceUp, NodeReady, NodeSetupFailed, Role
from controller.runtime.bus import Bus
from tests.actor_runner import listen, next_of, running
from tests.harness.gridengine import CELL, GridEngine
from tests.harness.node_host import Disk, NodeHost, node_host

ADDRESS = "127.0.20.5"
HOSTNAME = "ip-127-0-20-5"


def make_config(node: NodeHost, plugins: dict, volumes: dict | None = None) -> Config:
    volumes = volumes or {}
    return parse_config(
        {
            "cluster": {
                "segway": {
                    "ssh_key_file": str(node.client_key_path),
                    "ssh_port": node.port,
                    "volumes": list(volumes),
                    "plugins": list(plugins),
                }
            },
            "plugin": plugins,
            "volume": volumes,
        },
        "test.toml",
    )


def make_actor(bus: Bus, config: Config, state: Path, **kwargs) -> ClusterNodeSetup:
    kwargs.setdefault("head_host", "head")
    return ClusterNodeSetup(
        config=config,
        cluster=config.clusters[0],
        bus=bus,
        known_hosts_path=state / "known_hosts",
        ssh_retry_delays=(0.1, 0.2),
        ssh_wait_timeout=20.0,
        **kwargs,
    )


async def set_up(bus: Bus, config: Config, state: Path, **kwargs) -> NodeReady | NodeSetupFailed:
    """One setup of the node by a fresh actor, as after a controller (re)start."""
    events = listen(bus, NodeReady, NodeSetupFailed)
    async with running(make_actor(bus, config, state, **kwargs)):
        bus.publish(
            InstanceUp(at=0.0, instance_id=InstanceId("i-0005"), address=ADDRESS, role=Role.NODE)
        )
        done = await next_of(events, object, within=60)
    assert isinstance(done, NodeReady | NodeSetupFailed)
    return done


async def ready(bus: Bus, config: Config, state: Path, **kwargs) -> NodeReady:
    done = await set_up(bus, config, state, **kwargs)
    assert isinstance(done, NodeReady), done
    assert done.hostname == HOSTNAME
    return done


@pytest.fixture
def state() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="test-node-state-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def bus() -> Bus:
    return Bus()


def on_node(node: NodeHost, command: str) -> str:
    result = node.run(command)
    assert result.returncode == 0, f"{command}: {result.stderr}"
    return result.stdout


# plugins

INIT_SCRIPT = """#!/bin/sh
# segway-cache: a service of the node's image, which the stop-services plugin stops.
case "$1" in
stop) echo "Stopping segway-cache"; echo stopped >> /mnt/segway-cache.log ;;
*) echo "usage: $0 stop" >&2; exit 2 ;;
esac
"""

PLUGINS = {
    "segway-env": {"kind": "profile", "base": "/segway-build", "python_version": "2.6"},
    "segway-motd": {"kind": "motd", "text": "=== Segway $node_type node $hostname ($address) ==="},
    "quiet": {"kind": "stop-services", "services": ["segway-cache", "no-such-service"]},
    "extra": {
        "kind": "commands",
        "commands": [
            "printf '%s\\n' \"it's $(hostname)\" | tr a-z A-Z > /etc/segway-commands.out",
            "id -un >> /etc/segway-commands.out",
        ],
    },
}


async def test_plugins_run_on_the_node(state: Path, bus: Bus):
    with node_host(ADDRESS) as node:
        on_node(node, f"cat > /etc/init.d/segway-cache <<'EOF'\n{INIT_SCRIPT}EOF\n")
        on_node(node, "chmod 755 /etc/init.d/segway-cache")
        on_node(node, "echo 'Welcome to the image' > /etc/motd.tail")
        config = make_config(node, PLUGINS)
        with structlog.testing.capture_logs() as logs:
            await ready(bus, config, state)

        # profile: the default path, readable by all, and a login shell on the node picks it up
        assert on_node(node, "stat -c %a /etc/profile.d/segway-env.sh").strip() == "644"
        env = on_node(node, "bash -lc 'echo $ARCHHOME; echo $PYTHONPATH; echo $PATH'").split()
        home = "/segway-build/arch/Linux-x86_64"
        assert env[:2] == [home, f"{home}/lib/python2.6"]
        assert f"{home}/bin" in env[2].split(":")
        # motd: appended to the node's /etc/motd.tail, after what the image had there
        motd = node.read("/etc/motd.tail")
        assert motd.startswith("Welcome to the image\n")
        assert f"=== Segway COMPUTE node {HOSTNAME} ({ADDRESS}) ===" in motd
        # stop-services: the image's service was stopped; the missing one said so
        assert node.read("/mnt/segway-cache.log") == "stopped\n"
        said = " ".join(str(entry) for entry in logs)
        assert "no-such-service: no such service, nothing to stop" in said
        assert "Stopping segway-cache" in said
        # commands: run verbatim by the node's shell, as root, on the node
        assert node.read("/etc/segway-commands.out") == f"IT'S {HOSTNAME.upper()}\nroot\n"

        # Set up again (a controller restart): the files are replaced, not appended to.
        await ready(bus, config, state)
        assert node.read("/etc/motd.tail") == motd
        assert node.read("/etc/segway-commands.out") == f"IT'S {HOSTNAME.upper()}\nroot\n"
        assert node.read("/mnt/segway-cache.log") == "stopped\nstopped\n"
    # Nothing of it reached this machine.
    assert not Path("/etc/profile.d/segway-env.sh").exists()
    assert not Path("/etc/segway-commands.out").exists()


# volumes

VOLUMES = {
    # A new volume: its snapshot is of a blank disk, so the node gets no filesystem on it.
    "scratch": {"snapshot_id": "snap-0aaa", "mount_path": "/mnt/scratch"},
    # Segway's data, a copy of a snapshot with files on it.
    "segway-data": {"snapshot_id": "snap-0bbb", "mount_path": "/mnt/segway-data"},
}
DISKS = (
    # Attached at /dev/sdf: on Nitro an NVMe disk that udev links to that name
    Disk(device="nvme1n1", links=("sdf", "disk/by-id/nvme-Amazon_Elastic_Block_Store_vol0aaa")),
    # at /dev/sdg: on Xen the node names it xvdg
    Disk(device="xvdg", links=(), files={"genome.txt": "ACGT\n"}),
)


def mounts(node: NodeHost) -> list[str]:
    """SOURCE FSTYPE TARGET of the node's block device mounts under /mnt (one line each)."""
    lines = on_node(node, "findmnt -rn -o SOURCE,FSTYPE,TARGET").splitlines()
    return sorted(ln for ln in lines if ln.startswith("/dev/") and " /mnt/" in ln)


def uuid(image: Path) -> str:
    """The filesystem UUID on a disk image file ("" if none), read from the file."""
    return blkid_value(image, "UUID")


def blkid_value(image: Path, tag: str) -> str:
    result = subprocess.run(
        ["blkid", "-p", "-o", "value", "-s", tag, str(image)], capture_output=True, text=True
    )
    return result.stdout.strip()


async def test_volumes_are_formatted_when_new_and_mounted_once(state: Path, bus: Bus):
    with node_host(ADDRESS, disks=DISKS) as node:
        scratch, data = node.image(0), node.image(1)
        data_uuid = uuid(data)
        assert uuid(scratch) == "" and data_uuid
        config = make_config(node, {}, VOLUMES)
        await ready(bus, config, state)

        expected = [
            "/dev/nvme1n1 ext4 /mnt/scratch",
            "/dev/xvdg ext4 /mnt/segway-data",
        ]
        assert mounts(node) == expected
        assert blkid_value(scratch, "TYPE") == "ext4"  # made on the new volume
        scratch_uuid = uuid(scratch)
        assert uuid(data) == data_uuid  # the snapshot's copy was not formatted
        assert node.read("/mnt/segway-data/genome.txt") == "ACGT\n"
        on_node(node, "echo kept > /mnt/scratch/marker")

        # Set up again (a restart): nothing formatted, nothing mounted twice.
        await ready(bus, config, state)
        assert mounts(node) == expected
        assert (uuid(scratch), uuid(data)) == (scratch_uuid, data_uuid)
        assert node.read("/mnt/scratch/marker") == "kept\n"

        # Unmounted meanwhile (the node rebooted): mounted again, still not formatted.
        on_node(node, "umount /mnt/scratch && umount /mnt/segway-data")
        await ready(bus, config, state)
        assert mounts(node) == expected
        assert node.read("/mnt/scratch/marker") == "kept\n"
        assert uuid(scratch) == scratch_uuid

        # A volume the node never shows fails the setup, naming the device names looked for.
        more = {**VOLUMES, "extra": {"snapshot_id": "snap-0ccc", "mount_path": "/mnt/extra"}}
        failed = await set_up(bus, make_config(node, {}, more), state, device_wait=1)
        assert isinstance(failed, NodeSetupFailed)
        assert failed.step == "volume:extra"
        assert failed.reason == (
            "mount /dev/sdh (snap-0ccc) at /mnt/extra exited with 1: "
            "no block device /dev/sdh or /dev/xvdh after 1s for snap-0ccc"
        )


# Grid Engine


async def wait_for(what: str, check, within: float = 60) -> None:
    for _ in range(int(within / 0.25)):
        if await asyncio.to_thread(check):
            return
        await asyncio.sleep(0.25)
    raise AssertionError(f"not {what} within {within}s")


async def test_execd_started_on_the_node_registers_and_runs_jobs(
    grid_engine: GridEngine,
    state: Path,
    bus: Bus,
):
    ge = grid_engine
    common = f"{ge.sge_root}/{CELL}/common"
    plugins = {
        "sge": {
            "kind": "sge",
            "sge_root": str(ge.sge_root),
            "cell": CELL,
            "write_act_qmaster": True,  # the node's own copy of the cell (the harness's overlay)
        }
    }
    with node_host(ADDRESS, head=ge) as node:
        config = make_config(node, plugins)
        try:
            # head_host "": the actor asks Grid Engine for the qmaster's name, as in production
            await ready(bus, config, state, sge=ge.client(), head_host="")

            # The node side: act_qmaster written in the node's cell, one execd started there.
            assert node.read(f"{common}/act_qmaster") == f"{ge.master_host}\n"
            assert (node.root / "cell-common" / "act_qmaster").exists()  # not the head's file
            execd = on_node(node, "pgrep -x sge_execd").split()
            assert len(execd) == 1, on_node(node, "ps -eo pid,ppid,stat,args")

            # The head side: the execd reports as ip-127-0-20-5, and a job for it runs there.
            def reporting() -> bool:
                out = ge.run("qstat", "-f", "-u", "*", check=False).stdout
                line = next((ln for ln in out.splitlines() if f"all.q@{HOSTNAME} " in ln), "")
                return len(line.split()) == 5  # no state: not (u)nknown, not (a)larm

            await wait_for(f"all.q@{HOSTNAME} reporting", reporting)
            ge.run(
                *("qsub", "-b", "y", "-o", "/dev/null", "-e", "/dev/null"),
                *("-l", f"h={HOSTNAME},mem_requested=1G", "sh", "-c", "hostname > /mnt/ran-on"),
            )
            await wait_for("the job ran", lambda: node.read("/mnt/ran-on") != "")
            assert node.read("/mnt/ran-on") == f"{HOSTNAME}\n"

            # Set up again (a restart): the running execd is left alone, the host listed once.
            await ready(bus, config, state, sge=ge.client(), head_host="")
            assert on_node(node, "pgrep -x sge_execd").split() == execd
            assert ge.run("qconf", "-sel").stdout.split().count(HOSTNAME) == 1
        finally:
            forget_node(ge)


async def test_a_node_that_cannot_reach_the_qmaster_fails_its_setup(
    grid_engine: GridEngine,
    state: Path,
    bus: Bus,
):
    ge = grid_engine
    plugins = {"sge": {"kind": "sge", "sge_root": str(ge.sge_root), "cell": CELL}}
    with node_host(ADDRESS, head=ge) as node:
        # As if a security group kept the node from the qmaster's port: nothing listens on
        # the port the node's /etc/services gives sge_qmaster.
        on_node(node, "sed -i 's|^sge-qmaster.*|sge-qmaster 6999/tcp sge_qmaster|' /etc/services")
        try:
            config = make_config(node, plugins)
            failed = await set_up(bus, config, state, sge=ge.client(), head_host="")
        finally:
            forget_node(ge)
    # sge_execd itself exits 0 ("backgrounding"): without the check the node would be ready.
    assert isinstance(failed, NodeSetupFailed)
    assert failed.step == "plugin:sge"
    assert failed.reason.startswith(
        f"start sge_execd exited with 1: sge_execd could not reach the qmaster {ge.master_host};"
    )
    assert "can't get configuration from qmaster" in failed.reason


def forget_node(ge: GridEngine) -> None:
    """Take the test node out of the session's Grid Engine, whatever the test left."""
    for argv in (
        ("qconf", "-dattr", "queue", "hostlist", HOSTNAME, "all.q"),
        ("qconf", "-de", HOSTNAME),
        ("qconf", "-ds", HOSTNAME),
        ("qconf", "-dh", HOSTNAME),
    ):
        ge.run(*argv, check=False)
