"""`controller sync-data` end to end: moto's EC2 (instance, volume, group, key pair, snapshots) and
a real sshd with real rsync standing in for the staging instance (tests.harness.staging_host,
whose block-device commands are stand-ins: no disk of this machine is ever formatted or mounted).

Each run is checked for what it must leave: the data in the "filesystem" the stand-in mkfs made,
the config pointed at the snapshot with its comments intact and CONFIG.bak written, and nothing
tagged controller:role=staging, after a success, a failure, SIGTERM, Ctrl-C, and a `kill -9`
followed by the next run or by the teardown's sweep.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller.cli import main
from controller.cloud.ec2cloud import Ec2Cloud
from controller.cloud.staging_leftovers import remove_staging_leftovers
from tests.harness.moto_server import MotoEc2
from tests.harness.staging_host import StagingHosts, booting_staging_hosts

ROOT = Path(__file__).resolve().parents[1]
FLEET = "gb-sync"

CONFIG = """\
# the render farm of the lab's GBrowse
[controller]
fleet = "{fleet}"                 # every resource is tagged with it

[master]
external_ip = "127.0.0.1"         # the staging group admits this address only
renderfarm_conf = "{tmp}/renderfarm.conf"

[slave]
region = "us-east-1"
image_id = "ami-12345678"         # the slave image
data_snapshots = []               # maintained by sync-data
subnet = "{subnet}"               # the slaves' subnet

[aws]
endpoint_url = "{endpoint}"
max_attempts = 2

[sync]
ssh_user = "{user}"               # the image's login user
ssh_key_file = "{key}"
ssh_port = {port}
"""


def write_config(tmp: Path, moto: MotoEc2, hosts: StagingHosts, *, key: str | None = None) -> Path:
    path = tmp / "balancer.toml"
    path.write_text(
        CONFIG.format(
            fleet=FLEET,
            tmp=tmp,
            subnet=moto.subnet_id,
            endpoint=moto.endpoint_url,
            user=os.environ.get("USER") or __import__("getpass").getuser(),
            key=hosts.operator_key if key is None else key,
            port=hosts.port,
        )
    )
    return path


def make_tree(root: Path) -> Path:
    (root / "volvox" / "tracks").mkdir(parents=True)
    (root / "volvox" / "volvox.fa").write_text(">ctgA\nACGT\n")
    (root / "volvox" / "tracks" / "genes.gff3").write_text("ctgA\tgene\t1\t100\n")
    os.link(root / "volvox" / "volvox.fa", root / "volvox" / "volvox-link.fa")
    return root


def files_of(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*")) if p.is_file()}


def staging_left(moto: MotoEc2) -> dict[str, list[str]]:
    """Everything in moto still tagged controller:role=staging (alive)."""
    ec2 = moto.client()
    staging = [{"Name": "tag:controller:role", "Values": ["staging"]}]
    return {
        "instances": [
            i["InstanceId"]
            for r in ec2.describe_instances(Filters=staging)["Reservations"]
            for i in r["Instances"]
            if i["State"]["Name"] != "terminated"
        ],
        "volumes": [v["VolumeId"] for v in ec2.describe_volumes(Filters=staging)["Volumes"]],
        "groups": [
            g["GroupId"] for g in ec2.describe_security_groups(Filters=staging)["SecurityGroups"]
        ],
        "key_pairs": [k["KeyName"] for k in ec2.describe_key_pairs(Filters=staging)["KeyPairs"]],
        "snapshots": [
            s["SnapshotId"]
            for s in ec2.describe_snapshots(OwnerIds=["self"], Filters=staging)["Snapshots"]
        ],
    }


@pytest.fixture
def staging_hosts(moto_ec2: MotoEc2) -> Iterator[StagingHosts]:
    with booting_staging_hosts(moto_ec2) as hosts:
        yield hosts


NOTHING = {"instances": [], "volumes": [], "groups": [], "key_pairs": [], "snapshots": []}


def snapshots(moto: MotoEc2) -> dict[str, dict[str, str]]:
    """The fleet's snapshots and their tags (moto also lists its images' own)."""
    fleet = [{"Name": "tag:controller:fleet", "Values": [FLEET]}]
    answer = moto.client().describe_snapshots(OwnerIds=["self"], Filters=fleet)["Snapshots"]
    return {s["SnapshotId"]: {t["Key"]: t["Value"] for t in s.get("Tags", ())} for s in answer}


def configured_snapshots(path: Path) -> list[str]:
    import tomllib

    return tomllib.loads(path.read_text())["slave"]["data_snapshots"]


def test_syncs_a_tree_updates_the_config_and_leaves_nothing(
    tmp_path: Path, moto_ec2: MotoEc2, staging_hosts: StagingHosts, capsys
):
    data = make_tree(tmp_path / "databases")
    mysql = tmp_path / "mysql"
    (mysql / "gbrowse").mkdir(parents=True)
    (mysql / "gbrowse" / "features.ibd").write_bytes(b"\0" * 5000)
    config = write_config(tmp_path, moto_ec2, staging_hosts)
    original = config.read_text()

    assert (
        main(["sync-data", "-c", str(config), "--path", str(data), "--mysql", str(mysql), "--yes"])
        == 0
    )

    out = capsys.readouterr().out
    host = staging_hosts.only_host()
    (disk,) = host.disks()
    assert files_of(disk / str(data).lstrip("/")) == files_of(data)
    assert (disk / str(mysql).lstrip("/") / "gbrowse" / "features.ibd").stat().st_size == 5000
    linked = disk / str(data).lstrip("/") / "volvox"
    assert (linked / "volvox.fa").stat().st_ino == (linked / "volvox-link.fa").stat().st_ino
    calls = host.calls()
    assert any(c.startswith("mkfs -t ext4") and c.endswith("/dev/nvme1n1") for c in calls), calls
    assert "mount /dev/nvme1n1 /mnt/controller-sync" in calls
    assert "umount /mnt/controller-sync" in calls
    # the staging instance: tagged, in the slaves' subnet, behind a group open to the master only
    assert host.tags["controller:fleet"] == FLEET and host.tags["controller:role"] == "staging"
    assert host.subnet == moto_ec2.subnet_id
    (group,) = host.groups
    assert [
        (p["IpProtocol"], p["FromPort"], p["ToPort"], [r["CidrIp"] for r in p["IpRanges"]])
        for p in group["IpPermissions"]
    ] == [("tcp", staging_hosts.port, staging_hosts.port, ["127.0.0.1/32"])]
    assert "WHOLE MySQL / PostgreSQL data directories" in out
    assert "trusted on first use" in out

    (first,) = configured_snapshots(config)
    assert f"data stored in snapshot(s) {first}" in out
    assert snapshots(moto_ec2)[first]["controller:role"] == "data"
    assert (tmp_path / "balancer.toml.bak").read_text() == original
    expected = original.replace(
        "data_snapshots = []               #", f'data_snapshots = ["{first}"] #'
    )
    assert config.read_text() == expected
    assert staging_left(moto_ec2) == NOTHING

    # a file changed and one added; the second run replaces the snapshot and sets the image
    (data / "volvox" / "volvox.fa").write_text(">ctgA\nACGTTT\n")
    (data / "volvox" / "new.bed").write_text("ctgA\t1\t5\n")
    after_first = config.read_text()
    assert (
        main(
            [
                "sync-data",
                "-c",
                str(config),
                "--path",
                str(data),
                "--image-id",
                "ami-0new",
                "--keep",
                "1",
                "--yes",
            ]
        )
        == 0
    )
    second_disk = next(h for h in staging_hosts.hosts.values() if h is not host).disks()[0]
    assert files_of(second_disk / str(data).lstrip("/")) == files_of(data)
    (second,) = configured_snapshots(config)
    assert second != first
    assert 'image_id = "ami-0new"             # the slave image\n' in config.read_text()
    assert (tmp_path / "balancer.toml.bak").read_text() == after_first
    assert first not in snapshots(moto_ec2)  # --keep 1: the older generation is deleted
    assert staging_left(moto_ec2) == NOTHING
    assert "# the render farm of the lab's GBrowse" in config.read_text()


def test_a_temporary_key_pair_is_made_and_deleted(
    tmp_path: Path, moto_ec2: MotoEc2, staging_hosts: StagingHosts
):
    data = make_tree(tmp_path / "databases")
    config = write_config(tmp_path, moto_ec2, staging_hosts, key="")
    assert main(["sync-data", "-c", str(config), "--path", str(data), "--yes"]) == 0
    host = staging_hosts.only_host()
    assert host.key_name.startswith(f"controller-{FLEET}-staging-")
    assert files_of(host.disks()[0] / str(data).lstrip("/")) == files_of(data)
    assert staging_left(moto_ec2) == NOTHING


def test_a_failed_step_leaves_nothing_and_the_config_alone(
    tmp_path: Path, moto_ec2: MotoEc2, staging_hosts: StagingHosts, capsys
):
    data = make_tree(tmp_path / "databases")
    config = write_config(tmp_path, moto_ec2, staging_hosts)
    original = config.read_text()
    (staging_hosts.control / "fail-mkfs").touch()

    assert main(["sync-data", "-c", str(config), "--path", str(data), "--yes"]) == 1

    err = capsys.readouterr().err
    assert "mkfs on the staging instance exited with 1: mkfs: the test made it fail" in err
    assert config.read_text() == original
    assert not (tmp_path / "balancer.toml.bak").exists()
    assert staging_left(moto_ec2) == NOTHING
    assert snapshots(moto_ec2) == {}


def start_held(tmp_path: Path, moto: MotoEc2, hosts: StagingHosts) -> tuple[subprocess.Popen, Path]:
    """`controller sync-data` in a child process, held inside mkfs on the staging host."""
    data = make_tree(tmp_path / "databases")
    config = write_config(tmp_path, moto, hosts)
    (hosts.control / "hold").touch()
    log = tmp_path / "sync.log"
    with open(log, "wb") as out:
        child = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "controller",
                "sync-data",
                "-c",
                str(config),
                "--path",
                str(data),
                "--yes",
            ],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 30
    while not any((h.root / "mkfs-started").exists() for h in list(hosts.hosts.values())):
        assert child.poll() is None, log.read_text()
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.05)
    return child, config


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 1), (signal.SIGINT, 130)])
def test_sigterm_or_ctrl_c_removes_what_the_run_made(
    tmp_path: Path, moto_ec2: MotoEc2, staging_hosts: StagingHosts, signum: int, code: int
):
    child, config = start_held(tmp_path, moto_ec2, staging_hosts)
    original = config.read_text()
    assert staging_left(moto_ec2)["instances"]
    child.send_signal(signum)
    (staging_hosts.control / "hold").unlink()
    assert child.wait(timeout=60) == code, (tmp_path / "sync.log").read_text()
    assert "stopped: what the run made is removed" in (tmp_path / "sync.log").read_text()
    assert staging_left(moto_ec2) == NOTHING
    assert config.read_text() == original


def test_after_kill_9_the_next_run_removes_the_leftovers(
    tmp_path: Path, moto_ec2: MotoEc2, staging_hosts: StagingHosts, capsys
):
    child, config = start_held(tmp_path, moto_ec2, staging_hosts)
    child.kill()
    child.wait(timeout=10)
    left = staging_left(moto_ec2)
    assert left["instances"] and left["groups"] and left["volumes"]
    (staging_hosts.control / "hold").unlink()

    data = tmp_path / "databases"
    assert main(["sync-data", "-c", str(config), "--path", str(data), "--yes"]) == 0

    out = capsys.readouterr().out
    assert "removing what an earlier run left: instances " + left["instances"][0] in out
    assert len(configured_snapshots(config)) == 1
    assert staging_left(moto_ec2) == NOTHING


def test_after_kill_9_the_teardown_sweep_removes_the_leftovers(
    tmp_path: Path, moto_ec2: MotoEc2, staging_hosts: StagingHosts
):
    child, _ = start_held(tmp_path, moto_ec2, staging_hosts)
    child.kill()
    child.wait(timeout=10)
    (staging_hosts.control / "hold").unlink()
    assert staging_left(moto_ec2)["instances"]
    lines: list[str] = []

    async def sweep() -> bool:
        async with Ec2Cloud(moto_ec2.region, endpoint_url=moto_ec2.endpoint_url) as cloud:
            return await remove_staging_leftovers(
                cloud, FLEET, keep_snapshots=(), progress=lines.append
            )

    assert asyncio.run(sweep()) is True, lines
    assert staging_left(moto_ec2) == NOTHING
