"""SIGHUP re-reads the config without touching the fleet; a bad new config is refused."""

from __future__ import annotations

import signal
import time
from dataclasses import replace

from controller.config.reader import load_config
from controller.config.reload import reload_problems
from tests.harness.e2e import Controller, fleet_instances, healthy, listed, wait_until, write_config
from tests.harness.render_farm import SteadyLoad


def test_tuning_keys_reload_but_identity_keys_need_a_restart(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[controller]\nfleet = "a"\n')
    old = load_config(str(path))
    tuned = replace(old, scaling=replace(old.scaling, scale_in_after=60.0))
    assert reload_problems(old, tuned) == []
    moved = replace(old, controller=replace(old.controller, fleet="b"))
    (problem,) = reload_problems(old, moved)
    assert "controller.fleet" in problem and "restart" in problem


CLUSTER_CONFIG = """
[controller]
fleet = "a"

[cluster.base]
image_id = "ami-1"
ssh_key_file = "/etc/controller/cluster_key"
plugins = ["sge"]
volumes = ["data"]

[cluster.small]
extends = "base"
max_nodes = 4

[volume.data]
snapshot_id = "snap-1"
mount_path = "/data"

[plugin.sge]
kind = "sge"
"""


def test_cluster_tuning_keys_reload_but_what_nodes_are_set_up_with_needs_a_restart(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(CLUSTER_CONFIG)
    old = load_config(str(path))

    def edited(old_text: str, new_text: str):
        path.write_text(CLUSTER_CONFIG.replace(old_text, new_text))
        return reload_problems(old, load_config(str(path)))

    tuned = CLUSTER_CONFIG.replace("max_nodes = 4", "max_nodes = 2\nmin_nodes = 1\nnode_slots = 4")
    path.write_text(tuned.replace('image_id = "ami-1"', 'image_id = "ami-2"\nspot_bid = 0.2'))
    assert reload_problems(old, load_config(str(path))) == []

    (problem,) = edited("max_nodes = 4", "max_nodes = 4\nssh_port = 2222")
    assert problem.startswith(f"{path}: cluster.small.ssh_port: changed from 22 to 2222")
    assert "restart" in problem
    # A key of the base changes every cluster extending it.
    problems = edited('plugins = ["sge"]', "plugins = []")
    assert sorted(p.split(": ")[1] for p in problems) == [
        "cluster.base.plugins",
        "cluster.small.plugins",
    ]
    # Values read as the config has them, not as Python shows them.
    assert 'changed from ["sge"] to []' in problems[0]
    problems = edited('snapshot_id = "snap-1"', 'snapshot_id = "snap-2"')
    assert [p.split(": ")[1] for p in problems] == [
        "volume.data (used by cluster.base)",
        "volume.data (used by cluster.small)",
    ]
    assert edited('kind = "sge"', 'kind = "sge"\ncell = "other"') != []
    (problem,) = edited('[cluster.small]\nextends = "base"\nmax_nodes = 4\n', "")
    assert "cluster.small: removed" in problem


def test_sighup_applies_a_valid_config_and_keeps_the_fleet(tmp_path, moto_ec2, apache, render_farm):
    farm = write_config(tmp_path, moto_ec2, apache, render_farm, "[[2.0, 1, 1]]")
    ec2 = moto_ec2.client()
    load = SteadyLoad("127.0.0.1", apache.port, rps=10)
    ctl = Controller(farm)
    try:
        wait_until("one slave listed", lambda: len(listed(farm)) == 1, 60, ctl)
        before = {i["InstanceId"] for i in fleet_instances(ec2)}
        good = farm.config.read_text()

        # A broken file: refused with the key named, the old config stays, nothing moves.
        farm.config.write_text(good.replace("poll_interval = 1", "poll_interval = -1"))
        ctl.proc.send_signal(signal.SIGHUP)
        wait_until(
            "the bad reload refused",
            lambda: (
                "master.poll_interval" in ctl.log_text() and "reload_rejected" in ctl.log_text()
            ),
            10,
            ctl,
        )
        # A change of identity: refused too.
        farm.config.write_text(good.replace('fleet = "e2e"', 'fleet = "other"'))
        ctl.proc.send_signal(signal.SIGHUP)
        wait_until(
            "the fleet change refused", lambda: "controller.fleet" in ctl.log_text(), 10, ctl
        )

        # A valid tuning change: applied.
        farm.config.write_text(good.replace("scale_in_after = 4", "scale_in_after = 30"))
        ctl.proc.send_signal(signal.SIGHUP)
        wait_until("the reload applied", lambda: "config.reloaded" in ctl.log_text(), 10, ctl)
        time.sleep(2)
        assert ctl.proc.poll() is None and healthy(farm)
        assert {i["InstanceId"] for i in fleet_instances(ec2)} == before
        assert len(listed(farm)) == 1
        # The new dwell is in force: without load the slave now stays well past the old 4 s.
        load.stop()
        time.sleep(12)
        assert {i["InstanceId"] for i in fleet_instances(ec2)} == before
        assert ctl.terminate() == 0, ctl.log_text()
    finally:
        load.stop()
        ctl.ensure_dead()
