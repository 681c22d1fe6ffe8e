"""`controller run` with [slave] region, image_id and subnet left blank, as the seed allows on EC2:
the master's instance metadata (a stand-in on loopback, tests.harness.imds) names a moto AMI and
a subnet of moto's 127.0.0.0/16 VPC, and the slave is launched from that image into that subnet.
Off EC2 the run is refused with one line, exit 2, before anything is made."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.harness.e2e import Controller, fleet_groups, fleet_instances, wait_until, write_config
from tests.harness.imds import MAC, FakeImds
from tests.harness.net import free_port


def blank_defaults(config: Path, moto_ec2) -> None:
    text = config.read_text()
    for line in ('region = "us-east-1"', 'image_id = "ami-12345678"'):
        text = text.replace(line, line.split("=")[0] + '= ""')
    text = text.replace(f'subnet = "{moto_ec2.subnet_id}"', 'subnet = ""')
    assert text.count('= ""') >= 3
    config.write_text(text)


def on_ec2(imds: FakeImds) -> dict[str, str]:
    """The child's environment: botocore's own variables point at the stand-in service."""
    return {"AWS_EC2_METADATA_DISABLED": "false", "AWS_EC2_METADATA_SERVICE_ENDPOINT": imds.url}


def test_blank_keys_launch_the_masters_image_into_its_subnet(
    tmp_path, moto_ec2, apache, render_farm, imds: FakeImds
):
    ec2 = moto_ec2.client()
    ami = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    imds.items.update(
        {
            "placement/region": moto_ec2.region,
            "ami-id": ami,
            "mac": MAC,
            f"network/interfaces/macs/{MAC}/subnet-id": moto_ec2.subnet_id,
        }
    )
    farm = write_config(tmp_path, moto_ec2, apache, render_farm, "[[0.0, 1, 1]]")
    blank_defaults(farm.config, moto_ec2)
    ctl = Controller(farm, env=on_ec2(imds))
    try:
        (slave,) = wait_until("one slave launched", lambda: fleet_instances(ec2), 60, ctl)
        assert (slave["ImageId"], slave["SubnetId"]) == (ami, moto_ec2.subnet_id)
        assert slave["PrivateIpAddress"].startswith("127.0.")
        assert ctl.terminate() == 0, ctl.log_text()
        log = farm.log.read_text()
        assert log.count("config.from_instance_metadata") == 1
        assert f"[slave] region = {moto_ec2.region}, [slave] image_id = {ami}" in log
        assert f"[slave] subnet = {moto_ec2.subnet_id}" in log
    finally:
        ctl.ensure_dead()

    # teardown finds the fleet in the master's region too, and says where that came from.
    done = subprocess.run(
        [sys.executable, "-m", "controller.cli", "teardown", "-c", str(farm.config), "--dry-run"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **on_ec2(imds)},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[0] == (
        f"from the master's instance metadata: [slave] region = {moto_ec2.region}"
    )


@pytest.mark.parametrize("dry_run", [False, True])
@pytest.mark.parametrize("metadata", ["disabled", "unreachable"])
def test_off_ec2_blank_keys_are_one_line_and_nothing_is_made(tmp_path, moto_ec2, metadata, dry_run):
    apache = SimpleNamespace(status_url=f"http://127.0.0.1:{free_port()}/server-status?auto")
    slaves = SimpleNamespace(port=free_port())
    farm = write_config(tmp_path, moto_ec2, apache, slaves, "[[0.0, 1, 1]]")
    blank_defaults(farm.config, moto_ec2)
    env = (
        {"AWS_EC2_METADATA_DISABLED": "true"}
        if metadata == "disabled"
        else {
            "AWS_EC2_METADATA_DISABLED": "false",
            "AWS_EC2_METADATA_SERVICE_ENDPOINT": f"http://127.0.0.1:{free_port()}",
        }
    )
    command = [sys.executable, "-m", "controller.cli", "run", "-c", str(farm.config)]
    done = subprocess.run(
        command + (["--dry-run"] if dry_run else []),
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env},
    )
    why = " (AWS_EC2_METADATA_DISABLED=true)" if metadata == "disabled" else ""
    assert (done.returncode, done.stderr.splitlines()[-1:]) == (
        2,
        [
            f"{farm.config}: [slave] region and [slave] image_id are blank and this machine's "
            f"instance metadata is not reachable{why}: set them (the master is not on EC2)"
        ],
    ), done.stdout + done.stderr
    ec2 = moto_ec2.client()
    assert fleet_instances(ec2) == [] and fleet_groups(ec2) == []
