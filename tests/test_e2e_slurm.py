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

`kill -9` costs no node and no job: a node running a job is adopted (the same instance, no
launch, still in Slurm, its job running to its end) and leaves once idle as before; a kill
during the node's setup (before Slurm lists it) ends with the node adopted or cleanly
replaced, never both, and no node in Slurm without an instance.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
import time
import tomllib
from collections.abc import Iterator, Sequence
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.harness import procs
from tests.harness.e2e import (
    Controller,
    Farm,
    cluster_config_head,
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
        cluster_config_head(moto_ec2, stats_port)
        + f"""
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


def slurm_nodes(slurm: Slurm) -> str:
    """The nodes Slurm lists, one name a line."""
    return slurm.run("sinfo", "-h", "-N", "-o", "%N").stdout.strip()


class Run:
    """The controller process of the moment (`--cluster batch`), and what its own log says."""

    def __init__(self, farm: Farm) -> None:
        self.farm = farm
        self.offset = farm.log.stat().st_size if farm.log.exists() else 0
        self.ctl = Controller(farm, "--cluster", "batch")

    def log(self) -> list[dict]:
        """This process's log, one JSON object a line (anything else skipped)."""
        with open(self.farm.log, errors="replace") as f:
            f.seek(self.offset)
            lines = f.read().splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]

    def events(self, event: str) -> list[dict]:
        """This process's log events named `event`."""
        return [e for e in self.log() if e.get("event") == event]

    def count(self, event: str) -> int:
        return len(self.events(event))

    def restart(self) -> Run:
        """`kill -9`, and the controller started again with the same config."""
        self.ctl.kill9()
        return Run(self.farm).up("the restarted controller")

    def up(self, what: str) -> Run:
        """This run, once its stats endpoint answers (else it is killed and the test fails)."""
        try:
            wait_until(what, lambda: healthy(self.farm), 30, self.ctl)
        except BaseException:
            self.ctl.ensure_dead()
            raise
        return self


def start(tmp_path: Path, moto_ec2, slurm: Slurm, sshd: NodeSshd, monkeypatch) -> Run:
    """The controller for cluster `batch`, up and deciding, with no node yet."""
    farm = write_slurm_config(tmp_path, moto_ec2, slurm, sshd)
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path))  # where the node's host key is pinned
    loopback(urlsplit(moto_ec2.endpoint_url).hostname or "")
    assert slurm_nodes(slurm) == ""
    run = Run(farm).up("the stats endpoint")
    try:
        wait_until("a decision", lambda: run.count("decision") > 0, 10, run.ctl)
        assert fleet_instances(moto_ec2.client()) == []
    except BaseException:
        run.ctl.ensure_dead()
        raise
    return run


def launched_node(ec2, ctl: Controller) -> tuple[dict, str]:
    """The one node the controller launches, and its loopback address."""
    (node,) = wait_until("a node", lambda: fleet_instances(ec2), 30, ctl)
    address = loopback(node["PrivateIpAddress"])
    assert address in NODE_ADDRESSES, f"{address}: the harness names 127.0.20.1-20 only"
    assert loopback(node.get("PublicIpAddress") or address)
    return node, address


def job_state(slurm: Slurm, job: str) -> str:
    """JobState and Restarts of `job`, as scontrol says (it keeps ended jobs a while)."""
    fields = dict(
        word.partition("=")[::2]
        for word in slurm.run("scontrol", "-o", "show", "job", job).stdout.split()
    )
    return f"{fields['JobState']} restarts={fields['Restarts']}"


def no_node_without_an_instance(slurm: Slurm, ec2) -> None:
    """Every node Slurm lists has an instance alive; every other instance ever launched ended."""
    alive = fleet_instances(ec2)
    in_slurm = set(slurm_nodes(slurm).split())
    assert in_slurm <= {hostname(i) for i in alive}, (in_slurm, alive)
    alive_ids = {i["InstanceId"] for i in alive}
    for instance in fleet_instances(ec2, EVERY_STATE):
        if instance["InstanceId"] not in alive_ids:
            assert instance["State"]["Name"] in ("shutting-down", "terminated")


def slurmd_runs(name: str) -> bool:
    """A `slurmd -Z -N name` process exists (the node's, started over SSH)."""
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().split(b"\0")
        except OSError:  # it ended meanwhile
            continue
        if Path(argv[0].decode(errors="replace")).name == "slurmd" and name.encode() in argv:
            return True
    return False


def wait_for_slurmd(name: str, timeout: float, ctl: Controller) -> None:
    """Until the node's slurmd process exists, looked for often: it joins Slurm within a
    second or so, and the test means to kill the controller before it has."""
    deadline = time.monotonic() + timeout
    while not slurmd_runs(name):
        if ctl.proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"no slurmd for {name} within {timeout:g}s:\n{ctl.log_text()}")
        time.sleep(0.02)


def forget_node(slurm: Slurm, name: str) -> None:
    """Leave the module's Slurm as it was: no job, no node."""
    if name:
        slurm.cancel_all(wait=5)
        slurm.stop_node(name)
        slurm.run("scontrol", "delete", f"nodename={name}", check=False)


def test_a_job_gets_a_slurm_node_which_leaves_when_idle(
    tmp_path, moto_ec2, slurm: Slurm, node_sshd: NodeSshd, monkeypatch
):
    ec2 = moto_ec2.client()
    out = tmp_path / "job.out"
    run = start(tmp_path, moto_ec2, slurm, node_sshd, monkeypatch)
    ctl = run.ctl
    name = ""
    try:
        # A job before any node exists: the controller launches one.
        slurm.run(
            "sbatch", "-c", "1", "--mem=100", "-o", str(out),
            "--wrap", "echo ran on $SLURMD_NODENAME; sleep 2",
        )  # fmt: skip
        node, address = launched_node(ec2, ctl)
        name = hostname(node)

        # The instance boots: its sshd comes up; the controller sets it up over SSH and the
        # node's slurmd joins Slurm under the instance's EC2 name.
        node_sshd.start_on(address)
        wait_until("the node in sinfo", lambda: slurm_nodes(slurm) == name, 60, ctl)
        wait_until("the node ready", lambda: run.count("node.ready") == 1, 20, ctl)
        started = run.events("node.setup_started")
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
        events = [e["event"] for e in run.log()]
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
        forget_node(slurm, name)


def test_kill_9_while_a_job_runs_adopts_the_node_and_spares_the_job(
    tmp_path, moto_ec2, slurm: Slurm, node_sshd: NodeSshd, monkeypatch
):
    ec2 = moto_ec2.client()
    trace, go_on = tmp_path / "job.trace", tmp_path / "job.go-on"
    run = start(tmp_path, moto_ec2, slurm, node_sshd, monkeypatch)
    name = ""
    try:
        # A long job (it ends when the test says so) runs on the node.
        job = slurm.submit(
            "-c", "1", "--mem=100", "--wrap",
            f"echo start ${{SLURM_RESTART_COUNT:-0}} >> {trace};"
            f" while [ ! -e {go_on} ]; do sleep 0.2; done; echo end >> {trace}",
        )  # fmt: skip
        node, address = launched_node(ec2, run.ctl)
        name = hostname(node)
        node_sshd.start_on(address)
        wait_until("the node ready", lambda: run.count("node.ready") == 1, 60, run.ctl)
        wait_until("the job running", lambda: trace.exists(), 30, run.ctl)
        assert job_state(slurm, job) == "RUNNING restarts=0"

        run = run.restart()

        # Adopted: the same instance, set up again (slurmd runs: left alone), none launched.
        wait_until("the node adopted", lambda: run.count("node.ready") == 1, 30, run.ctl)
        assert run.count("fleet.adopted") == 1
        assert [i["InstanceId"] for i in fleet_instances(ec2, EVERY_STATE)] == [node["InstanceId"]]
        assert slurm_nodes(slurm) == name
        # Polls go by past idle_seconds: the busy node stays, in Slurm, its job running.
        wait_until("polls", lambda: run.count("decision") > IDLE_SECONDS + 2, 30, run.ctl)
        assert run.count("instances.launched") == 0
        assert fleet_instances(ec2) and slurm_nodes(slurm) == name
        assert job_state(slurm, job) == "RUNNING restarts=0"
        assert run.count("node.setup_started") == 1 and run.count("node.deregistered") == 0

        # The job runs to its end, once; then the idle node leaves as before.
        go_on.touch()
        wait_until("the job ended", lambda: "end" in trace.read_text(), 30, run.ctl)
        assert trace.read_text().split() == ["start", "0", "end"]
        wait_until("scale-in to zero", lambda: fleet_instances(ec2) == [], 60, run.ctl)
        assert job_state(slurm, job) == "COMPLETED restarts=0"
        assert slurm_nodes(slurm) == ""
        assert run.count("node.removal_dropped") == 0 and run.count("node.deregistered") == 1
        slurm.stop_node(name)
        node_sshd.stop()

        assert run.ctl.terminate() == 0, run.ctl.log_text()
        assert fleet_instances(ec2) == [] and fleet_groups(ec2) == []
        ended = fleet_instances(ec2, EVERY_STATE)
        assert [i["InstanceId"] for i in ended] == [node["InstanceId"]]
        assert slurm_nodes(slurm) == ""
    finally:
        run.ctl.ensure_dead()
        forget_node(slurm, name)


def test_kill_9_during_the_node_setup_adopts_or_replaces_it_cleanly(
    tmp_path, moto_ec2, slurm: Slurm, node_sshd: NodeSshd, monkeypatch
):
    ec2 = moto_ec2.client()
    out = tmp_path / "job.out"
    run = start(tmp_path, moto_ec2, slurm, node_sshd, monkeypatch)
    name = ""
    try:
        slurm.submit("-c", "1", "--mem=100", "--wrap", f"echo ran on $SLURMD_NODENAME >> {out}")
        node, address = launched_node(ec2, run.ctl)
        name = hostname(node)

        # Killed while the setup waits for the node's sshd (the instance still booting).
        wait_until("the setup", lambda: run.count("node.setup_started") == 1, 30, run.ctl)
        run = run.restart()
        wait_until("the setup again", lambda: run.count("node.setup_started") == 1, 30, run.ctl)
        # Killed the moment the node's slurmd started: as a rule before Slurm lists the node,
        # always before the setup saw it there (it looks once a second).
        node_sshd.start_on(address)
        wait_for_slurmd(name, 60, run.ctl)
        run = run.restart()

        # Adopted or replaced, never both; no node in Slurm without an instance.
        wait_until("a node ready", lambda: run.count("node.ready") == 1, 60, run.ctl)
        no_node_without_an_instance(slurm, ec2)
        (alive,) = fleet_instances(ec2)
        assert alive["InstanceId"] == node["InstanceId"]  # its sshd answers: adopted
        assert len(fleet_instances(ec2, EVERY_STATE)) == 1
        assert slurm_nodes(slurm) == name
        wait_until(
            "the job's output", lambda: out.exists() and out.read_text().strip(), 60, run.ctl
        )
        assert out.read_text().split() == ["ran", "on", name]

        # SIGTERM with the node up: out of Slurm, terminated, nothing left.
        assert run.ctl.terminate() == 0, run.ctl.log_text()
        assert fleet_instances(ec2) == [] and fleet_groups(ec2) == []
        assert slurm_nodes(slurm) == ""
        slurm.stop_node(name)  # the instance is gone, and its slurmd with it
        node_sshd.stop()
        assert slurm_nodes(slurm) == ""
        assert [i["InstanceId"] for i in fleet_instances(ec2, EVERY_STATE)] == [node["InstanceId"]]
    finally:
        run.ctl.ensure_dead()
        forget_node(slurm, name)
