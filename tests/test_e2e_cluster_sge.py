"""`controller run --cluster` against a real Grid Engine, through the contract: a Segway job
asking for `mem_requested` before any node exists is accepted and gets a node, and `kill -9`,
again and again, never costs a healthy node.

Kills: during the nodes' setup, every node ends adopted or cleanly replaced, never both, and no
host stays in Grid Engine without an instance; once the nodes are ready, every one of them is
adopted, every time; and a setup command that is not idempotent runs once per node, however
often the node is set up again.

The set-up of tests/test_e2e_cluster.py (moto, a real Grid Engine, one sshd answering on every
127.0.20.x address), with a `commands` plugin that appends the node's address to a file (from
$SSH_CONNECTION: every "node" is this machine) and then takes a second, so that a kill often
lands in the middle of a setup.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

from tests.harness.e2e import Controller, Farm, fleet_instances, healthy, wait_until
from tests.harness.gridengine import MASTER_MEMORY, GridEngine
from tests.test_e2e_cluster import (  # noqa: F401 - no_node_state_left: an autouse fixture
    EVERY_STATE,
    exec_hosts,
    forget_nodes,
    hostname,
    no_node_state_left,
    qsub,
    queue_hosts,
    write_cluster_config,
)

pytestmark = [pytest.mark.timeout(400)]

KILLS_DURING_SETUP = 5
KILLS_WHEN_READY = 2


def add_a_slow_run_once_command(farm: Farm, ran: Path) -> None:
    text = farm.config.read_text().replace(
        'plugins = ["segway-env", "sge"]', 'plugins = ["segway-env", "once", "sge"]'
    )
    farm.config.write_text(
        text
        + f"""
[plugin.once]
kind = "commands"
commands = ["echo $SSH_CONNECTION | cut -d' ' -f3 >> {ran}", "sleep 1"]
"""
    )


class Run:
    """The controller process of the moment, and what its own log says."""

    def __init__(self, farm: Farm) -> None:
        self.farm = farm
        self.offset = farm.log.stat().st_size if farm.log.exists() else 0
        self.ctl = Controller(farm, "--cluster", "small")

    def count(self, event: str) -> int:
        with open(self.farm.log, errors="replace") as f:
            f.seek(self.offset)
            return f.read().count(f'"event": "{event}"')

    def restart(self) -> Run:
        self.ctl.kill9()
        return Run(self.farm)


def settled(ge: GridEngine, ec2, run: Run) -> bool:
    """Two instances alive, set up by this process, registered as the only hosts of the
    queue."""
    alive = fleet_instances(ec2)
    names = {hostname(i) for i in alive}
    return (
        len(alive) == 2
        and run.count("node.ready") >= 2
        and exec_hosts(ge) == names
        and queue_hosts(ge) == names
    )


def test_kill_9_again_and_again_adopts_or_replaces_cleanly(
    tmp_path, moto_ec2, ge: GridEngine, sshd_factory, monkeypatch
):
    sshd = sshd_factory(address="0.0.0.0")
    farm = write_cluster_config(tmp_path, moto_ec2, ge, sshd)
    ran = tmp_path / "ran"
    add_a_slow_run_once_command(farm, ran)
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path))
    ec2 = moto_ec2.client()
    rng = random.Random(16)
    qsub(ge, 2)  # two nodes wanted for as long as the test runs (the jobs never start)
    run = Run(farm)
    try:
        for _ in range(KILLS_DURING_SETUP):
            # A setup under way (new nodes at first, then the adopted ones set up again),
            # killed a random moment into it.
            wait_until("a node setup", lambda r=run: r.count("node.setup_started") > 0, 40, run.ctl)
            time.sleep(rng.uniform(0.0, 2.5))
            run = run.restart()
            wait_until("the restarted controller", lambda: healthy(farm), 30, run.ctl)

        wait_until("two nodes set up", lambda: settled(ge, ec2, run), 60, run.ctl)
        alive = {i["InstanceId"] for i in fleet_instances(ec2)}
        # Adopted or replaced, never both: two alive, and every other instance ever launched
        # ended and out of Grid Engine.
        for instance in fleet_instances(ec2, EVERY_STATE):
            if instance["InstanceId"] not in alive:
                assert instance["State"]["Name"] in ("shutting-down", "terminated")
                assert hostname(instance) not in exec_hosts(ge) | queue_hosts(ge)

        for _ in range(KILLS_WHEN_READY):
            launched = len(fleet_instances(ec2, EVERY_STATE))
            run = run.restart()
            wait_until("adopted and set up again", lambda r=run: settled(ge, ec2, r), 60, run.ctl)
            assert {i["InstanceId"] for i in fleet_instances(ec2)} == alive
            assert len(fleet_instances(ec2, EVERY_STATE)) == launched
            assert run.count("node.setup_failed") == 0

        # The command that is not idempotent ran once on each node there is.
        lines = ran.read_text().split()
        for instance in fleet_instances(ec2):
            assert lines.count(instance["PrivateIpAddress"]) == 1, lines
        assert run.ctl.terminate() == 0, run.ctl.log_text()
        assert fleet_instances(ec2) == []
        assert exec_hosts(ge) == set() and queue_hosts(ge) == set()
    finally:
        run.ctl.ensure_dead()
        forget_nodes(ge)


def test_a_mem_requested_job_before_any_node_gets_one(
    tmp_path, moto_ec2, ge: GridEngine, sshd_factory, monkeypatch
):
    # A Grid Engine as installed, without the consumable: the seed's users could not submit.
    complexes = ge.run("qconf", "-sc").stdout
    ge.run("qconf", "-rattr", "exechost", "complex_values", "NONE", ge.master_host)
    ge.run_with_file(
        "qconf",
        "-Mc",
        text="".join(f"{ln}\n" for ln in complexes.splitlines() if "mem_requested" not in ln),
    )
    sshd = sshd_factory(address="0.0.0.0")
    farm = write_cluster_config(tmp_path, moto_ec2, ge, sshd)
    farm.config.write_text(
        farm.config.read_text().replace(
            "start_execd = false", "start_execd = false\nhead_is_exec_host = false"
        )
    )
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path))
    ec2 = moto_ec2.client()
    run = Run(farm)
    try:
        wait_until("the stats endpoint", lambda: healthy(farm), 30, run.ctl)
        assert fleet_instances(ec2) == []
        submitted = ge.run(
            "qsub",
            "-b",
            "y",
            "-o",
            "/dev/null",
            "-e",
            "/dev/null",
            "-l",
            "mem_requested=4G",
            "sleep",
            "600",
            check=False,
        )
        assert submitted.returncode == 0, submitted.stdout + submitted.stderr
        wait_until("a node for it", lambda: len(fleet_instances(ec2)) == 1, 30, run.ctl)
        (node,) = fleet_instances(ec2)
        wait_until("the node registered", lambda: exec_hosts(ge) == {hostname(node)}, 40, run.ctl)
        assert run.ctl.terminate() == 0, run.ctl.log_text()
        assert fleet_instances(ec2) == [] and exec_hosts(ge) == set()
    finally:
        run.ctl.ensure_dead()
        forget_nodes(ge)
        ge.delete_all_jobs()
        ge.run_with_file("qconf", "-Mc", text=complexes)
        ge.run("qconf", "-purge", "queue", "slots", f"all.q@{ge.master_host}", check=False)
        ge.run(
            "qconf",
            "-rattr",
            "exechost",
            "complex_values",
            f"mem_requested={MASTER_MEMORY}",
            ge.master_host,
        )
