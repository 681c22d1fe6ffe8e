"""Staging hosts for `controller sync-data` tests: a real sshd for each staging instance moto runs,
whose block-device commands are stand-ins.

A "boot" thread polls moto for running instances tagged controller:role=staging and does what
booting does on EC2: starts OpenSSH's sshd (with a fresh host key) on the instance's 127.0.20.x
address and the [sync] port, authorizes the operator's key and the launch's key pair (read back
from moto), and makes the data volume show in `lsblk` as an NVMe disk whose serial is the volume
id. A terminated instance's sshd is stopped.

Nothing may touch a disk of this machine, so:
- sshd runs in a private mount namespace with a tmpfs over /mnt: the product's mount point
  (/mnt/controller-sync) is made there, never on the machine;
- every session's PATH starts with stand-ins for sudo, lsblk, mkfs, mount and umount
  (authorized_keys `environment=`, sshd's PermitUserEnvironment). `mkfs` makes a fresh directory
  under `disks/` (the new "filesystem"), `mount` links the mount point to it, `umount` removes the
  link. rsync stays real, so the data really arrives in that directory. Each stand-in appends
  its command line to `calls.log`. Files in the root steer them: `hold` makes mkfs wait (after
  touching `mkfs-started`) until it is removed, `fail-mkfs` makes it fail.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.harness import procs
from tests.harness.moto_server import MotoEc2
from tests.harness.net import ServerStartError, free_port, wait_for_port
from tests.harness.sshd import SSHD, Sshd, _keygen

STANDINS = {
    "sudo": """\
[ "$1" = "-n" ] && shift
exec "$@"
""",
    "lsblk": """\
echo "lsblk $*" >> "$R/calls.log"
cat "$R/lsblk.out"
""",
    "mkfs": """\
echo "mkfs $*" >> "$R/calls.log"
for arg; do dev=$arg; done
if [ -b "$dev" ]; then echo "stand-in mkfs: $dev is a real block device" >&2; exit 1; fi
if [ -e "$R/fail-mkfs" ]; then echo "mkfs: the test made it fail" >&2; exit 1; fi
if [ -e "$R/hold" ]; then
    touch "$R/mkfs-started"
    while [ -e "$R/hold" ]; do sleep 0.05; done
fi
disk="$R/disks/$(basename "$dev")-$(date +%s%N)"
mkdir -p "$disk" && echo "$disk" > "$R/disks/$(basename "$dev").current"
""",
    "mount": """\
echo "mount $*" >> "$R/calls.log"
case "$2" in /mnt/*) ;; *) echo "stand-in mount: only under /mnt" >&2; exit 32;; esac
disk=$(cat "$R/disks/$(basename "$1").current") || exit 32
rmdir "$2" && ln -s "$disk" "$2"
""",
    "umount": """\
echo "umount $*" >> "$R/calls.log"
[ -L "$1" ] && rm "$1" && mkdir "$1"
""",
}
# In a private mount namespace, /mnt is a tmpfs only this sshd (and its sessions) sees.
NAMESPACED = "mount -t tmpfs tmpfs /mnt && exec {sshd} -D -e -f {config}"


@dataclass
class Host:
    """One booted staging instance."""

    instance_id: str
    address: str
    root: Path
    sshd: Sshd
    process: subprocess.Popen | None = None
    groups: list[dict] = field(default_factory=list)  # its security groups as moto describes them
    tags: dict[str, str] = field(default_factory=dict)
    subnet: str = ""
    zone: str = ""
    key_name: str = ""

    def calls(self) -> list[str]:
        path = self.root / "calls.log"
        return path.read_text().splitlines() if path.exists() else []

    def disks(self) -> list[Path]:
        """The "filesystems" mkfs made, oldest first."""
        return sorted(p for p in (self.root / "disks").iterdir() if p.is_dir())


class StagingHosts:
    """Boots an sshd for every running staging instance in moto (see the module docstring)."""

    def __init__(self, moto: MotoEc2, root: Path) -> None:
        self.moto = moto
        self.root = root
        self.port = free_port("127.0.0.1")
        self.operator_key = root / "operator_key"
        _keygen(self.operator_key)
        self.hosts: dict[str, Host] = {}
        self.errors: list[str] = []
        self.control = root / "control"  # hold / fail-mkfs files, shared by every host
        self.control.mkdir()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._boot_loop, name="staging-boot", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        for host in self.hosts.values():
            procs.stop(host.process)

    def only_host(self) -> Host:
        assert not self.errors, self.errors
        assert len(self.hosts) == 1, f"staging instances booted: {list(self.hosts)}"
        return next(iter(self.hosts.values()))

    def _boot_loop(self) -> None:
        ec2 = self.moto.client()
        while not self._stop.is_set():
            try:
                self._poll(ec2)
            except Exception as exc:  # reported by the test, never lost in the thread
                self.errors.append(f"{type(exc).__name__}: {exc}")
                return
            time.sleep(0.1)  # moto runs in this process: polling harder slows it

    def _poll(self, ec2) -> None:
        answer = ec2.describe_instances(
            Filters=[{"Name": "tag:controller:role", "Values": ["staging"]}]
        )
        for reservation in answer["Reservations"]:
            for item in reservation["Instances"]:
                iid, state = item["InstanceId"], item["State"]["Name"]
                if state == "running" and iid not in self.hosts:
                    self._boot(ec2, item)
                elif state != "running" and iid in self.hosts:
                    procs.stop(self.hosts[iid].process)

    def _boot(self, ec2, item: dict) -> None:
        iid, address = item["InstanceId"], item["PrivateIpAddress"]
        root = self.root / iid
        (root / "bin").mkdir(parents=True)
        (root / "disks").mkdir()
        (root / "control").symlink_to(self.control)
        for name, body in STANDINS.items():
            script = root / "bin" / name
            # The steering files live in the shared control dir, the rest per host.
            body = body.replace('"$R/hold"', '"$R/control/hold"').replace(
                '"$R/fail-mkfs"', '"$R/control/fail-mkfs"'
            )
            script.write_text(f"#!/bin/sh\nR={root}\n{body}")
            script.chmod(0o755)
        volume = next(
            m["Ebs"]["VolumeId"]
            for m in item.get("BlockDeviceMappings", ())
            if m["DeviceName"] == "/dev/sdf"
        )
        (root / "lsblk.out").write_text(
            f"/dev/nvme0n1 vol0root{iid[2:]}\n/dev/nvme1n1 {volume.replace('-', '')}\n"
        )
        sshd = Sshd(root, address=address, port=self.port)
        keys = [self.operator_key.with_suffix(".pub").read_text().strip()]
        key_name = item.get("KeyName", "")
        if key_name:
            pairs = ec2.describe_key_pairs(KeyNames=[key_name], IncludePublicKey=True)
            keys.append(pairs["KeyPairs"][0]["PublicKey"].strip())
        path = f"{root / 'bin'}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        (root / "authorized_keys").write_text(
            "".join(f'environment="PATH={path}" {key}\n' for key in keys)
        )
        with open(root / "sshd_config", "a") as config:
            config.write("PermitUserEnvironment PATH\n")
        host = Host(
            instance_id=iid,
            address=address,
            root=root,
            sshd=sshd,
            tags={t["Key"]: t["Value"] for t in item.get("Tags", ())},
            subnet=item.get("SubnetId", ""),
            zone=item["Placement"]["AvailabilityZone"],
            key_name=key_name,
        )
        group_ids = [g["GroupId"] for g in item.get("SecurityGroups", ())]
        if group_ids:
            host.groups = ec2.describe_security_groups(GroupIds=group_ids)["SecurityGroups"]
        command = NAMESPACED.format(sshd=SSHD, config=root / "sshd_config")
        argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c", command]
        host.process = procs.spawn(argv, sshd.log)
        self.hosts[iid] = host
        try:
            wait_for_port(
                address, self.port, alive=lambda: host.process.poll() is None, log=sshd.log
            )
        except ServerStartError as exc:
            self.errors.append(str(exc))


@contextlib.contextmanager
def booting_staging_hosts(moto: MotoEc2) -> Iterator[StagingHosts]:
    """StagingHosts for `moto`, stopped (every sshd) and removed at the end."""
    if shutil.which("rsync") is None:
        raise ServerStartError("rsync is missing: install the rsync package (scripts/test does)")
    root = Path(tempfile.mkdtemp(prefix="test-staging-"))
    hosts = StagingHosts(moto, root)
    hosts.start()
    try:
        yield hosts
    finally:
        hosts.stop()
        shutil.rmtree(root, ignore_errors=True)
