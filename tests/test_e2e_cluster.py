"""A batch cluster end to end: `controller run -c CONFIG --cluster small`, through the contract.

The real controller process runs against moto's EC2 (instances get 127.0.20.x addresses), a real
Grid Engine 8.1.9 in its own network namespace (tests.harness.gridengine; the sge plugin's
`command_prefix` runs the head's clients in that namespace), and one OpenSSH sshd listening on
0.0.0.0:PORT, which answers on every 127.0.20.x address moto hands out: each "node" is this
machine, logged in to over SSH and set up by a profile plugin that writes into a temp dir. No
execd runs for the nodes, so jobs stay queued until the test deletes them, and the jobs ask for
more mem_requested than the head offers, so they never run there either.

The test reads what a user sees: EC2's state and tags, Grid Engine's host lists, the file the
plugin wrote, the stats endpoint and the exit code.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller.cli import main
from controller.gridengine.sge import list_names
from tests.harness.e2e import (
    FLEET,
    Controller,
    Farm,
    cluster_config_head,
    fleet_groups,
    fleet_instances,
    healthy,
    status,
    wait_until,
)
from tests.harness.gridengine import GridEngine
from tests.harness.net import free_port
from tests.harness.sshd import Sshd

pytestmark = [pytest.mark.timeout(150)]

IDLE_SECONDS = 3
NODE_STATE = Path("/run/controller-node")  # ClusterNodeSetup's, on the node: this machine here
EVERY_STATE = ["pending", "running", "shutting-down", "terminated", "stopping", "stopped"]


@pytest.fixture(autouse=True)
def no_node_state_left(moto_ec2) -> Iterator[None]:
    """Every "node" is this machine: their setup state goes with the test."""
    yield
    for instance in fleet_instances(moto_ec2.client(), EVERY_STATE):
        shutil.rmtree(NODE_STATE / instance["InstanceId"], ignore_errors=True)


def write_cluster_config(tmp_path: Path, moto_ec2, ge: GridEngine, sshd: Sshd) -> Farm:
    stats_port = free_port()
    config = tmp_path / "config.toml"
    config.write_text(
        cluster_config_head(moto_ec2, stats_port)
        + f"""
[cluster.base]
node_instance_type = "m5.large"
image_id = "ami-12345678"
subnet = "{moto_ec2.subnet_id}"
ssh_key_file = "{sshd.client_key_path}"
ssh_port = {sshd.port}
plugins = ["segway-env", "sge"]

[cluster.small]
extends = "base"
min_nodes = 0
max_nodes = 3
idle_seconds = {IDLE_SECONDS}

[plugin.segway-env]
kind = "profile"
path = "{tmp_path}/profile.d/segway.sh"
base = "/segway-build"

[plugin.sge]
kind = "sge"
sge_root = "{ge.sge_root}"
cell = "{ge.env["SGE_CELL"]}"
start_execd = false
command_prefix = {json.dumps(list(ge.prefix))}
"""
    )
    return Farm(
        config=config,
        renderfarm=tmp_path / "renderfarm.conf",
        reloads=tmp_path / "reloads.log",
        log=tmp_path / "controller.log",
        stats_url=f"http://127.0.0.1:{stats_port}",
        port=0,
    )


def hostname(instance: dict) -> str:
    return "ip-" + instance["PrivateIpAddress"].replace(".", "-")


def exec_hosts(ge: GridEngine) -> set[str]:
    return {
        h for h in list_names(ge.run("qconf", "-sel", check=False).stdout) if h != ge.master_host
    }


def queue_hosts(ge: GridEngine) -> set[str]:
    queue = ge.run("qconf", "-sq", "all.q").stdout
    line = next(ln for ln in queue.splitlines() if ln.startswith("hostlist"))
    return set(line.split()[1:]) - {ge.master_host}


def qsub(ge: GridEngine, count: int) -> None:
    for _ in range(count):  # more than the head's 2G: the jobs wait for nodes
        ge.run(
            "qsub",
            "-b",
            "y",
            "-o",
            "/dev/null",
            "-e",
            "/dev/null",
            "-l",
            "mem_requested=3G",
            "sleep",
            "600",
        )


def test_cluster_follows_the_queue_and_tears_down(
    tmp_path, moto_ec2, ge: GridEngine, sshd_factory, monkeypatch
):
    sshd = sshd_factory(address="0.0.0.0")
    farm = write_cluster_config(tmp_path, moto_ec2, ge, sshd)
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path))  # where the nodes' host keys are pinned
    ec2 = moto_ec2.client()
    ctl = Controller(farm, "--cluster", "small")
    try:
        wait_until("the stats endpoint", lambda: healthy(farm), 30, ctl)

        # An empty queue and min_nodes = 0: no nodes.
        wait_until("a decision", lambda: "decision" in farm.log.read_text(), 10, ctl)
        assert fleet_instances(ec2) == []

        # Two jobs wait: two nodes at once, tagged as the fleet's nodes, behind the nodes' group.
        qsub(ge, 2)
        nodes = wait_until(
            "two nodes", lambda: len(fleet_instances(ec2)) == 2 and fleet_instances(ec2), 30, ctl
        )
        for inst in nodes:
            assert inst["PrivateIpAddress"].startswith("127.0.20.")
            tags = {t["Key"]: t["Value"] for t in inst["Tags"]}
            assert tags["controller:fleet"] == FLEET and tags["controller:role"] == "node"
        groups = fleet_groups(ec2)
        assert [g["GroupName"] for g in groups] == [f"controller-{FLEET}-nodes"]
        assert {g["GroupId"] for i in nodes for g in i["SecurityGroups"]} == {groups[0]["GroupId"]}
        rules = sorted(
            (p["FromPort"], r["CidrIp"]) for p in groups[0]["IpPermissions"] for r in p["IpRanges"]
        )
        assert rules == sorted(
            [(sshd.port, "127.0.0.1/32"), (6444, "127.0.0.1/32"), (6445, "127.0.0.1/32")]
        )

        # Each node is set up over SSH and registered with Grid Engine under its EC2 name.
        names = {hostname(i) for i in nodes}
        wait_until("both nodes registered", lambda: exec_hosts(ge) == names, 40, ctl)
        wait_until("both nodes in all.q", lambda: queue_hosts(ge) == names, 10, ctl)
        for name in names:
            assert "mem_requested=" in ge.run("qconf", "-se", name).stdout
        assert "/segway-build" in (tmp_path / "profile.d" / "segway.sh").read_text()
        assert status(farm)["desired"] == 2
        assert len(fleet_instances(ec2)) == 2  # no second launch while they were set up

        # The queue empties: the idle nodes leave Grid Engine and EC2 after idle_seconds.
        ge.delete_all_jobs()
        wait_until("scale-in to zero", lambda: fleet_instances(ec2) == [], 40, ctl)
        wait_until("nodes deregistered", lambda: exec_hosts(ge) == set(), 10, ctl)
        assert queue_hosts(ge) == set()
        assert "node.draining" in farm.log.read_text()

        # One job again, then SIGTERM: the node is deregistered and nothing of the fleet is left.
        qsub(ge, 1)
        wait_until("one node registered", lambda: len(exec_hosts(ge)) == 1, 40, ctl)
        assert len(fleet_instances(ec2)) == 1
        assert ctl.terminate() == 0, ctl.log_text()
        assert fleet_instances(ec2) == []
        assert fleet_groups(ec2) == []
        assert exec_hosts(ge) == set() and queue_hosts(ge) == set()
    finally:
        ctl.ensure_dead()
        for name in exec_hosts(ge):  # leave the session's Grid Engine as it was
            ge.run("qconf", "-dattr", "queue", "hostlist", name, "all.q", check=False)
            ge.run("qconf", "-de", name, check=False)
            ge.run("qconf", "-dh", name, check=False)


def test_dry_run_cluster_decides_and_creates_nothing(
    tmp_path, moto_ec2, ge: GridEngine, sshd_factory
):
    sshd = sshd_factory(address="0.0.0.0")
    farm = write_cluster_config(tmp_path, moto_ec2, ge, sshd)
    ec2 = moto_ec2.client()
    groups_before = ec2.describe_security_groups()["SecurityGroups"]
    qsub(ge, 2)
    ctl = Controller(farm, "--cluster", "small", "--dry-run")
    try:
        wait_until(
            "a dry-run launch of two nodes",
            lambda: "dry_run.would_launch" in farm.log.read_text(errors="replace"),
            30,
            ctl,
        )
        assert status(farm)["dry_run"] is True
        assert status(farm)["desired"] == 2
        assert fleet_instances(ec2, ["pending", "running", "terminated", "shutting-down"]) == []
        assert ec2.describe_security_groups()["SecurityGroups"] == groups_before
        assert ctl.terminate() == 0, ctl.log_text()
        assert exec_hosts(ge) == set()
    finally:
        ctl.ensure_dead()


def test_unknown_cluster_is_one_line_and_exit_2(tmp_path, moto_ec2, ge: GridEngine, sshd_factory):
    sshd = sshd_factory()
    farm = write_cluster_config(tmp_path, moto_ec2, ge, sshd)
    ctl = Controller(farm, "--cluster", "nosuch")
    assert ctl.proc.wait(timeout=30) == 2
    ctl.ensure_dead()
    text = farm.log.read_text()
    assert "--cluster nosuch: no [cluster.nosuch] section (defined: base, small)" in text


def test_kill_9_then_restart_adopts_the_nodes(
    tmp_path, moto_ec2, ge: GridEngine, sshd_factory, monkeypatch
):
    sshd = sshd_factory(address="0.0.0.0")
    farm = write_cluster_config(tmp_path, moto_ec2, ge, sshd)
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path))
    ec2 = moto_ec2.client()
    qsub(ge, 1)
    ctl = Controller(farm, "--cluster", "small")
    try:
        wait_until("one node registered", lambda: len(exec_hosts(ge)) == 1, 40, ctl)
        # Grid Engine lists the node a few qconf calls before its setup is done.
        wait_until("the node ready", lambda: "node.ready" in farm.log.read_text(), 20, ctl)
        before = {i["InstanceId"] for i in fleet_instances(ec2)}
        ctl.kill9()

        ctl = Controller(farm, "--cluster", "small")
        wait_until("the restarted controller", lambda: healthy(farm), 30, ctl)
        wait_until(
            "the adopted node set up again",
            lambda: farm.log.read_text().count("node.ready") >= 2,
            30,
            ctl,
        )
        assert {i["InstanceId"] for i in fleet_instances(ec2)} == before, "launched twice"
        assert len(exec_hosts(ge)) == 1
        assert ctl.terminate() == 0, ctl.log_text()
        assert fleet_instances(ec2) == [] and fleet_groups(ec2) == []
        assert exec_hosts(ge) == set()
    finally:
        ctl.ensure_dead()
        for name in exec_hosts(ge):
            ge.run("qconf", "-dattr", "queue", "hostlist", name, "all.q", check=False)
            ge.run("qconf", "-de", name, check=False)
            ge.run("qconf", "-dh", name, check=False)


def forget_nodes(ge: GridEngine) -> None:
    """Leave the session's Grid Engine as it was."""
    for name in exec_hosts(ge) | queue_hosts(ge):
        ge.run("qconf", "-dattr", "queue", "hostlist", name, "all.q", check=False)
        ge.run("qconf", "-de", name, check=False)
        ge.run("qconf", "-ds", name, check=False)
        ge.run("qconf", "-dh", name, check=False)


def test_teardown_cluster_takes_a_left_fleet_out_of_grid_engine(
    tmp_path, moto_ec2, ge: GridEngine, sshd_factory, monkeypatch, capsys
):
    sshd = sshd_factory(address="0.0.0.0")
    farm = write_cluster_config(tmp_path, moto_ec2, ge, sshd)
    farm.config.write_text(farm.config.read_text().replace('"teardown"', '"leave"'))
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path))
    ec2 = moto_ec2.client()
    qsub(ge, 2)
    ctl = Controller(farm, "--cluster", "small")
    try:
        wait_until("two nodes registered", lambda: len(exec_hosts(ge)) == 2, 40, ctl)
        assert ctl.terminate() == 0, ctl.log_text()
        nodes = fleet_instances(ec2)
        names = {hostname(i) for i in nodes}
        assert len(nodes) == 2 and exec_hosts(ge) == names  # on_exit = "leave": all still there
        # One node already gone from Grid Engine by hand: that is fine.
        gone, kept = sorted(names)
        ge.run("qconf", "-dattr", "queue", "hostlist", gone, "all.q")
        ge.run("qconf", "-de", gone)
        capsys.readouterr()

        code = main(["teardown", "-c", str(farm.config), "--cluster", "small"])

        out = capsys.readouterr().out
        assert code == 0, out
        lines = out.splitlines()
        taken = [ln for ln in lines if ln.endswith("taken out of Grid Engine")]
        assert sorted(ln.split()[1] for ln in taken) == [gone, kept]
        terminating = next(i for i, ln in enumerate(lines) if ln.startswith("terminating 2"))
        assert max(lines.index(ln) for ln in taken) < terminating  # Grid Engine first
        assert not any(ln.startswith("renderfarm.conf") for ln in lines)
        assert fleet_instances(ec2) == [] and fleet_groups(ec2) == []
        assert exec_hosts(ge) == set() and queue_hosts(ge) == set()
        assert not names & set(list_names(ge.run("qconf", "-sh").stdout))
    finally:
        ctl.ensure_dead()
        forget_nodes(ge)


def test_teardown_cluster_terminates_even_when_grid_engine_is_unreachable(
    tmp_path, moto_ec2, ge: GridEngine, sshd_factory, capsys
):
    sshd = sshd_factory()
    farm = write_cluster_config(tmp_path, moto_ec2, ge, sshd)
    # Without the prefix the clients run outside the qmaster's network namespace: nothing
    # answers on its port there, as when the head's qmaster is down.
    farm.config.write_text(farm.config.read_text().replace("command_prefix", "# command_prefix"))
    ec2 = moto_ec2.client()
    tags = [
        {"Key": "controller:fleet", "Value": FLEET},
        {"Key": "controller:role", "Value": "node"},
    ]
    ec2.run_instances(
        ImageId="ami-12345678",
        MinCount=2,
        MaxCount=2,
        SubnetId=moto_ec2.subnet_id,
        TagSpecifications=[{"ResourceType": "instance", "Tags": tags}],
    )
    capsys.readouterr()

    code = main(["teardown", "-c", str(farm.config), "--cluster", "small"])

    out = capsys.readouterr().out
    assert code == 1, out  # the nodes may still be listed in Grid Engine
    (line,) = [ln for ln in out.splitlines() if ln.startswith("sge:")]
    assert line.startswith("sge: cannot reach Grid Engine on the head: `qconf -sh`")
    assert "terminating anyway" in line and "qconf -de HOST" in line
    assert fleet_instances(ec2) == []
