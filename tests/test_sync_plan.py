"""`controller sync-data`'s decisions (controller.cloud.sync_plan, staging_shell), its [sync]
section, its IAM statements, and the input it refuses before anything is created."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from controller.cli import main
from controller.cloud.iam import granted_actions, iam_policy
from controller.cloud.staging_shell import (
    connect_address,
    console_keys,
    find_device,
    rsync_argv,
    rsync_percent,
)
from controller.cloud.sync_plan import (
    GIB,
    PlanError,
    SnapshotInfo,
    check_sources,
    edit_config,
    on_disk,
    snapshots_to_delete,
    updated_snapshots,
    volume_size_gib,
)
from controller.config.reader import ConfigError, parse_config
from controller.config.schema import Config, SlaveSection, SyncSection
from tests.harness.moto_server import MotoEc2

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBFSEc2fgADPqL+qkEegTFjKGX7lwgxhU1X92dez0eRb"
CONSOLE = f"""\
[   12.001] cloud-init[801]: Generating public/private ed25519 key pair.
ec2:
ec2: #############################################################
ec2: -----BEGIN SSH HOST KEY FINGERPRINTS-----
ec2: 256 SHA256:zyq0/wbm1CyT8DCrXV4pfsXELbFoPEq2TQXv5h2Exe4 root@ip-10-0-1-5 (ED25519)
ec2: -----END SSH HOST KEY FINGERPRINTS-----
ec2: #############################################################
-----BEGIN SSH HOST KEY KEYS-----
{KEY} root@ip-10-0-1-5
-----END SSH HOST KEY KEYS-----
"""


def test_sizes_take_whole_blocks_headroom_and_the_filesystem():
    assert on_disk(0) == 0 and on_disk(1) == 4096 and on_disk(4097) == 8192
    assert volume_size_gib(0) == 1
    assert volume_size_gib(10 * GIB) == 12 + 1  # +20 %, + 1 GiB for ext4
    with pytest.raises(PlanError, match="more than one EBS volume holds"):
        volume_size_gib(20_000 * GIB)


def test_sources_must_be_absolute_and_never_overlap():
    assert check_sources(
        [("data", "/var/lib/gbrowse2/databases/"), ("mysql", "/var/lib/mysql")]
    ) == [
        ("data", "/var/lib/gbrowse2/databases"),
        ("mysql", "/var/lib/mysql"),
    ]
    with pytest.raises(PlanError, match="absolute path"):
        check_sources([("data", "databases")])
    with pytest.raises(PlanError, match="overlaps /var/lib"):
        check_sources([("data", "/var/lib"), ("mysql", "/var/lib/mysql")])
    with pytest.raises(PlanError, match="give each directory once"):
        check_sources([("data", "/srv/data"), ("data", "/srv/data/")])
    assert len(check_sources([("data", "/srv/data"), ("data", "/srv/database")])) == 2


def test_the_new_snapshot_takes_the_place_of_ours_and_keeps_the_others():
    assert updated_snapshots([], [], "snap-new") == ("snap-new",)
    assert updated_snapshots(["snap-user", "snap-old"], ["snap-old"], "snap-new") == (
        "snap-user",
        "snap-new",
    )
    assert updated_snapshots(["snap-a", "snap-x", "snap-b"], ["snap-a", "snap-b"], "snap-n") == (
        "snap-n",
        "snap-x",
    )
    assert updated_snapshots(["snap-user"], [], "snap-new") == ("snap-new", "snap-user")


def test_keep_deletes_only_older_completed_data_snapshots_not_named():
    def snap(sid: str, at: float, state: str = "completed", role: str = "data") -> SnapshotInfo:
        return SnapshotInfo(snapshot_id=sid, state=state, started_at=at, role=role)

    ours = [
        snap("snap-1", 1),
        snap("snap-2", 2),
        snap("snap-3", 3),
        snap("snap-4", 4),
        snap("snap-p", 0, state="pending"),
        snap("snap-s", 0, role="staging"),
    ]
    assert snapshots_to_delete(ours, 2, protected=["snap-4"]) == ["snap-2", "snap-1"]
    assert snapshots_to_delete(ours, 1, protected=["snap-2"]) == ["snap-3", "snap-1"]
    assert snapshots_to_delete(ours, 5, protected=[]) == []
    with pytest.raises(ValueError):
        snapshots_to_delete(ours, 0, protected=[])


def test_config_edit_keeps_comments_and_layout():
    text = (
        '# lab farm\n[slave]\n# the image\nimage_id = "ami-1"   # slave AMI\n'
        'data_snapshots = ["snap-old"]   # kept by sync-data\nports = [8101]\n\n[aws]\nx = 1\n'
    )
    edited = edit_config(text, ["snap-a", "snap-b"], "ami-2")
    assert edited == text.replace('"ami-1"', '"ami-2"').replace(
        '["snap-old"]   #', '["snap-a", "snap-b"] #'
    )
    assert edit_config(text, ["snap-old"], None) == text
    added = edit_config('[controller]\nfleet = "f"\n', ["snap-a"], None)
    assert tomllib.loads(added)["slave"]["data_snapshots"] == ["snap-a"]
    with pytest.raises(PlanError, match="cannot edit the config"):
        edit_config("[slave\n", [], None)


def test_console_keys_and_fingerprints_are_read_from_cloud_inits_blocks():
    found = console_keys(CONSOLE)
    assert found.keys == (KEY,)
    assert found.fingerprints == ("SHA256:zyq0/wbm1CyT8DCrXV4pfsXELbFoPEq2TQXv5h2Exe4",)
    assert not console_keys("Linux version 6.1\nBIOS-provided physical RAM map\n")
    assert not console_keys(f"{KEY} outside any block\n")


def test_the_volume_is_found_by_nvme_serial_or_by_name():
    nvme = "/dev/nvme0n1 vol0aaa\n/dev/nvme1n1 vol0123456789abcdef0\n"
    assert find_device(nvme, "vol-0123456789abcdef0", "/dev/sdf") == "/dev/nvme1n1"
    assert find_device("/dev/xvda\n/dev/xvdf\n", "vol-0abc", "/dev/sdf") == "/dev/xvdf"
    assert find_device("/dev/sda\n/dev/sdf\n", "vol-0abc", "/dev/sdf") == "/dev/sdf"
    assert find_device("/dev/nvme0n1 vol0aaa\n", "vol-0abc", "/dev/sdf") is None


def test_rsync_copies_each_directory_to_its_own_path_as_root():
    argv = rsync_argv(
        ["/srv/data/", "/var/lib/mysql"], "10.0.1.5", "/mnt/sync", ["ssh", "-p", "22"]
    )
    assert argv[-3:] == ["/srv/data", "/var/lib/mysql", "10.0.1.5:/mnt/sync/"]
    assert "-aHR" in argv and "--numeric-ids" in argv and "--rsync-path=sudo -n rsync" in argv
    assert argv[argv.index("-e") + 1] == "ssh -p 22"
    assert rsync_argv(["/d"], "fd00::5", "/m", ["ssh"])[-1] == "[fd00::5]:/m/"
    assert rsync_percent("      1,234,567  45%   10.20MB/s    0:00:01 (xfr#3, to-chk=7/12)") == 45
    assert rsync_percent("sending incremental file list") is None


def test_the_master_reaches_the_private_address_from_inside_the_vpc():
    assert connect_address("10.0.0.9", "10.0.1.5", "54.1.2.3") == "10.0.1.5"
    assert connect_address("127.0.0.1", "127.0.20.4", None) == "127.0.20.4"
    assert connect_address("52.1.2.3", "10.0.1.5", "54.1.2.3") == "54.1.2.3"
    assert connect_address("8.8.4.4", "10.0.1.5", None) is None


def test_sync_section_is_read_and_checked():
    config = parse_config(
        {"sync": {"ssh_user": "ubuntu", "ssh_port": 2222, "staging_instance_type": "t3.micro"}},
        "c.toml",
    )
    assert config.sync == SyncSection(
        ssh_user="ubuntu", ssh_port=2222, staging_instance_type="t3.micro"
    )
    assert parse_config({}, "c.toml").sync == SyncSection()
    with pytest.raises(ConfigError) as caught:
        parse_config({"sync": {"ssh_port": 0, "user": "x"}}, "c.toml")
    assert any("sync.ssh_port" in line for line in caught.value.errors)
    assert any("sync.user" in line for line in caught.value.errors)


def test_iam_grants_sync_data_with_data_snapshots_or_when_asked():
    needed = {
        "ec2:ImportKeyPair",
        "ec2:DeleteKeyPair",
        "ec2:DescribeKeyPairs",
        "ec2:CreateSnapshot",
        "ec2:DeleteSnapshot",
        "ec2:DescribeSnapshots",
        "ec2:DescribeVolumes",
        "ec2:DeleteVolume",
        "ec2:GetConsoleOutput",
        "ec2:CreateSecurityGroup",
        "ec2:AuthorizeSecurityGroupIngress",
        "ec2:DeleteSecurityGroup",
        "ec2:CreateTags",
        "ec2:RunInstances",
        "ec2:TerminateInstances",
        "ec2:DescribeInstances",
    }
    own_group = Config(slave=SlaveSection(image_id="ami-1", security_group="sg-0user"))
    assert not {"ec2:ImportKeyPair", "ec2:CreateSnapshot"} & granted_actions(own_group)
    asked = {a for s in iam_policy(own_group, sync_data=True)["Statement"] for a in s["Action"]}
    assert needed <= asked
    with_data = Config(slave=SlaveSection(image_id="ami-1", data_snapshots=("snap-1",)))
    assert needed <= granted_actions(with_data)
    statements = {s["Sid"]: s for s in iam_policy(with_data)["Statement"]}
    manage = statements["SyncDataManageOnlyThisFleetsStagingResources"]
    assert manage["Condition"] == {"StringEquals": {"aws:ResourceTag/controller:fleet": "gbrowse"}}


@pytest.fixture
def config_file(tmp_path: Path, moto_ec2: MotoEc2) -> Path:
    path = tmp_path / "c.toml"
    path.write_text(
        f'[slave]\nimage_id = "ami-12345678"\nsubnet = "{moto_ec2.subnet_id}"\n'
        f'[aws]\nendpoint_url = "{moto_ec2.endpoint_url}"\n'
    )
    return path


def test_dry_run_prints_the_plan_and_creates_nothing(
    tmp_path: Path, config_file: Path, moto_ec2: MotoEc2, capsys
):
    data = tmp_path / "db"
    data.mkdir()
    (data / "big.bam").write_bytes(b"x" * 10_000)
    before = config_file.read_text()
    argv = ["sync-data", "-c", str(config_file), "--path", str(data)]
    argv += ["--postgres", str(data.parent / "pg"), "--dry-run"]
    code = main(argv)
    assert code == 2  # a missing directory is refused before anything
    assert f"{data.parent / 'pg'}: no such directory" in capsys.readouterr().err
    (data.parent / "pg").mkdir()
    code = main(argv)
    out = capsys.readouterr().out
    assert code == 0
    assert f"copy {data} (data): 16.0 KiB, 1 files" in out
    assert "volume: 2 GiB gp3" in out
    assert "WHOLE MySQL / PostgreSQL data directories are copied" in out
    assert "dry run: nothing was created" in out
    ec2 = moto_ec2.client()
    assert ec2.describe_instances()["Reservations"] == []
    assert [
        g for g in ec2.describe_security_groups()["SecurityGroups"] if g["GroupName"] != "default"
    ] == []
    assert config_file.read_text() == before and not Path(f"{config_file}.bak").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--keep", "0"], "--keep 0: keep at least 1 generation"),
        (["--path", "relative/dir"], "relative/dir: give the absolute path"),
        ([], "no such directory (GBrowse's databases directory: pass --path DIR)"),
    ],
)
def test_bad_input_exits_2_with_one_line(tmp_path: Path, config_file: Path, capsys, extra, message):
    argv = ["sync-data", "-c", str(config_file), "--yes", *extra]
    if "--path" not in extra and extra:
        argv += ["--path", str(tmp_path)]
    if not extra:
        argv += ["--path", str(tmp_path / "none")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_no_image_is_bad_input(tmp_path: Path, capsys):
    path = tmp_path / "c.toml"
    path.write_text('[slave]\nregion = "us-east-1"\n')
    assert main(["sync-data", "-c", str(path), "--path", str(tmp_path), "--yes"]) == 2
    # Off EC2 (conftest disables the metadata) a blank image cannot be the master's own.
    assert capsys.readouterr().err.splitlines() == [
        f"{path}: [slave] image_id is blank and this machine's instance metadata is not "
        "reachable (AWS_EC2_METADATA_DISABLED=true): set image_id (the master is not on EC2), "
        "or give --image-id"
    ]


def test_one_sync_per_fleet(tmp_path: Path, capsys, monkeypatch):
    from controller.runtime.fleet_lock import LOCK_DIR_ENV, FleetLock

    monkeypatch.setenv(LOCK_DIR_ENV, str(tmp_path))
    path = tmp_path / "c.toml"
    path.write_text('[controller]\nfleet = "lab"\n[slave]\nimage_id = "ami-1"\n')
    with FleetLock("lab+sync-data"):
        assert main(["sync-data", "-c", str(path), "--path", str(tmp_path), "--yes"]) == 1
    assert "fleet lab is being synced already" in capsys.readouterr().err


def test_a_staging_instance_is_never_taken_for_a_slave():
    """A running controller adopts its fleet by tag: role=staging must not read as a slave."""
    from controller.cloud.ec2_shapes import parse_instance
    from controller.messages import Role

    item = {
        "InstanceId": "i-0staging",
        "State": {"Name": "running"},
        "Tags": [
            {"Key": "controller:fleet", "Value": "f"},
            {"Key": "controller:role", "Value": "staging"},
        ],
    }
    assert parse_instance(item).role is Role.STAGING


def test_an_unusable_key_file_is_bad_input(tmp_path: Path, capsys):
    path = tmp_path / "c.toml"
    key = tmp_path / "key"
    key.write_text("not a key\n")
    path.write_text(f'[slave]\nimage_id = "ami-1"\n[sync]\nssh_key_file = "{key}"\n')
    assert main(["sync-data", "-c", str(path), "--path", str(tmp_path), "--dry-run"]) == 2
    assert f"[sync] ssh_key_file {key}:" in capsys.readouterr().err
