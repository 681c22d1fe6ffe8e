"""Watching a fleet from outside while a fault scenario runs: the invariants every scenario ends on.

A thread samples, every `interval` seconds, what the controller cannot dress up: EC2's instances
(read from moto directly, never through the fault proxy), renderfarm.conf and the controller's
/status (its band and which slaves it drains). It records as violations:
- a termination of a listed slave: as the fault proxy receives a TerminateInstances
  (`before_call`, the proxy's `on_request`), renderfarm.conf lists one of the instances it names;
- a stale listing: renderfarm.conf, read just before and just after a read of EC2 and the same
  both times, lists an address whose instances are all ended. If the controller ended them (its
  TerminateInstances went through the proxy) the file had to drop them first; if the test ended
  them (EC2 reclaiming a spot instance, `ended_by_ec2`) the controller has `grace` seconds;
- an excess: the fleet growing (a launch) to more instances alive than the band's max plus those
  draining, and staying above for longer than `patience` seconds (a /status one poll behind a
  launch is not an excess). The band's max is the largest /status showed in the last
  `band_memory` seconds (and, across a restart, in the `band_memory` seconds before it). A fleet
  above a band that just dropped is no excess: a scale-in waits `scale_in_after` and removes
  one slave at a time, and a restarted controller waits again;
- more than one security group of the fleet at once.
`leftovers()` counts what carries the fleet's tag and is not ended (instances, spot requests,
security groups, volumes): all zero after a teardown.
"""

from __future__ import annotations

import collections
import json
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from botocore.exceptions import BotoCoreError, ClientError

from tests.harness.e2e import FLEET

ALIVE_STATES = ("pending", "running")
ENDED_STATES = ("shutting-down", "terminated")
DRAINING_STATES = ("draining", "terminating")
FLEET_FILTER = [{"Name": "tag:controller:fleet", "Values": [FLEET]}]


@dataclass
class FleetWatch:
    """The invariant watcher; `start()`, run the scenario, `stop()`, read `violations`."""

    ec2: object  # a boto3 EC2 client straight to moto
    renderfarm: Path
    stats_url: str
    terminated_by_controller: Callable[[], set[str]]
    stats_token: str = ""  # the stats endpoint's bearer token, when it has one
    interval: float = 0.2
    grace: float = 10.0
    patience: float = 3.0
    band_memory: float = 10.0
    violations: list[str] = field(default_factory=list)
    max_alive: int = 0
    max_groups: int = 0
    launched: set[str] = field(default_factory=set)  # every instance id of the fleet ever seen
    samples: int = 0
    missed: int = 0

    def __post_init__(self) -> None:
        self._ended_by_ec2: dict[str, float] = {}
        self._bands: collections.deque[tuple[float, int]] = collections.deque()
        self._draining = 0
        self._alive = 0
        self._addresses: dict[str, str] = {}  # instance id -> private address, ever seen
        self._restarted_at = -float("inf")
        self._excess_since: float | None = None
        self._stale_since: dict[str, float] = {}
        self._reported: set[tuple[str, tuple[str, ...]]] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="fleet-watch")
        self._lock = threading.Lock()

    def start(self) -> FleetWatch:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)

    def restarted(self) -> None:
        """A new controller process starts: it knows nothing of the band before it."""
        with self._lock:
            self._restarted_at = time.monotonic()

    def before_call(self, action: str, params: dict[str, str]) -> None:
        """The fault proxy's hook: a TerminateInstances must name no instance still listed."""
        if action != "TerminateInstances":
            return
        ids = [v for k, v in params.items() if k.startswith("InstanceId.")]
        urls = _urls(_read(self.renderfarm))
        with self._lock:
            ids = [i for i in ids if i not in self._ended_by_ec2]
            unknown = [i for i in ids if i not in self._addresses]
        if unknown:
            self._instances()  # launched since the last look
        with self._lock:
            addresses = {i: self._addresses.get(i, "") for i in ids}
        for instance_id, address in addresses.items():
            still = [u for u in urls if address and _address(u) == address]
            if still:
                self.note(f"TerminateInstances {instance_id} while renderfarm.conf lists {still}")

    def ended_by_ec2(self, instance_id: str) -> None:
        """The test ended this instance as EC2 would (an interruption): the controller has
        `grace` seconds to unlist it."""
        with self._lock:
            self._ended_by_ec2[instance_id] = time.monotonic()

    # the loop

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.look()
            except (BotoCoreError, ClientError, OSError):
                self.missed += 1  # moto busy for a moment: the next look sees it

    def note(self, line: str) -> None:
        with self._lock:
            if len(self.violations) < 50:
                self.violations.append(line)

    def look(self) -> None:
        """One sample: file, EC2, file again; then /status for the band and the drains."""
        before = _read(self.renderfarm)
        instances = self._instances()
        after = _read(self.renderfarm)
        now = time.monotonic()
        self.samples += 1
        if before == after:
            self._check_listing(now, _urls(before), instances)
        alive = [i for i in instances if i["State"]["Name"] in ALIVE_STATES]
        self.max_alive = max(self.max_alive, len(alive))
        self._read_status(now)
        self._check_excess(now, len(alive))
        if self.samples % 5 == 1:
            groups = self.ec2.describe_security_groups(Filters=FLEET_FILTER)["SecurityGroups"]
            self.max_groups = max(self.max_groups, len(groups))
            if len(groups) > 1:
                self.note(f"{len(groups)} security groups of the fleet at once")

    def _instances(self) -> list[dict]:
        pages = self.ec2.get_paginator("describe_instances").paginate(Filters=FLEET_FILTER)
        found = [i for page in pages for r in page["Reservations"] for i in r["Instances"]]
        with self._lock:
            self.launched.update(i["InstanceId"] for i in found)
            self._addresses.update({i["InstanceId"]: i.get("PrivateIpAddress", "") for i in found})
        return found

    def _check_listing(self, now: float, urls: set[str], instances: list[dict]) -> None:
        by_address: dict[str, list[dict]] = collections.defaultdict(list)
        for i in instances:
            by_address[i.get("PrivateIpAddress", "")].append(i)
        ours = self.terminated_by_controller()
        for url in urls:
            address = _address(url)
            found = by_address.get(address, [])
            if not found or not all(i["State"]["Name"] in ENDED_STATES for i in found):
                self._stale_since.pop(url, None)
                continue
            ids = sorted(i["InstanceId"] for i in found)
            if any(i in ours for i in ids):
                if (url, tuple(ids)) not in self._reported:
                    self._reported.add((url, tuple(ids)))
                    self.note(f"renderfarm.conf lists {url} after the controller terminated {ids}")
                continue
            with self._lock:
                ended = [self._ended_by_ec2[i] for i in ids if i in self._ended_by_ec2]
            since = min(ended) if ended else self._stale_since.setdefault(url, now)
            if now - since > self.grace:
                self.note(f"renderfarm.conf still lists {url} {now - since:.1f}s after {ids} ended")
                self._stale_since[url] = now  # one line per grace, not per sample
                with self._lock:
                    for i in ids:
                        self._ended_by_ec2[i] = now

    def _read_status(self, now: float) -> None:
        headers = {"Authorization": f"Bearer {self.stats_token}"} if self.stats_token else {}
        request = urllib.request.Request(self.stats_url + "/status", headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=2) as r:
                document = json.load(r)
        except (OSError, ValueError):
            return  # the controller is between a kill and a restart: keep the last view
        band = document.get("table_band")
        if band is not None:
            self._bands.append((now, int(band[1])))
        self._draining = sum(1 for s in document["slaves"] if s["state"] in DRAINING_STATES)

    def _check_excess(self, now: float, alive: int) -> None:
        grew, self._alive = alive > self._alive, alive
        with self._lock:
            restarted_at = self._restarted_at
        # Shortly after a restart, the band of the seconds before it still counts.
        since = now if now >= restarted_at + self.band_memory else restarted_at
        while len(self._bands) > 1 and self._bands[0][0] < since - self.band_memory:
            self._bands.popleft()
        if not self._bands:
            return
        cap = max(b for _, b in self._bands) + self._draining
        if alive <= cap:
            self._excess_since = None
        elif self._excess_since is None:
            if grew:
                self._excess_since = now
        elif now - self._excess_since > self.patience:
            self.note(f"grew to {alive} instances alive, above the cap {cap} for {self.patience}s")
            self._excess_since = None

    # after the scenario

    def leftovers(self) -> dict[str, int]:
        """What carries the fleet's tag and is not ended."""
        pages = self.ec2.get_paginator("describe_instances").paginate(Filters=FLEET_FILTER)
        instances = [
            i
            for page in pages
            for r in page["Reservations"]
            for i in r["Instances"]
            if i["State"]["Name"] != "terminated"
        ]
        requests = self.ec2.describe_spot_instance_requests(Filters=FLEET_FILTER)
        groups = self.ec2.describe_security_groups(Filters=FLEET_FILTER)["SecurityGroups"]
        volumes = self.ec2.describe_volumes(Filters=FLEET_FILTER)["Volumes"]
        return {
            "instances": len(instances),
            "spot_requests": sum(
                1 for r in requests["SpotInstanceRequests"] if r["State"] in ("open", "active")
            ),
            "security_groups": len(groups),
            "volumes": sum(1 for v in volumes if v["State"] != "deleted"),
        }


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _address(url: str) -> str:
    return url.split("//", 1)[-1].rsplit(":", 1)[0]


def _urls(text: str) -> set[str]:
    return {line.strip() for line in text.splitlines() if line.startswith("\t")}
