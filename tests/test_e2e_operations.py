"""Operating the controller end to end: cost, the budget cap, sd_notify, metrics, `status`.

The real `controller run` process against moto (whose spot price is a constant $0.00001/h),
a real Apache under load and the render farm stand-in, as in test_e2e_renderfarm.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request

from tests.harness.e2e import (
    Controller,
    assert_fleet_gone,
    fleet_instances,
    listed,
    status,
    wait_until,
    write_config,
)
from tests.harness.render_farm import SteadyLoad

MOTO_SPOT_PRICE = 0.00001


def test_budget_cap_limits_the_fleet_and_cost_is_reported(tmp_path, moto_ec2, apache, render_farm):
    farm = write_config(
        tmp_path,
        moto_ec2,
        apache,
        render_farm,
        "[[2.0, 4, 4]]",
        scaling_extra="max_cost_per_hour = 0.000025",  # room for two slaves at moto's price
    )
    ec2 = moto_ec2.client()
    load = SteadyLoad("127.0.0.1", apache.port, rps=10)
    ctl = Controller(farm)
    try:
        wait_until("two slaves listed", lambda: len(listed(farm)) == 2, 60, ctl)
        time.sleep(4)  # several more cycles: the cap must hold
        assert len(fleet_instances(ec2)) == 2
        now = status(farm)
        assert now["desired"] == 4
        assert abs(now["cost_per_hour"] - 2 * MOTO_SPOT_PRICE) < 1e-9, now["cost_per_hour"]
        assert now["spend"] > 0
        reasons = " ".join(d.get("reason", "") for d in now["decisions"])
        assert "budget cap" in reasons, reasons

        with urllib.request.urlopen(farm.stats_url + "/metrics", timeout=5) as r:
            metrics = r.read().decode()
        assert "controller_desired 4.0" in metrics
        assert "controller_ready 2.0" in metrics
        assert "controller_launches_total" in metrics

        shown = subprocess.run(
            [sys.executable, "-m", "controller.cli", "status", "--url", farm.stats_url],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert shown.returncode == 0, shown.stderr
        assert "127.0.20." in shown.stdout
        load.stop()
        assert ctl.terminate() == 0, ctl.log_text()
        assert_fleet_gone(ec2, farm)
    finally:
        load.stop()
        ctl.ensure_dead()


def test_sd_notify_ready_status_watchdog_and_stopping(tmp_path, moto_ec2, apache, render_farm):
    farm = write_config(tmp_path, moto_ec2, apache, render_farm, "[[2.0, 1, 1]]")
    sock_path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(sock_path)
    sock.settimeout(1.0)
    os.environ["NOTIFY_SOCKET"] = sock_path
    os.environ["WATCHDOG_USEC"] = "2000000"  # a beat at least every second
    try:
        ctl = Controller(farm)
    finally:
        del os.environ["NOTIFY_SOCKET"], os.environ["WATCHDOG_USEC"]
    seen: list[str] = []

    def receive_until(marker: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not any(marker in s for s in seen):
            assert time.monotonic() < deadline, f"no {marker!r} in {seen}\n{ctl.log_text()}"
            try:
                seen.append(sock.recv(4096).decode())
            except TimeoutError:
                pass

    try:
        receive_until("READY=1", 30)
        receive_until("STATUS=", 30)
        receive_until("WATCHDOG=1", 30)
        ctl.proc.send_signal(15)
        receive_until("STOPPING=1", 30)
        assert ctl.proc.wait(timeout=60) == 0, ctl.log_text()
    finally:
        ctl.ensure_dead()
        sock.close()
