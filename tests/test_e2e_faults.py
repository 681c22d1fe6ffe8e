"""Surviving EC2 faults end to end: a dead endpoint, 5xx, throttling and capacity errors.

The real `controller run` talks to moto through the fault-injecting proxy, so the faults are what
EC2 would send (error XML, HTTP 503, refused connections), not patched code. Through all of it the
fleet must hold: no slave leaves renderfarm.conf, nothing is terminated, no actor dies, and once
the faults stop the controller carries on and still tears down cleanly.
"""

from __future__ import annotations

import dataclasses
import time
import urllib.request

from tests.harness.e2e import (
    Controller,
    assert_fleet_gone,
    fleet_instances,
    healthy,
    listed,
    wait_until,
    write_config,
)
from tests.harness.render_farm import SteadyLoad


def through_proxy(moto_ec2, proxy):
    return dataclasses.replace(moto_ec2, endpoint_url=proxy.endpoint_url)


def test_the_fleet_holds_through_ec2_faults_and_recovers(
    tmp_path, moto_ec2, fault_proxy, apache, render_farm
):
    farm = write_config(
        tmp_path, through_proxy(moto_ec2, fault_proxy), apache, render_farm, "[[2.0, 2, 2]]"
    )
    ec2 = moto_ec2.client()  # the test's own view goes straight to moto
    load = SteadyLoad("127.0.0.1", apache.port, rps=10)
    ctl = Controller(farm)
    try:
        wait_until("two slaves listed", lambda: len(listed(farm)) == 2, 60, ctl)
        before = {i["InstanceId"] for i in fleet_instances(ec2)}
        slaves = listed(farm)

        def holds(seconds: float) -> None:
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                assert ctl.proc.poll() is None, ctl.log_text()
                assert {i["InstanceId"] for i in fleet_instances(ec2)} == before
                assert listed(farm) == slaves
                time.sleep(0.5)

        # The endpoint is dead (connections refused), then answers 503, then throttles.
        fault_proxy.down()
        holds(6)
        fault_proxy.up()
        fault_proxy.down(status=503)
        holds(5)
        fault_proxy.up()
        fault_proxy.fail("DescribeInstances", "RequestLimitExceeded", "Request limit exceeded.")
        holds(5)
        fault_proxy.clear()
        assert healthy(farm)
        with urllib.request.urlopen(farm.stats_url + "/metrics", timeout=5) as r:
            metrics = r.read().decode()
        assert 'controller_ec2_errors_total{kind="throttled"}' in metrics, metrics
        assert 'controller_ec2_errors_total{kind="unavailable"}' in metrics, metrics

        # A capacity error on launch: the controller keeps trying and fills the band when it lifts.
        fault_proxy.fail(
            "RunInstances", "InsufficientInstanceCapacity", "We currently do not have capacity."
        )
        render_farm.kill(sorted(slaves)[0].split("//")[1].split(":")[0])
        wait_until("the dead slave unlisted", lambda: len(listed(farm)) == 1, 30, ctl)
        time.sleep(3)
        assert fault_proxy.count("RunInstances") >= 1
        assert len(listed(farm)) == 1
        fault_proxy.clear()
        wait_until("the band filled again", lambda: len(listed(farm)) == 2, 60, ctl)

        load.stop()
        assert ctl.terminate() == 0, ctl.log_text()
        assert_fleet_gone(ec2, farm)
    finally:
        load.stop()
        fault_proxy.clear()
        ctl.ensure_dead()
