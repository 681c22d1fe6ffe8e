"""A Slurm cluster end to end: `controller run -c CONFIG --cluster NAME`, through the contract.

The real controller process runs against moto's EC2 (the node gets a 127.0.20.x address) and a
real Slurm 22.05 (tests.harness.slurm: munged and slurmctld on 127.0.0.1, in a private mount
namespace; the slurm plugin's `command_prefix` runs the head's squeue, sinfo and scontrol there).
The "node" is an OpenSSH sshd started, once EC2 hands out the instance's address, on that
address and inside the same mount namespace, so the `slurmd -Z` the controller starts over SSH
finds munged and the node names: it fetches slurm.conf from slurmctld and joins as a dynamic
node under the instance's EC2 name.

Marked `slurm`: Slurm runs only outside the loopback-only network namespace, so this runs in the
root namespace (`pytest -m slurm`, as root). Nothing may leave the machine there: every address
the controller and the fixtures use is checked to be a loopback one.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
import tomllib
from collections.abc import Iterator, Sequence
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.harness import procs
from tests.harness.e2e import (
    FLEET,
    Controller,
    Farm,
    fleet_groups,
    fleet_instances,
    healthy,
    wait_until,
)
from tests.harness.net import ServerStartError, free_port, wait_for_port
from tests.harness.slurm import NODE_ADDRESSES, Slurm
from tests.harness.sshd import CONFIG, SSHD, Sshd

pytestmark = [pytest.mark.slurm, pytest.mark.timeout(240)]

IDLE_SECONDS = 3
EVERY_STATE = ["pending", "running", "shutting-down", "terminated", "stopping", "stopped"]


def loopback(host: str) -> str:
    """`host`, which must be a loopback address: this test runs outside the loopback-only
    network namespace, so anything else would leave the machine."""
    assert ipaddress.ip_address(host).is_loopback, f"{host} is not a loopback address"
    return host


class NodeSshd(Sshd):
    """The node's sshd, inside Slurm's mount namespace (munged's socket, the node names). Its
    keys and port exist from the start; it listens once the instance's address is known."""

    def __init__(self, root: Path, prefix: Sequence[str]) -> None:
        root.mkdir()
        super().__init__(root, address="127.0.0.1", port=free_port())
        self.prefix = tuple(prefix)

    def start_on(self, address: str) -> None:
        self.host = loopback(address)
        config = CONFIG.format(port=self.port, address=self.host, root=self.root)
        (self.root / "sshd_config").write_text(config)
        made = subprocess.run(  # privilege separation directory, on the namespace's /run
            [*self.prefix, "mkdir", "-p", "-m", "755", "/run/sshd"],
            capture_output=True,
            text=True,
            check=False,
        )
        if made.returncode != 0:
            raise ServerStartError(f"cannot make /run/sshd for the node's sshd: {made.stderr}")
        argv = [*self.prefix, SSHD, "-D", "-e", "-f", str(self.root / "sshd_config")]
        self._process = procs.spawn(argv, self.log)
        try:
            wait_for_port(
                self.host, self.port, alive=lambda: self._process.poll() is None, log=self.log
            )
        except ServerStartError:
            procs.stop(self._process)
            raise


@pytest.fixture
def node_sshd(tmp_path: Path, slurm: Slurm) -> Iterator[NodeSshd]:
    """The node's sshd, not listening yet; stopped afterwards."""
    server = NodeSshd(tmp_path / "node-sshd", slurm.prefix)
    try:
        yield server
    finally:
        server.stop()


def write_slurm_config(tmp_path: Path, moto_ec2, slurm: Slurm, sshd: NodeSshd) -> Farm:
    stats_port = free_port()
    config = tmp_path / "config.toml"
    config.write_text(
        f"""
[controller]
fleet = "{FLEET}"
on_exit = "teardown"

[master]
poll_interval = 1
external_ip = "127.0.0.1"

[scaling]
request_timeout = 60

[aws]
endpoint_url = "{moto_ec2.endpoint_url}"
max_attempts = 2
call_timeout = 10

[stats]
listen = "127.0.0.1:{stats_port}"

[cluster.batch]
load_source = "slurm"
node_instance_type = "m5.large"
image_id = "ami-12345678"
subnet = "{moto_ec2.subnet_id}"
ssh_key_file = "{sshd.client_key_path}"
ssh_port = {sshd.port}
min_nodes = 0
max_nodes = 1
idle_seconds = {IDLE_SECONDS}
plugins = ["slurm"]

[plugin.slurm]
kind = "slurm"
conf_server = "{slurm.conf_server}"
cpus = 2
memory_mb = 1000
slurmd = "/usr/sbin/slurmd"
slurm_conf = "{slurm.conf}"
command_prefix = {json.dumps(list(slurm.prefix))}
"""
    )
    farm = Farm(
        config=config,
        renderfarm=tmp_path / "renderfarm.conf",
        reloads=tmp_path / "reloads.log",
        log=tmp_path / "controller.log",
        stats_url=f"http://127.0.0.1:{stats_port}",
        port=0,
    )
    assert_all_loopback(config)
    return farm


def assert_all_loopback(config: Path) -> None:
    """Every address the controller is told to use is a loopback one."""
    data = tomllib.loads(config.read_text())
    loopback(data["master"]["external_ip"])
    loopback(urlsplit(data["aws"]["endpoint_url"]).hostname or "")
    loopback(data["stats"]["listen"].rpartition(":")[0])
    loopback(data["plugin"]["slurm"]["conf_server"].rpartition(":")[0])


def hostname(instance: dict) -> str:
    return "ip-" + instance["PrivateIpAddress"].replace(".", "-")


def log_events(farm: Farm) -> list[dict]:
    """The controller's log, one JSON object a line (anything else skipped)."""
    lines = farm.log.read_text(errors="replace").splitlines()
    return [json.loads(line) for line in lines if line.startswith("{")]


def slurm_nodes(slurm: Slurm) -> str:
    """The nodes Slurm lists, one name a line."""
    return slurm.run("sinfo", "-h", "-N", "-o", "%N").stdout.strip()


def test_a_job_gets_a_slurm_node_which_leaves_when_idle(
    tmp_path, moto_ec2, slurm: Slurm, node_sshd: NodeSshd, monkeypatch
):
    farm = write_slurm_config(tmp_path, moto_ec2, slurm, node_sshd)
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path))  # where the node's host key is pinned
    ec2 = moto_ec2.client()
    loopback(urlsplit(moto_ec2.endpoint_url).hostname or "")
    assert slurm_nodes(slurm) == ""
    out = tmp_path / "job.out"
    ctl = Controller(farm, "--cluster", "batch")
    name = ""
    try:
        wait_until("the stats endpoint", lambda: healthy(farm), 30, ctl)
        wait_until("a decision", lambda: "decision" in farm.log.read_text(), 10, ctl)
        assert fleet_instances(ec2) == []

        # A job before any node exists: the controller launches one.
        slurm.run(
            "sbatch", "-c", "1", "--mem=100", "-o", str(out),
            "--wrap", "echo ran on $SLURMD_NODENAME; sleep 2",
        )  # fmt: skip
        (node,) = wait_until("a node", lambda: fleet_instances(ec2), 30, ctl)
        address = loopback(node["PrivateIpAddress"])
        assert address in NODE_ADDRESSES, f"{address}: the harness names 127.0.20.1-20 only"
        assert loopback(node.get("PublicIpAddress") or address)
        name = hostname(node)

        # The instance boots: its sshd comes up; the controller sets it up over SSH and the
        # node's slurmd joins Slurm under the instance's EC2 name.
        node_sshd.start_on(address)
        wait_until("the node in sinfo", lambda: slurm_nodes(slurm) == name, 60, ctl)
        wait_until("the node ready", lambda: '"node.ready"' in farm.log.read_text(), 20, ctl)
        started = [e for e in log_events(farm) if e["event"] == "node.setup_started"]
        assert [loopback(e["address"]) for e in started] == [address]

        # The job runs there and ends.
        wait_until("the job's output", lambda: out.exists() and out.read_text().strip(), 60, ctl)
        assert out.read_text().split() == ["ran", "on", name]
        wait_until(
            "the job ended",
            lambda: slurm.run("squeue", "-h").stdout.strip() == "",
            30,
            ctl,
        )
        assert len(fleet_instances(ec2)) == 1  # one node for one job, all along

        # Idle for idle_seconds: drained, deleted from Slurm, terminated.
        wait_until("scale-in to zero", lambda: fleet_instances(ec2) == [], 60, ctl)
        assert slurm_nodes(slurm) == ""
        events = [e["event"] for e in log_events(farm)]
        assert "node.removal_dropped" not in events
        assert events.index("node.deregistered") < events.index("instances.terminating")
        said = (slurm.tmp / "slurmctld.log").read_text(errors="replace")  # drained, then deleted
        assert f"node {name} state set to DRAINED" in said
        # The instance is gone, and the slurmd it ran with it.
        slurm.stop_node(name)
        node_sshd.stop()

        assert ctl.terminate() == 0, ctl.log_text()
        assert fleet_instances(ec2) == [] and fleet_groups(ec2) == []
        ended = fleet_instances(ec2, EVERY_STATE)
        assert [i["InstanceId"] for i in ended] == [node["InstanceId"]]
        assert slurm_nodes(slurm) == ""
    finally:
        ctl.ensure_dead()
        if name:  # leave the module's Slurm as it was
            slurm.cancel_all(wait=5)
            slurm.stop_node(name)
            slurm.run("scontrol", "delete", f"nodename={name}", check=False)
