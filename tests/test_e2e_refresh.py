"""A new image and data snapshot by SIGHUP: `controller run` replaces its slaves one by one.

moto's EC2 server, a real Apache (mod_status) and the render farm stand-in, as in
test_e2e_renderfarm. Two slaves run (band [2, 3]); the config gets a new `image_id` and
`data_snapshots` (what `controller sync-data` writes) and the process a SIGHUP. A thread reads
renderfarm.conf and EC2 every tenth of a second, the file just before and just after EC2 and
counted only when the two reads agree: it must never list fewer than two slaves, nor one whose
instance has ended. Each slave carries the `controller:spec` tag of what it was launched from.
"""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

from controller.cloud.port import SPEC_TAG, launch_digest
from controller.config.reader import load_config
from controller.policy.pool_profile import SlaveProfile
from tests.harness.e2e import (
    Controller,
    Farm,
    assert_fleet_gone,
    fleet_instances,
    listed,
    wait_until,
    write_config,
)

BAND_MIN = 2
NEW_IMAGE = "ami-87654321"
ENDED = ("shutting-down", "terminated")


def spec_tag(config: Path) -> str:
    launch = SlaveProfile(load_config(config)).launch_settings()
    return launch_digest(launch.image_id, launch.snapshots, launch.user_data)


def tag(instance: dict, key: str) -> str:
    return next((t["Value"] for t in instance.get("Tags", ()) if t["Key"] == key), "")


class ListingWatch:
    """renderfarm.conf against EC2, every `interval` seconds, from a thread."""

    def __init__(self, ec2, farm: Farm, interval: float = 0.1) -> None:
        self.ec2, self.farm, self.interval = ec2, farm, interval
        self.fewest = 1_000
        self.most_alive = 0
        self.samples = 0
        self.violations: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="listing-watch")

    def start(self) -> ListingWatch:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            before = listed(self.farm)
            instances = fleet_instances(self.ec2, states=["pending", "running", *ENDED])
            if listed(self.farm) != before:
                continue  # rewritten while EC2 was read: look again
            self.samples += 1
            self.fewest = min(self.fewest, len(before))
            alive = [i for i in instances if i["State"]["Name"] not in ENDED]
            self.most_alive = max(self.most_alive, len(alive))
            by_address: dict[str, list[str]] = {}
            for i in instances:
                by_address.setdefault(i.get("PrivateIpAddress", ""), []).append(i["State"]["Name"])
            for url in before:
                states = by_address.get(url.split("//")[1].rsplit(":", 1)[0], [])
                if states and all(s in ENDED for s in states) and len(self.violations) < 20:
                    self.violations.append(f"renderfarm.conf lists {url}, whose instance ended")


def test_a_new_image_and_snapshot_replace_the_slaves_one_by_one(
    tmp_path, moto_ec2, apache, render_farm
):
    farm = write_config(
        tmp_path, moto_ec2, apache, render_farm, f"[[0.0, {BAND_MIN}, 3]]", 'policy = "table"'
    )
    ec2 = moto_ec2.client()
    volume = ec2.create_volume(AvailabilityZone="us-east-1a", Size=1)["VolumeId"]
    snapshot = ec2.create_snapshot(VolumeId=volume)["SnapshotId"]
    old_spec = spec_tag(farm.config)
    ctl = Controller(farm)
    watch = ListingWatch(ec2, farm)
    try:
        wait_until("two slaves listed", lambda: len(listed(farm)) == BAND_MIN, 60, ctl)
        old = {i["InstanceId"]: i for i in fleet_instances(ec2)}
        assert len(old) == BAND_MIN
        assert {tag(i, SPEC_TAG) for i in old.values()} == {old_spec}
        watch.start()
        time.sleep(1)

        text = farm.config.read_text()
        farm.config.write_text(
            text.replace(
                'image_id = "ami-12345678"',
                f'image_id = "{NEW_IMAGE}"\ndata_snapshots = ["{snapshot}"]',
            )
        )
        new_spec = spec_tag(farm.config)
        assert new_spec != old_spec
        ctl.proc.send_signal(signal.SIGHUP)

        def replaced() -> bool:
            alive = fleet_instances(ec2)
            return (
                len(alive) == BAND_MIN
                and not any(i["InstanceId"] in old for i in alive)
                and listed(farm) == {f"http://{i['PrivateIpAddress']}:{farm.port}" for i in alive}
            )

        wait_until("both slaves replaced and listed", replaced, 90, ctl)
        time.sleep(1)
        watch.stop()

        assert watch.violations == []
        assert watch.samples > 20 and watch.fewest >= BAND_MIN
        assert watch.most_alive <= BAND_MIN + 1  # a surge of one slave at most
        new = fleet_instances(ec2)
        assert {i["ImageId"] for i in new} == {NEW_IMAGE}
        assert {tag(i, SPEC_TAG) for i in new} == {new_spec}
        ended = fleet_instances(ec2, states=list(ENDED))
        assert set(old) <= {i["InstanceId"] for i in ended}
        log = farm.log.read_text()
        assert "config.reloaded" in log
        drained = [line for line in log.splitlines() if "slave.draining" in line]
        assert len(drained) == BAND_MIN and all("replaced" in line for line in drained), drained

        assert ctl.terminate() == 0, ctl.log_text()
        assert_fleet_gone(ec2, farm)
    finally:
        watch.stop()
        ctl.ensure_dead()
