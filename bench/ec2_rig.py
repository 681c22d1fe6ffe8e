"""The loopback rig of the EC2 bench: moto's server, a counting and timing proxy, Apache with
microsecond access times, fake slaves on every subnet address, and the real `controller run`.

Built from the test harness (tests/harness): moto's EC2 server (here as its own process, so its
work does not delay the proxy's timestamps), the fault proxy (subclassed to stamp each call with
the wall clock on arrival), Apache (subclassed to log every request's begin and end in
microseconds: bench/apache_log.py), the fake slaves (bench/slave_farm.py runs one per address of
the test subnet) and the e2e helpers that start `controller run` and read renderfarm.conf.

`--ec2-fills max` (the default) has the proxy ask moto for MaxCount instances in every
RunInstances, as EC2 launches when it has the capacity; moto alone launches exactly MinCount (1).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

import boto3
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from apache_log import LOG_FORMAT, Hit, parse_hits

from tests.harness import procs
from tests.harness.apache import Apache
from tests.harness.e2e import Controller, Farm, healthy, listed, status
from tests.harness.fault_proxy import FaultProxy, _action_of, _params_of
from tests.harness.moto_server import (
    NO_RETRY,
    REGION,
    SUBNET_CIDR,
    VPC_CIDR,
    ZONE,
    MotoEc2,
    MotoServer,
)
from tests.harness.net import free_port, wait_for_port

FLEET = "bench"
HERE = Path(__file__).resolve().parent


class BenchError(Exception):
    """The rig or the controller did not do what the bench waits for; the message says what."""


def dummy_aws_env() -> None:
    """Dummy credentials and no metadata service, for us and the controller we start."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_EC2"):
        os.environ.pop(name, None)
    os.environ.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION=REGION,
        AWS_EC2_METADATA_DISABLED="true",
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
    )


@dataclass(frozen=True, slots=True)
class Call:
    at: float  # time.time() when the proxy received it
    action: str
    next_page: bool  # carries a NextToken: a later page of a paginated Describe


class TimedProxy(FaultProxy):
    """The fault proxy, stamping each call on arrival; optionally filling RunInstances."""

    def __init__(self, upstream: str, *, fill_max: bool) -> None:
        super().__init__(upstream)
        self.fill_max = fill_max
        self.log: list[Call] = []

    def between(self, start: float, end: float = float("inf")) -> list[Call]:
        with self._lock:
            return [c for c in self.log if start <= c.at < end]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        at = time.time()
        body = await request.read()
        call = Call(at, _action_of(request, body), "NextToken" in _params_of(request, body))
        with self._lock:
            self.log.append(call)
        return await super()._handle(request)

    async def _forward(self, request: web.Request, body: bytes, action: str) -> web.Response:
        if self.fill_max and action == "RunInstances":
            body = min_count_at_max(body)
        return await super()._forward(request, body, action)


def min_count_at_max(body: bytes) -> bytes:
    """A RunInstances form body asking for MaxCount instances at least."""
    pairs = parse_qsl(body.decode(), keep_blank_values=True)
    top = dict(pairs).get("MaxCount")
    if top is None:
        return body
    return urlencode([(k, top if k == "MinCount" else v) for k, v in pairs]).encode()


class TimedApache(Apache):
    """The harness's Apache, logging every request's begin and end in microseconds."""

    @property
    def access_log(self) -> Path:
        return self.root / "logs" / "access.log"

    def _write_tree(self) -> None:
        super()._write_tree()
        conf = self.root / "httpd.conf"
        extra = f'{LOG_FORMAT}\nCustomLog "{self.access_log}" bench\n'
        conf.write_text(conf.read_text() + extra)

    def hits(self) -> list[Hit]:
        if not self.access_log.exists():
            return []
        return parse_hits(self.access_log.read_text(errors="replace").splitlines())


class Rig:
    """Everything but the controller, up for the whole bench; `close()` stops what started."""

    def __init__(self, workdir: Path, *, fill_max: bool) -> None:
        self.workdir = workdir
        self.fill_max = fill_max
        self.slave_port = free_port()
        self._procs: list = []
        self.moto: MotoServer | None = None
        self.proxy: TimedProxy | None = None
        self.apache: TimedApache | None = None

    def start(self) -> None:
        port = free_port()
        log = self.workdir / "moto.log"
        moto = procs.spawn(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], log
        )
        self._procs.append(moto)
        wait_for_port("127.0.0.1", port, timeout=30, alive=lambda: moto.poll() is None, log=log)
        self.moto = MotoServer(endpoint_url=f"http://127.0.0.1:{port}")
        self.proxy = TimedProxy(self.moto.endpoint_url, fill_max=self.fill_max)
        self.proxy.start()
        self.apache = TimedApache(self.workdir / "apache")
        self.apache.start()
        self._start_slaves()

    def _start_slaves(self) -> None:
        log = self.workdir / "slaves.log"
        argv = [sys.executable, str(HERE / "slave_farm.py"), "--cidr", SUBNET_CIDR]
        farm = procs.spawn([*argv, "--port", str(self.slave_port)], log)
        self._procs.append(farm)
        hosts = SUBNET_CIDR.rsplit(".", 1)[0]
        for last in ("1", "254"):  # it binds in order: the last address up means all are
            wait_for_port(
                f"{hosts}.{last}",
                self.slave_port,
                timeout=60,
                alive=lambda: farm.poll() is None,
                log=log,
            )

    def close(self) -> None:
        if self.proxy is not None:  # every call, for a look with --keep
            lines = (f"{c.at:.6f}\t{c.action}\t{int(c.next_page)}\n" for c in self.proxy.log)
            (self.workdir / "ec2_calls.tsv").write_text("".join(lines))
        if self.apache is not None:
            self.apache.close()
        if self.proxy is not None:
            self.proxy.stop()
        for process in reversed(self._procs):
            procs.stop(process)

    def fresh_ec2(self) -> MotoEc2:
        """moto emptied, with the test VPC (127.0.0.0/16) and subnet again."""
        assert self.moto is not None
        self.moto.reset()
        ec2 = boto3.client(
            "ec2", region_name=REGION, endpoint_url=self.moto.endpoint_url, config=NO_RETRY
        )
        vpc = ec2.create_vpc(CidrBlock=VPC_CIDR)["Vpc"]["VpcId"]
        subnet = ec2.create_subnet(VpcId=vpc, CidrBlock=SUBNET_CIDR, AvailabilityZone=ZONE)
        return MotoEc2(self.moto.endpoint_url, REGION, vpc, subnet["Subnet"]["SubnetId"])


def write_config(
    rig: Rig, ec2: MotoEc2, rundir: Path, rows: list[list[float]], poll: float, master_extra: str
) -> Farm:
    """A config for the table policy through the proxy; scale-in never happens within a run."""
    assert rig.apache is not None and rig.proxy is not None
    renderfarm, reloads = rundir / "renderfarm.conf", rundir / "reloads.log"
    reload = ["sh", "-c", f"cat {renderfarm} >> {reloads}; echo '----' >> {reloads}"]
    stats_port = free_port()
    config = rundir / "config.toml"
    config.write_text(f"""
[controller]
fleet = "{FLEET}"
on_exit = "leave"

[master]
server_status_url = "{rig.apache.status_url}"
poll_interval = {poll}
external_ip = "127.0.0.1"
renderfarm_conf = "{renderfarm}"
reload_command = {json.dumps(reload)}
{master_extra}

[load_table]
rows = {json.dumps(rows)}

[scaling]
policy = "table"
scale_in_after = 3600

[slave]
instance_type = "m5.large"
ports = [{rig.slave_port}]
region = "{REGION}"
image_id = "ami-12345678"
subnet = "{ec2.subnet_id}"

[aws]
endpoint_url = "{rig.proxy.endpoint_url}"
sqs_endpoint_url = "{rig.proxy.endpoint_url}"

[stats]
listen = "127.0.0.1:{stats_port}"
""")
    return Farm(
        config=config,
        renderfarm=renderfarm,
        reloads=reloads,
        log=rundir / "controller.log",
        stats_url=f"http://127.0.0.1:{stats_port}",
        port=rig.slave_port,
    )


@dataclass
class Run:
    """One `controller run` on a fresh moto."""

    farm: Farm
    ctl: Controller
    ec2: Any  # a boto3 EC2 client straight to moto: what the bench reads is not counted
    started_at: float  # time.time() when the process was started

    def listed(self) -> int:
        return len(listed(self.farm))

    def instances(self) -> int:
        """The fleet's pending and running instances, as moto has them."""
        pages = self.ec2.get_paginator("describe_instances").paginate(
            Filters=[
                {"Name": "tag:controller:fleet", "Values": [FLEET]},
                {"Name": "instance-state-name", "Values": ["pending", "running"]},
            ]
        )
        return sum(len(r["Instances"]) for page in pages for r in page["Reservations"])

    def wait_for_sample(self, poll: float) -> None:
        """Until the controller has a load sample (a rate needs two readings)."""
        self.wait("a load sample", lambda: status(self.farm).get("load") is not None, 4 * poll + 30)

    def wait(self, what: str, predicate: Callable[[], object], timeout: float) -> object:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            if self.ctl.proc.poll() is not None:
                raise BenchError(
                    f"controller exited ({self.ctl.proc.returncode}) waiting for {what}:\n"
                    f"{self.ctl.log_text()}"
                )
            time.sleep(0.05)
        raise BenchError(f"no {what} within {timeout:.0f}s; controller log:\n{self.ctl.log_text()}")


@contextmanager
def controller(
    rig: Rig, name: str, rows: list[list[float]], poll: float, master_extra: str = ""
) -> Iterator[Run]:
    """`controller run` with this load table (and these extra [master] lines) on a fresh moto,
    healthy; stopped on exit."""
    rundir = rig.workdir / name
    shutil.rmtree(rundir, ignore_errors=True)
    rundir.mkdir(parents=True)
    ec2 = rig.fresh_ec2()
    farm = write_config(rig, ec2, rundir, rows, poll, master_extra)
    run = Run(farm, Controller(farm), ec2.client(), time.time())
    try:
        run.wait("healthy stats endpoint", lambda: healthy(farm), 60)
        yield run
    finally:
        if run.ctl.proc.poll() is None:
            run.ctl.terminate(timeout=60)
        else:
            run.ctl.ensure_dead()
