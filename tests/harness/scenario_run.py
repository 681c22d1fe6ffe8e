"""One fault scenario's run: the real `controller run`, its load, its watcher, its figures.

A `Run` writes the controller's config (tests/harness/e2e.py's, through the fault proxy, every
slave with a data volume so that leftovers can count volumes), starts and restarts the real
`controller run` process, drives Apache with a steady load, and keeps a FleetWatch
(tests/harness/fleet_watch.py) on the fleet. `finish()` tears down with SIGTERM and returns the
`Figures`: the calls the proxy failed, botocore's retries, the EC2 errors the controller counted,
seconds to recover, what is left tagged with the fleet, and the invariant violations seen.
Every run gives the controller secrets that are easy to find (an AWS secret key and session token
in its environment, a stats bearer token in its config) and, at the end, looks for them where
they must never be (`secrets_seen`): its argv, its stdout/stderr, its --logfile, /status and
/metrics; a find is a violation.
The scenarios themselves are in tests/harness/fault_scenarios.py.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.harness.apache import Apache
from tests.harness.e2e import Controller, Farm, fleet_instances, healthy, listed, write_config
from tests.harness.fault_proxy import FaultProxy
from tests.harness.fleet_watch import FleetWatch
from tests.harness.moto_server import MotoEc2
from tests.harness.render_farm import RenderFarm, SteadyLoad

STEADY_RPS = 10.0  # above every first row below: the band's top
LOW_RPS = 2.0  # in [1.0, 6.0): the low band of TWO_BANDS
TWO_BANDS = "[[1.0, 1, 1], [6.0, 3, 3]]"
# The secrets each run hands the controller (AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, [stats]
# token): what the scan looks for.
SECRET_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYsecretKEY42"
SESSION_TOKEN = "FwoGZXIvYXdzEXAMPLEsessionTOKEN0123456789abcdef"
STATS_TOKEN = "stats-bearer-TOKEN-5f0c2a9e71d4"
SECRETS = {
    "AWS secret key": SECRET_KEY,
    "AWS session token": SESSION_TOKEN,
    "stats token": STATS_TOKEN,
}
_ERRORS_METRIC = re.compile(r'^controller_ec2_errors_total\{kind="([^"]+)"\} ([0-9.e+]+)$', re.M)


class ScenarioError(AssertionError):
    """The controller did not do what the scenario expects; the message carries its log."""


@dataclass
class Rig:
    """The servers a scenario runs against; the proxy's endpoint is what the controller uses."""

    moto_ec2: MotoEc2
    proxy: FaultProxy
    apache: Apache
    render_farm: RenderFarm
    tmp: Path
    snapshot_id: str = ""

    def __post_init__(self) -> None:
        if not self.snapshot_id:  # every slave gets a data volume, so leftovers can count them
            ec2 = self.moto_ec2.client()
            volume = ec2.create_volume(Size=1, AvailabilityZone=self.moto_ec2.zone)["VolumeId"]
            self.snapshot_id = ec2.create_snapshot(VolumeId=volume)["SnapshotId"]
            ec2.delete_volume(VolumeId=volume)


@dataclass
class Figures:
    """What one scenario measured; `clean` when it left nothing and broke no invariant."""

    scenario: str
    calls: int = 0  # EC2 requests that reached the proxy
    injected: int = 0  # requests the proxy answered with a fault or dropped
    retries: int = 0  # requests botocore sent again
    surfaced: int = 0  # EC2 errors the controller counted (controller_ec2_errors_total)
    recover: dict[str, float] = field(default_factory=dict)  # seconds, by what recovered
    left: dict[str, int] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)
    exit_code: int | None = None
    launched: int = 0  # instances of the fleet ever seen
    max_alive: int = 0
    notes: dict[str, object] = field(default_factory=dict)

    @property
    def clean(self) -> bool:
        return self.exit_code == 0 and not self.violations and not any(self.left.values())


class Run:
    """One scenario's controller, load and watcher, in its own directory under the rig's tmp."""

    def __init__(
        self,
        rig: Rig,
        name: str,
        rows: str,
        *,
        rps: float = STEADY_RPS,
        scaling_extra: str = "",
        renderfarm_dir: str = "",
        slave_extra: str = "",
    ) -> None:
        self.rig = rig
        self.name = name
        self.dir = rig.tmp / name
        self.dir.mkdir(parents=True)
        through_proxy = dataclasses.replace(rig.moto_ec2, endpoint_url=rig.proxy.endpoint_url)
        farm = write_config(
            self.dir, through_proxy, rig.apache, rig.render_farm, rows, scaling_extra
        )
        text = farm.config.read_text().replace(
            'image_id = "ami-12345678"',
            f'image_id = "ami-12345678"\ndata_snapshots = ["{rig.snapshot_id}"]\n{slave_extra}',
        )
        text = text.replace("[stats]\n", f'[stats]\ntoken = "{STATS_TOKEN}"\n')
        if renderfarm_dir:  # renderfarm.conf alone in a directory the scenario may lock
            (self.dir / renderfarm_dir).mkdir()
            moved = self.dir / renderfarm_dir / "renderfarm.conf"
            text = text.replace(str(farm.renderfarm), str(moved))  # the reload command's too
            farm = dataclasses.replace(farm, renderfarm=moved)
        farm.config.write_text(text)
        self.farm: Farm = farm
        self.ec2 = rig.moto_ec2.client()
        self.figures = Figures(name)
        self.logfile = self.dir / "controller.jsonl"
        self.prefix: Sequence[str] = ()  # a command that execs the controller (nsenter)
        self.watch = FleetWatch(
            ec2=self.ec2,
            renderfarm=farm.renderfarm,
            stats_url=farm.stats_url,
            terminated_by_controller=self.terminated_by_controller,
            stats_token=STATS_TOKEN,
        )
        rig.proxy.on_request = self.watch.before_call
        self.load: SteadyLoad | None = None
        self.ctl: Controller | None = None
        self._watching = False
        self._closed = False
        self.set_load(rps)

    # driving

    def start(self) -> Controller:
        self.ctl = Controller(
            self.farm,
            "--logfile",
            str(self.logfile),
            prefix=self.prefix,
            env={"AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_SESSION_TOKEN": SESSION_TOKEN},
        )
        self.watch.restarted()
        if not self._watching:
            self._watching = True
            self.watch.start()
        return self.ctl

    def set_load(self, rps: float) -> None:
        if self.load is not None:
            self.load.stop()
        self.load = SteadyLoad("127.0.0.1", self.rig.apache.port, rps) if rps else None

    def terminated_by_controller(self) -> set[str]:
        return {i for ids in self.rig.proxy.instance_ids("TerminateInstances") for i in ids}

    def alive(self) -> list[dict]:
        return fleet_instances(self.ec2)

    def urls_of(self, instances: list[dict]) -> set[str]:
        return {f"http://{i['PrivateIpAddress']}:{self.farm.port}" for i in instances}

    def converged(self, n: int) -> bool:
        """n instances alive, each listed, nothing else listed, the controller healthy."""
        alive = self.alive()
        return len(alive) == n and listed(self.farm) == self.urls_of(alive) and healthy(self.farm)

    def wait(self, what: str, predicate: Callable[[], object], timeout: float) -> float:
        """Seconds until `predicate` holds; ScenarioError after `timeout` or if the controller
        exits."""
        started = time.monotonic()
        while not predicate():
            if self.ctl is not None and self.ctl.proc.poll() is not None:
                raise self.error(
                    f"the controller exited ({self.ctl.proc.returncode}) before {what}"
                )
            if time.monotonic() - started > timeout:
                raise self.error(f"no {what} within {timeout}s")
            time.sleep(0.1)
        return round(time.monotonic() - started, 2)

    def wait_converged(self, n: int, timeout: float = 60) -> float:
        return self.wait(f"fleet of {n}, all listed", lambda: self.converged(n), timeout)

    def hold(self, seconds: float, what: str) -> None:
        """The fleet stays exactly as it is (same instances, same listing) for `seconds`."""
        ids = {i["InstanceId"] for i in self.alive()}
        urls = listed(self.farm)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            now_ids, now_urls = {i["InstanceId"] for i in self.alive()}, listed(self.farm)
            if now_ids != ids or now_urls != urls:
                raise self.error(
                    f"the fleet changed {what}: instances {sorted(ids)} -> {sorted(now_ids)}, "
                    f"listed {sorted(urls)} -> {sorted(now_urls)}"
                )
            self.expect(self.ctl is not None and self.ctl.proc.poll() is None, f"alive {what}")
            time.sleep(0.3)

    def expect(self, condition: object, what: str) -> None:
        if not condition:
            raise self.error(f"expected: {what}")

    def error(self, message: str) -> ScenarioError:
        log = self.log_text()[-6000:]
        return ScenarioError(f"[{self.name}] {message}\n--- controller log ---\n{log}")

    def log_text(self) -> str:
        """What the controller wrote: stdout and stderr (startup errors), then its --logfile."""
        return "".join(
            path.read_text(errors="replace")
            for path in (self.farm.log, self.logfile)
            if path.exists()
        )

    def stats(self, path: str) -> str:
        """A page of the stats endpoint, with the bearer token it requires."""
        request = urllib.request.Request(
            self.farm.stats_url + path, headers={"Authorization": f"Bearer {STATS_TOKEN}"}
        )
        with urllib.request.urlopen(request, timeout=5) as r:
            return r.read().decode()

    def status(self) -> dict:
        return json.loads(self.stats("/status"))

    def ec2_errors(self) -> int:
        """EC2 errors the running controller counted, all kinds."""
        text = self.stats("/metrics")
        return int(sum(float(count) for _, count in _ERRORS_METRIC.findall(text)))

    def secrets_seen(self, pages: dict[str, str]) -> list[str]:
        """Where a secret shows: in `pages` (name -> text), the controller's stdout/stderr and
        --logfile; one line for each find."""
        places = {**pages, "stdout/stderr": _read(self.farm.log), "--logfile": _read(self.logfile)}
        return [
            f"the {what} appears in the controller's {place}"
            for place, text in places.items()
            for what, secret in SECRETS.items()
            if secret in text
        ]

    # ending

    def finish(self) -> Figures:
        """SIGTERM (teardown), then the figures: counts, leftovers, violations."""
        assert self.ctl is not None
        pages = {"/status": self.stats("/status"), "/metrics": self.stats("/metrics")}
        pages["argv"] = _cmdline(self.ctl.proc.pid)
        self.figures.surfaced += self.ec2_errors()
        self.set_load(0)
        self.figures.exit_code = self.ctl.terminate()
        self.watch.look()  # the state teardown left, seen once more
        self.watch.stop()
        for line in self.secrets_seen(pages):
            self.watch.note(line)
        return self.close()

    def close(self) -> Figures:
        """Stop everything this run started (also after a failure) and fill in the figures."""
        if self._closed:
            return self.figures
        self._closed = True
        if self.load is not None:
            self.load.stop()
        if self.ctl is not None:
            self.ctl.ensure_dead()
        self.watch.stop()
        proxy = self.rig.proxy
        proxy.heal()
        proxy.on_request = None
        f = self.figures
        f.calls, f.injected, f.retries = len(proxy.calls), proxy.injected, proxy.retries
        f.violations = list(self.watch.violations)
        f.launched, f.max_alive = len(self.watch.launched), self.watch.max_alive
        f.left = self.watch.leftovers()
        return f


def _read(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def _cmdline(pid: int) -> str:
    """The process's argv as /proc shows it to anyone on the machine."""
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
