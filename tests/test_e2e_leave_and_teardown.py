"""on_exit = "leave", adoption by the next start, and `controller teardown` of what is left."""

from __future__ import annotations

import subprocess
import sys
import time

from tests.harness.e2e import (
    Controller,
    assert_fleet_gone,
    fleet_groups,
    fleet_instances,
    listed,
    wait_until,
    write_config,
)
from tests.harness.render_farm import SteadyLoad


def test_leave_then_adopt_then_teardown_command(tmp_path, moto_ec2, apache, render_farm):
    farm = write_config(tmp_path, moto_ec2, apache, render_farm, "[[2.0, 2, 2]]")
    farm.config.write_text(
        farm.config.read_text().replace('on_exit = "teardown"', 'on_exit = "leave"')
    )
    ec2 = moto_ec2.client()
    load = SteadyLoad("127.0.0.1", apache.port, rps=10)
    ctl = Controller(farm)
    try:
        wait_until("two slaves listed", lambda: len(listed(farm)) == 2, 60, ctl)
        assert ctl.terminate() == 0, ctl.log_text()
        # Left running: the slaves, their group and renderfarm.conf stay for the next start.
        left = {i["InstanceId"] for i in fleet_instances(ec2)}
        assert len(left) == 2 and len(fleet_groups(ec2)) == 1 and len(listed(farm)) == 2

        ctl = Controller(farm)
        time.sleep(8)
        assert {i["InstanceId"] for i in fleet_instances(ec2)} == left, "not adopted"
        wait_until("both still listed", lambda: len(listed(farm)) == 2, 20, ctl)
        load.stop()
        ctl.kill9()

        done = subprocess.run(
            [sys.executable, "-m", "controller.cli", "teardown", "-c", str(farm.config)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert done.stdout.strip(), "teardown printed no progress"
        assert_fleet_gone(ec2, farm)
    finally:
        load.stop()
        ctl.ensure_dead()
