"""Driving the real `controller run` process in end-to-end tests, and reading what users see.

Everything here goes through the contract only (../shared/SPEC.md): a TOML config, the command
line, EC2's state, renderfarm.conf, the reload command's trace, the stats endpoint and the exit
code.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.harness.net import free_port
from tests.harness.render_farm import RenderFarm

FLEET = "e2e"
ALIVE = ["pending", "running"]


@dataclass
class Farm:
    config: Path
    renderfarm: Path
    reloads: Path
    log: Path
    stats_url: str
    port: int


@pytest.fixture
def render_farm() -> Iterator[RenderFarm]:
    farm = RenderFarm(free_port())
    try:
        yield farm
    finally:
        farm.close()


def write_config(
    tmp_path: Path, moto_ec2, apache, farm: RenderFarm, rows: str, scaling_extra: str = ""
) -> Farm:
    renderfarm = tmp_path / "renderfarm.conf"
    reloads = tmp_path / "reloads.log"
    stats_port = free_port()
    # The reload command records the file it reloaded, so the test can count reloads per change.
    reload = ["sh", "-c", f"cat {renderfarm} >> {reloads}; echo '----' >> {reloads}"]
    config = tmp_path / "config.toml"
    config.write_text(
        f"""
[controller]
fleet = "{FLEET}"
on_exit = "teardown"

[master]
server_status_url = "{apache.status_url}"
poll_interval = 1
external_ip = "127.0.0.1"
renderfarm_conf = "{renderfarm}"
reload_command = {json.dumps(reload)}
window_seconds = 3
status_timeout = 2

[load_table]
rows = {rows}

[scaling]
scale_in_after = 4
drain_seconds = 1
request_timeout = 60
probe_timeout = 1
{scaling_extra}

[slave]
instance_type = "m5.large"
ports = [{farm.port}]
region = "us-east-1"
image_id = "ami-12345678"
subnet = "{moto_ec2.subnet_id}"

[aws]
endpoint_url = "{moto_ec2.endpoint_url}"
sqs_endpoint_url = "{moto_ec2.endpoint_url}"
max_attempts = 2
call_timeout = 10

[stats]
listen = "127.0.0.1:{stats_port}"
"""
    )
    return Farm(
        config=config,
        renderfarm=renderfarm,
        reloads=reloads,
        log=tmp_path / "controller.log",
        stats_url=f"http://127.0.0.1:{stats_port}",
        port=farm.port,
    )


class Controller:
    """`controller run` as a child process, its output in a file; `prefix` runs it through a
    command that execs it (nsenter), `env` adds to its environment."""

    def __init__(
        self,
        farm: Farm,
        *extra: str,
        prefix: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.farm = farm
        self._log = open(farm.log, "ab")
        self.proc = subprocess.Popen(
            [
                *prefix,
                *(sys.executable, "-m", "controller.cli", "run", "-c", str(farm.config)),
                *extra,
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )

    def log_text(self) -> str:
        return self.farm.log.read_text(errors="replace")[-6000:]

    def terminate(self, timeout: float = 120) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self._log.close()

    def kill9(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=10)
        self._log.close()

    def ensure_dead(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self._log.close()


def cluster_config_head(moto_ec2, stats_port: int) -> str:
    """The part of a batch-cluster e2e config before its [cluster.X]: the fleet, a 1 s poll, the
    master on 127.0.0.1, moto's server as EC2, the stats endpoint."""
    return f"""
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
"""


def wait_until(what: str, predicate: Callable[[], object], timeout: float, ctl: Controller):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if ctl.proc.poll() is not None:
            pytest.fail(
                f"controller exited ({ctl.proc.returncode}) waiting for {what}:\n{ctl.log_text()}"
            )
        time.sleep(0.3)
    pytest.fail(f"timed out after {timeout}s waiting for {what}:\n{ctl.log_text()}")


def fleet_instances(ec2, states: list[str] = ALIVE) -> list[dict]:
    pages = ec2.get_paginator("describe_instances").paginate(
        Filters=[
            {"Name": "tag:controller:fleet", "Values": [FLEET]},
            {"Name": "instance-state-name", "Values": states},
        ]
    )
    return [i for page in pages for r in page["Reservations"] for i in r["Instances"]]


def fleet_groups(ec2) -> list[dict]:
    return ec2.describe_security_groups(
        Filters=[{"Name": "tag:controller:fleet", "Values": [FLEET]}]
    )["SecurityGroups"]


def listed(farm: Farm) -> set[str]:
    if not farm.renderfarm.exists():
        return set()
    return {
        line.strip() for line in farm.renderfarm.read_text().splitlines() if line.startswith("\t")
    }


def urls(farm: Farm, instances: list[dict]) -> set[str]:
    return {f"http://{i['PrivateIpAddress']}:{farm.port}" for i in instances}


def healthy(farm: Farm) -> bool:
    try:
        with urllib.request.urlopen(farm.stats_url + "/healthz", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def status(farm: Farm) -> dict:
    with urllib.request.urlopen(farm.stats_url + "/status", timeout=2) as r:
        return json.load(r)


def reload_snapshots(farm: Farm) -> list[str]:
    if not farm.reloads.exists():
        return []
    return [s for s in farm.reloads.read_text().split("----\n") if s.strip()]


def assert_fleet_gone(ec2, farm: Farm) -> None:
    assert fleet_instances(ec2) == []
    requests = ec2.describe_spot_instance_requests()["SpotInstanceRequests"]
    assert [r for r in requests if r["State"] == "open"] == []
    assert fleet_groups(ec2) == []
    text = farm.renderfarm.read_text()
    assert "renderfarm = 0" in text and listed(farm) == set()
