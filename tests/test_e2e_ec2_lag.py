"""EC2's eventual consistency end to end: launches the reads do not show yet.

Real EC2 may leave a just-launched instance out of DescribeInstances, and answer
TerminateInstances on it with InvalidInstanceID.NotFound, for a while after RunInstances returned
it. moto never does, so the fault proxy in front of it hides each new instance for 8 s. The real
`controller run` must neither take such a launch for gone (and launch again, over the band) nor
report "nothing left" on SIGTERM while it runs on.
"""

from __future__ import annotations

import dataclasses
import time

from tests.harness.e2e import (
    Controller,
    assert_fleet_gone,
    fleet_instances,
    listed,
    wait_until,
    write_config,
)
from tests.harness.render_farm import SteadyLoad

HIDDEN_SECONDS = 8.0
EVERY_STATE = ["pending", "running", "shutting-down", "terminated", "stopping", "stopped"]


def test_launches_ec2_does_not_show_yet_are_neither_doubled_nor_left_running(
    tmp_path, moto_ec2, fault_proxy, apache, render_farm
):
    farm = write_config(
        tmp_path,
        dataclasses.replace(moto_ec2, endpoint_url=fault_proxy.endpoint_url),
        apache,
        render_farm,
        "[[2.0, 3, 3]]",
    )
    ec2 = moto_ec2.client()  # the test's own view goes straight to moto
    fault_proxy.hide_new_instances(HIDDEN_SECONDS)
    load = SteadyLoad("127.0.0.1", apache.port, rps=10)
    ctl = Controller(farm)
    try:
        wait_until("three slaves listed", lambda: len(listed(farm)) == 3, 90, ctl)
        # Polled every second through 8 s of not seeing them: still only the three it launched.
        assert len(fleet_instances(ec2, EVERY_STATE)) == 3, ctl.log_text()
        assert "instance.gone" not in ctl.log_text()

        # A slave dies; SIGTERM comes right after its replacement is launched, while EC2 does
        # not show the replacement yet.
        launches = fault_proxy.count("RunInstances")
        render_farm.kill(sorted(listed(farm))[0].split("//")[1].split(":")[0])
        wait_until(
            "the replacement launched",
            lambda: fault_proxy.count("RunInstances") > launches,
            30,
            ctl,
        )
        assert fault_proxy.hidden(), "the replacement should still be hidden"
        load.stop()
        started = time.monotonic()
        assert ctl.terminate() == 0, ctl.log_text()
        assert time.monotonic() - started < 120
        assert_fleet_gone(ec2, farm)
        assert "nothing left" in ctl.log_text()
    finally:
        load.stop()
        fault_proxy.clear()
        ctl.ensure_dead()
