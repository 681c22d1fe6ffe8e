"""The rig bench/gbrowse_rows.py measures the controller on: real servers, all on loopback.

- moto's EC2 server (in-process), reached by the controller only through a counting proxy
  (tests/harness/fault_proxy.py) whose every call is stamped with the time it arrived, and which
  can refuse every RunInstances of chosen instance types for capacity (HTTP 500, as EC2 does);
- a private Apache with mod_status (tests/harness/apache.py), the load source;
- fake render slaves (tests/harness/fake_slave.py) brought up on each instance's 127.x address
  as soon as moto lists the instance, and killable one by one;
- a paced aiohttp load generator whose GETs of Apache's index page count in `Total Accesses`;
- `controller run` as a child process (tests/harness/e2e.py), its reload command appending a
  time stamp and the file it reloaded to a trace.

Times are wall-clock seconds (time.time()): the reload trace is stamped by another process
(`date +%s.%N`), and one clock for everything keeps the differences honest.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from aiohttp import web

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ec2_rig import min_count_at_max  # noqa: E402

from tests.harness.apache import Apache  # noqa: E402
from tests.harness.e2e import Controller, Farm, healthy  # noqa: E402
from tests.harness.fake_slave import FakeSlave  # noqa: E402
from tests.harness.fault_proxy import FaultProxy, _error, _params_of  # noqa: E402
from tests.harness.moto_server import NO_RETRY, REGION, SUBNET_CIDR, VPC_CIDR, ZONE  # noqa: E402
from tests.harness.net import free_port  # noqa: E402

FLEET = "bench"
ALIVE = ["pending", "running"]
NETNS_MARK = "GBROWSE_ROWS_IN_NETNS"


class BenchError(Exception):
    """A run could not be measured (a server did not start, the controller died); says why."""


def enter_private_network() -> None:
    """Re-exec this script in a fresh network namespace holding only loopback (as scripts/test
    runs pytest), so nothing it starts can reach beyond 127.0.0.0/8. Returns once inside."""
    if os.environ.get(NETNS_MARK) == "1":
        return
    if shutil.which("unshare") is None:
        raise SystemExit(
            "unshare (util-linux) is missing: install it, or run the bench inside "
            "`unshare --net sh -c 'ip link set lo up && ...'`"
        )
    argv = ["unshare", "--net"]
    if os.geteuid() != 0:
        argv.append("--map-current-user")
    script = os.path.abspath(sys.argv[0])
    argv += ["sh", "-c", 'ip link set lo up && exec "$@"', "sh", sys.executable, script]
    os.environ[NETNS_MARK] = "1"
    os.execvp("unshare", argv + sys.argv[1:])


def dummy_aws_environment() -> None:
    """Test credentials only, no metadata service, no profile: the emulator is the only cloud."""
    for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_CONFIG_FILE", "EC2_ACCESS_KEY"):
        os.environ.pop(key, None)
    os.environ.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION=REGION,
        AWS_EC2_METADATA_DISABLED="true",
        PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
    )


class _StampedCalls(list):
    """FaultProxy.calls that also keeps, in `times`, when each call arrived."""

    def __init__(self) -> None:
        super().__init__()
        self.times: list[float] = []

    def append(self, action: str) -> None:
        self.times.append(time.time())
        super().append(action)

    def clear(self) -> None:
        self.times.clear()
        super().clear()


@dataclass(frozen=True)
class Call:
    at: float
    action: str
    params: dict[str, str]
    refused: bool


class BenchProxy(FaultProxy):
    """The counting fault proxy, with arrival times and capacity refusals by instance type."""

    def __init__(self, upstream: str, *, fill_max: bool = False) -> None:
        super().__init__(upstream)
        self.fill_max = fill_max  # a RunInstances gets MaxCount, as EC2 gives with capacity
        self.calls = _StampedCalls()
        self.refused_types: set[str] = set()
        self._refused: set[int] = set()  # indexes into calls

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if self.refused_types:
            body = await request.read()  # aiohttp keeps the body: the base class reads it again
            params = _params_of(request, body)
            kind = params.get("InstanceType")
            if params.get("Action") == "RunInstances" and kind in self.refused_types:
                with self._lock:
                    self._refused.add(len(self.calls))
                    self.calls.append("RunInstances")
                    self.requests.append(("RunInstances", params))
                message = f"We currently do not have sufficient {kind} capacity (bench)."
                return _error(request, 500, "InsufficientInstanceCapacity", message)
        return await super()._handle(request)

    async def _forward(self, request: web.Request, body: bytes, action: str) -> web.Response:
        if self.fill_max and action == "RunInstances":
            body = min_count_at_max(body)
        return await super()._forward(request, body, action)

    def reset(self) -> None:
        self.clear()
        with self._lock:
            self.refused_types = set()
            self._refused.clear()

    def history(self) -> list[Call]:
        with self._lock:
            return [
                Call(at, action, dict(params), index in self._refused)
                for index, (at, (action, params)) in enumerate(
                    zip(self.calls.times, self.requests, strict=True)
                )
            ]


class SlaveFarm:
    """A fake render slave on `port` of every instance moto lists, as soon as it is listed."""

    def __init__(self, port: int, list_instances: Callable[[], dict[str, str]]) -> None:
        self.port = port
        self._list_instances = list_instances  # instance id -> private address
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self._slaves: dict[str, FakeSlave] = {}  # by address
        self._known: set[str] = set()
        self._dead: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None

    def run(self, coro, timeout: float = 30):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=timeout)

    def watch(self) -> None:
        self._stop.clear()
        self._watcher = threading.Thread(target=self._watch, daemon=True)
        self._watcher.start()

    def _watch(self) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        while not self._stop.wait(0.1):
            try:
                found = self._list_instances()
            except (BotoCoreError, ClientError) as exc:
                print(f"  slave farm: cannot list moto's instances: {exc}", file=sys.stderr)
                continue
            for instance_id, address in found.items():
                with self._lock:
                    if instance_id in self._known or instance_id in self._dead:
                        continue
                    self._known.add(instance_id)
                    slave = self._slaves.get(address) or FakeSlave(address, self.port)
                    self._slaves[address] = slave
                try:
                    self.run(slave.start())
                except AssertionError as exc:  # FakeSlave says which address it cannot bind
                    print(f"  slave farm: {exc}", file=sys.stderr)

    def kill(self, instance_id: str, address: str) -> None:
        """The slave stops answering: its port refuses connections from now on."""
        with self._lock:
            self._dead.add(instance_id)
            slave = self._slaves.get(address)
        if slave is not None:
            self.run(slave.stop())

    def reset(self) -> None:
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join(timeout=10)
        with self._lock:
            slaves = list(self._slaves.values())
            self._slaves.clear()
            self._known.clear()
            self._dead.clear()
        for slave in slaves:
            self.run(slave.stop())

    def close(self) -> None:
        self.reset()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()


class Load:
    """About `rps` GETs a second of `url`, from the farm's loop; `started`: the first one's time."""

    def __init__(self, loop: asyncio.AbstractEventLoop, url: str, rps: float) -> None:
        self.url, self.rps = url, rps
        self.started: float | None = None
        self.sent = self.failed = 0
        self._task = asyncio.run_coroutine_threadsafe(self._run(), loop)
        deadline = time.monotonic() + 10
        while self.started is None and time.monotonic() < deadline:
            time.sleep(0.005)
        if self.started is None:
            self.stop()
            raise BenchError(f"the load generator sent nothing to {url} within 10 s")

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        pending: set[asyncio.Task] = set()
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            first = loop.time()
            try:
                while True:
                    await asyncio.sleep(max(0.0, first + self.sent / self.rps - loop.time()))
                    if self.started is None:
                        self.started = time.time()
                    task = asyncio.create_task(self._get(session))
                    pending.add(task)
                    task.add_done_callback(pending.discard)
                    self.sent += 1
            finally:
                for task in pending:
                    task.cancel()

    async def _get(self, session: aiohttp.ClientSession) -> None:
        try:
            async with session.get(self.url) as response:
                await response.read()
                if response.status != 200:
                    self.failed += 1
        except (aiohttp.ClientError, TimeoutError):
            self.failed += 1

    def stop(self) -> None:
        self._task.cancel()  # a concurrent future: cancels the task on its loop


@dataclass(frozen=True)
class Reload:
    at: float
    urls: frozenset[str]


@dataclass
class Settings:
    poll_interval: float
    rows: list[list[float]]
    instance_types: list[str] = field(default_factory=lambda: ["m5.large"])


class Rig:
    """Every server of the bench, started once; `fresh()` empties EC2 for the next run."""

    def __init__(self, keep: bool = False, fill_max: bool = False) -> None:
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto logs every request
        self.keep = keep
        self.tmp = Path(tempfile.mkdtemp(prefix="bench-gbrowse-"))
        self.tmp.chmod(0o755)  # Apache's workers run as www-data when the bench runs as root
        self._moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._moto.start()
        host, port = self._moto.get_host_and_port()
        self.moto_url = f"http://{host}:{port}"
        self.apache = Apache(self.tmp / "apache")
        self.apache.start()
        self.proxy = BenchProxy(self.moto_url, fill_max=fill_max)
        self.proxy.start()
        self.port = free_port()
        self.ec2 = _client(self.moto_url)
        self.subnet = ""
        self.farm = SlaveFarm(self.port, self.instances)
        self._runs = 0

    def close(self) -> None:
        self.farm.close()
        self.proxy.stop()
        self.apache.close()
        self._moto.stop()
        if self.keep:
            print(f"runs kept in {self.tmp}", file=sys.stderr)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def fresh(self) -> Path:
        """An empty EC2 with the 127.0.0.0/16 VPC, no calls recorded, no slaves; a new run dir."""
        self.farm.reset()
        _post(f"{self.moto_url}/moto-api/reset")
        vpc = self.ec2.create_vpc(CidrBlock=VPC_CIDR)["Vpc"]["VpcId"]
        subnet = self.ec2.create_subnet(VpcId=vpc, CidrBlock=SUBNET_CIDR, AvailabilityZone=ZONE)
        self.subnet = subnet["Subnet"]["SubnetId"]
        self.proxy.reset()
        self.farm.watch()
        self._runs += 1
        run_dir = self.tmp / f"run{self._runs}"
        run_dir.mkdir()
        return run_dir

    def instances(self, states: list[str] = ALIVE) -> dict[str, str]:
        """Instance id -> private address of the fleet, read from moto directly (not counted)."""
        return {i["InstanceId"]: i["PrivateIpAddress"] for i in self._describe(states)}

    def types_of(self, addresses: set[str]) -> list[str]:
        described = self._describe(ALIVE)
        return sorted(i["InstanceType"] for i in described if i["PrivateIpAddress"] in addresses)

    def _describe(self, states: list[str]) -> list[dict]:
        pages = self.ec2.get_paginator("describe_instances").paginate(
            Filters=[
                {"Name": "tag:controller:fleet", "Values": [FLEET]},
                {"Name": "instance-state-name", "Values": states},
            ]
        )
        return [i for page in pages for r in page["Reservations"] for i in r["Instances"]]

    def zone_of(self, params: dict[str, str]) -> str:
        return params.get("Placement.AvailabilityZone") or (ZONE if self.subnet else "?")

    def url(self, address: str) -> str:
        return f"http://{address}:{self.port}"

    def load(self, rps: float) -> Load:
        return Load(self.farm.loop, self.apache.base_url + "/index.html", rps)

    def start_controller(self, run_dir: Path, settings: Settings) -> Controller:
        farm = self._write_config(run_dir, settings)
        ctl = Controller(farm)
        deadline = time.time() + 30
        while not healthy(farm):
            self.check_alive(ctl, "its stats endpoint")
            if time.time() > deadline:
                ctl.ensure_dead()
                raise BenchError(f"the controller was not healthy within 30 s:\n{ctl.log_text()}")
            time.sleep(0.1)
        return ctl

    @staticmethod
    def check_alive(ctl: Controller, waiting_for: str) -> None:
        if ctl.proc.poll() is not None:
            ctl.ensure_dead()
            raise BenchError(
                f"the controller exited ({ctl.proc.returncode}) while the bench waited for "
                f"{waiting_for}:\n{ctl.log_text()}"
            )

    def _write_config(self, run_dir: Path, settings: Settings) -> Farm:
        renderfarm, trace = run_dir / "renderfarm.conf", run_dir / "reloads.trace"
        stats_port = free_port()
        # The reload command stamps each reload and records the file it reloaded.
        reload = ["sh", "-c", f"{{ date +%s.%N; cat {renderfarm}; echo ----; }} >> {trace}"]
        config = run_dir / "config.toml"
        config.write_text(
            f"""
[controller]
fleet = "{FLEET}"
on_exit = "leave"

[master]
server_status_url = "{self.apache.status_url}"
poll_interval = {settings.poll_interval}
external_ip = "127.0.0.1"
renderfarm_conf = "{renderfarm}"
reload_command = {json.dumps(reload)}

[load_table]
rows = {json.dumps(settings.rows)}

[slave]
instance_types = {json.dumps(settings.instance_types)}
ports = [{self.port}]
region = "{REGION}"
image_id = "ami-12345678"
subnet = "{self.subnet}"

[aws]
endpoint_url = "{self.proxy.endpoint_url}"
sqs_endpoint_url = "{self.proxy.endpoint_url}"

[stats]
listen = "127.0.0.1:{stats_port}"
"""
        )
        return Farm(
            config=config,
            renderfarm=renderfarm,
            reloads=trace,
            log=run_dir / "controller.log",
            stats_url=f"http://127.0.0.1:{stats_port}",
            port=self.port,
        )


def reloads(farm: Farm) -> list[Reload]:
    """Each reload the controller ran, with when and the URLs the file listed then."""
    if not farm.reloads.exists():
        return []
    found = []
    # What follows the last separator is a reload still being written (or nothing).
    for chunk in farm.reloads.read_text().split("----\n")[:-1]:
        lines = chunk.splitlines()
        urls = frozenset(line.strip() for line in lines[1:] if line.startswith("\t"))
        found.append(Reload(at=float(lines[0]), urls=urls))
    return found


def _client(endpoint_url: str):
    import boto3

    return boto3.client("ec2", region_name=REGION, endpoint_url=endpoint_url, config=NO_RETRY)


def _post(url: str) -> None:
    import urllib.request

    with urllib.request.urlopen(urllib.request.Request(url, method="POST"), timeout=10) as r:
        r.read()
