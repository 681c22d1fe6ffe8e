"""The GBrowse render farm end to end, through the contract only (../shared/SPEC.md).

The controller runs as a real `controller run -c CONFIG` process against moto's EC2 server, a real
Apache with mod_status driven by a steady load, and a render farm stand-in that answers 403 on
every 127.0.20.x address moto gives the instances. The test reads only what a user can see:
EC2's state, renderfarm.conf, the reload command's trace, the stats endpoint, the exit code.
"""

from __future__ import annotations

import itertools
import time

from tests.harness.e2e import (
    ALIVE,
    FLEET,
    Controller,
    assert_fleet_gone,
    fleet_groups,
    fleet_instances,
    healthy,
    listed,
    reload_snapshots,
    status,
    urls,
    wait_until,
    write_config,
)
from tests.harness.render_farm import SteadyLoad


def test_render_farm_follows_load_and_tears_down(tmp_path, moto_ec2, apache, render_farm):
    farm = write_config(tmp_path, moto_ec2, apache, render_farm, "[[2.0, 2, 2], [1000.0, 3, 3]]")
    ec2 = moto_ec2.client()
    ctl = Controller(farm)
    load = None
    try:
        wait_until("the stats endpoint", lambda: healthy(farm), 30, ctl)

        # No load: no slaves, and the empty renderfarm.conf.
        time.sleep(4)
        assert fleet_instances(ec2) == []
        assert "renderfarm = 0" in farm.renderfarm.read_text()

        # Load in the band [2, 2]: two spot slaves in the 127 subnet behind a master-only group.
        load = SteadyLoad("127.0.0.1", apache.port, rps=10)
        running = wait_until(
            "two slaves", lambda: len(fleet_instances(ec2)) == 2 and fleet_instances(ec2), 40, ctl
        )
        for inst in running:
            assert inst["PrivateIpAddress"].startswith("127.0.20.")
            assert inst.get("InstanceLifecycle") == "spot"
            tags = {t["Key"]: t["Value"] for t in inst["Tags"]}
            assert tags["controller:fleet"] == FLEET and tags["controller:role"] == "slave"
        groups = fleet_groups(ec2)
        assert len(groups) == 1
        assert {g["GroupId"] for i in running for g in i["SecurityGroups"]} == {
            groups[0]["GroupId"]
        }
        rules = [
            (p["FromPort"], p["ToPort"], r["CidrIp"])
            for p in groups[0]["IpPermissions"]
            for r in p["IpRanges"]
        ]
        assert rules == [(farm.port, farm.port, "127.0.0.1/32")]

        # renderfarm.conf lists exactly the ready slaves; one reload per change, never without.
        wait_until("both slaves listed", lambda: listed(farm) == urls(farm, running), 30, ctl)
        snaps = reload_snapshots(farm)
        assert snaps, "the reload command never ran"
        assert all(a != b for a, b in itertools.pairwise(snaps)), "reloaded without a change"
        assert snaps[-1] == farm.renderfarm.read_text()

        # A slave that stops answering leaves the file at once and is replaced.
        victim = running[0]
        render_farm.kill(victim["PrivateIpAddress"])
        victim_url = f"http://{victim['PrivateIpAddress']}:{farm.port}"
        wait_until("the dead slave unlisted", lambda: victim_url not in listed(farm), 30, ctl)

        def replaced():
            now = fleet_instances(ec2)
            ids = {i["InstanceId"] for i in now}
            return (
                len(now) == 2
                and victim["InstanceId"] not in ids
                and listed(farm) == urls(farm, now)
            )

        wait_until("a replacement slave listed", replaced, 60, ctl)
        assert status(farm)["desired"] == 2

        # Load gone: scale-in after the dwell, slaves drained out of the file first.
        load.stop()
        load = None
        wait_until("scale-in to zero", lambda: fleet_instances(ec2) == [], 60, ctl)
        wait_until("empty renderfarm.conf", lambda: listed(farm) == set(), 10, ctl)

        # Scale out again, then SIGTERM: nothing of the fleet is left.
        load = SteadyLoad("127.0.0.1", apache.port, rps=10)
        wait_until("two slaves again", lambda: len(fleet_instances(ec2)) == 2, 40, ctl)
        load.stop()
        load = None
        assert ctl.terminate() == 0, ctl.log_text()
        assert_fleet_gone(ec2, farm)
    finally:
        if load is not None:
            load.stop()
        ctl.ensure_dead()


def test_kill_9_then_restart_adopts_and_never_exceeds_band(tmp_path, moto_ec2, apache, render_farm):
    farm = write_config(tmp_path, moto_ec2, apache, render_farm, "[[2.0, 3, 3]]")
    ec2 = moto_ec2.client()
    load = SteadyLoad("127.0.0.1", apache.port, rps=10)
    ctl = Controller(farm)
    try:
        wait_until("the first launch", lambda: fleet_instances(ec2), 40, ctl)
        ctl.kill9()
        group_ids = {g["GroupId"] for g in fleet_groups(ec2)}

        ctl = Controller(farm)
        most = 0
        deadline = time.monotonic() + 25
        while time.monotonic() < deadline:
            count = len(fleet_instances(ec2))
            most = max(most, count)
            time.sleep(0.3)
        assert most <= 3, f"fleet grew to {most} > band max 3"
        wait_until("three slaves listed", lambda: len(listed(farm)) == 3, 30, ctl)
        assert {g["GroupId"] for g in fleet_groups(ec2)} == group_ids, "group not adopted"
        load.stop()
        assert ctl.terminate() == 0, ctl.log_text()
        assert_fleet_gone(ec2, farm)
    finally:
        load.stop()
        ctl.ensure_dead()


def test_lost_sensor_holds_the_fleet(tmp_path, moto_ec2, apache, render_farm):
    farm = write_config(tmp_path, moto_ec2, apache, render_farm, "[[2.0, 2, 2]]")
    ec2 = moto_ec2.client()
    load = SteadyLoad("127.0.0.1", apache.port, rps=10)
    ctl = Controller(farm)
    try:
        wait_until("two slaves listed", lambda: len(listed(farm)) == 2, 60, ctl)
        before = {i["InstanceId"] for i in fleet_instances(ec2)}
        load.stop()
        apache.stop()
        # Far longer than scale_in_after: with the sensor lost the fleet must hold.
        deadline = time.monotonic() + 12
        while time.monotonic() < deadline:
            assert {i["InstanceId"] for i in fleet_instances(ec2)} == before
            time.sleep(0.5)
        sensor = status(farm).get("sensor", {})
        assert sensor.get("ok") is False, sensor
        assert len(listed(farm)) == 2
        apache.start()
        assert ctl.terminate() == 0, ctl.log_text()
        assert_fleet_gone(ec2, farm)
    finally:
        load.stop()
        ctl.ensure_dead()


def test_dry_run_under_load_creates_nothing(tmp_path, moto_ec2, apache, render_farm):
    farm = write_config(tmp_path, moto_ec2, apache, render_farm, "[[2.0, 2, 2]]")
    ec2 = moto_ec2.client()
    groups_before = ec2.describe_security_groups()["SecurityGroups"]
    load = SteadyLoad("127.0.0.1", apache.port, rps=10)
    ctl = Controller(farm, "--dry-run")
    try:
        wait_until("the stats endpoint", lambda: healthy(farm), 30, ctl)
        wait_until(
            "a dry-run launch decision",
            lambda: "dry_run.would_launch" in farm.log.read_text(errors="replace"),
            30,
            ctl,
        )
        assert fleet_instances(ec2, [*ALIVE, "terminated", "shutting-down"]) == []
        assert ec2.describe_security_groups()["SecurityGroups"] == groups_before
        assert not farm.renderfarm.exists()
        assert status(farm)["dry_run"] is True
        load.stop()
        assert ctl.terminate() == 0, ctl.log_text()
        assert not farm.renderfarm.exists()
        assert not farm.reloads.exists()
    finally:
        load.stop()
        ctl.ensure_dead()
