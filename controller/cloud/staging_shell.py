"""The staging instance's side of `controller sync-data`, as text: pure, no I/O.

The commands run on the staging host (find the data volume's device, make the filesystem, mount,
unmount), the rsync and ssh command lines the master runs, rsync's progress, the host keys
cloud-init prints on the instance's console, and which of its addresses the master reaches.

Block-device commands go through `sudo -n` (the image's login user is not root; -n: fail rather
than ask for a password) and are found on the session's PATH, never by absolute path: the tests
put stand-ins first on that PATH, so no test ever formats or mounts a disk of the machine it runs
on. The device is found with `lsblk`, not a shell test: the volume shows as /dev/sdf, as
/dev/xvdf (Xen), or on Nitro as an NVMe disk whose serial is the volume id without its dash.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass

LSBLK = "lsblk -dpno NAME,SERIAL"
HOST_ALIAS = "staging"  # the name the pinned host key is filed under for ssh (HostKeyAlias)
PROGRESS_STEP = 10  # percent between two progress lines of rsync

_KEYS_BLOCK = re.compile(
    r"-----BEGIN SSH HOST KEY KEYS-----(.*?)-----END SSH HOST KEY KEYS-----", re.S
)
_PRINTS_BLOCK = re.compile(
    r"-----BEGIN SSH HOST KEY FINGERPRINTS-----(.*?)-----END SSH HOST KEY FINGERPRINTS-----", re.S
)
_KEY = re.compile(r"\b((?:ssh-(?:ed25519|rsa|dss)|ecdsa-sha2-nistp\d+) AAAA[A-Za-z0-9+/]+=*)")
_PRINT = re.compile(r"\b(SHA256:[A-Za-z0-9+/]+=*)")
_PERCENT = re.compile(r"\s(\d{1,3})%\s")


@dataclass(frozen=True, slots=True)
class ConsoleKeys:
    """What the instance's console says about its SSH host keys (cloud-init prints both)."""

    keys: tuple[str, ...] = ()  # "TYPE BASE64"
    fingerprints: tuple[str, ...] = ()  # "SHA256:..."

    def __bool__(self) -> bool:
        return bool(self.keys or self.fingerprints)


def console_keys(output: str) -> ConsoleKeys:
    """The host keys and fingerprints inside cloud-init's BEGIN/END blocks (lines may carry a
    prefix such as `ec2: `); empty when the console shows none (yet)."""
    keys = [k for block in _KEYS_BLOCK.findall(output) for k in _KEY.findall(block)]
    prints = [p for block in _PRINTS_BLOCK.findall(output) for p in _PRINT.findall(block)]
    return ConsoleKeys(tuple(dict.fromkeys(keys)), tuple(dict.fromkeys(prints)))


def find_device(lsblk_output: str, volume_id: str, device: str) -> str | None:
    """The data volume's device in `lsblk -dpno NAME,SERIAL` output: the NVMe disk whose serial
    is the volume id, else `device` (/dev/sdf) or its Xen name (/dev/xvdf); None when absent."""
    serial = volume_id.replace("-", "")
    names = {device, device.replace("/dev/sd", "/dev/xvd")}
    found = None
    for line in lsblk_output.splitlines():
        parts = line.split()
        if not parts:
            continue
        if serial and len(parts) > 1 and parts[1].replace("-", "") == serial:
            return parts[0]
        if parts[0] in names:
            found = parts[0]
    return found


def format_command(device: str, label: str) -> str:
    """A fresh ext4 on the device (-m 0: no blocks reserved for root on a data disk)."""
    return f"sudo -n mkfs -t ext4 -q -m 0 -L {shlex.quote(label)} {shlex.quote(device)}"


def mount_command(device: str, mount_point: str) -> str:
    where = shlex.quote(mount_point)
    return f"sudo -n mkdir -p {where} && sudo -n mount {shlex.quote(device)} {where}"


def unmount_command(mount_point: str) -> str:
    """Unmounted before the snapshot, so every write is on the volume."""
    return f"sudo -n umount {shlex.quote(mount_point)}"


def ssh_argv(*, key_file: str, port: int, user: str, known_hosts: str) -> list[str]:
    """The ssh rsync runs: only this key, only the pinned host key, no user config, no prompt."""
    return [
        "ssh",
        "-F",
        "/dev/null",
        "-i",
        key_file,
        "-p",
        str(port),
        "-l",
        user,
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "BatchMode=yes",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        f"UserKnownHostsFile={known_hosts}",
        "-o",
        "GlobalKnownHostsFile=/dev/null",
        "-o",
        f"HostKeyAlias={HOST_ALIAS}",
        "-o",
        "ConnectTimeout=30",
        "-o",
        "ServerAliveInterval=30",
    ]


def rsync_argv(
    sources: Sequence[str], address: str, mount_point: str, ssh: Sequence[str]
) -> list[str]:
    """Copy each directory to the same absolute path under the mount point (-R), keeping owners
    (the remote rsync runs as root through sudo), hard links and numeric ids, with progress."""
    host = f"[{address}]" if ":" in address else address
    return [
        "rsync",
        "-aHR",
        "--numeric-ids",
        "--delete",
        "--info=progress2",
        "--no-inc-recursive",  # the total is known up front, so the percentage means something
        "--rsync-path=sudo -n rsync",
        "-e",
        shlex.join(ssh),
        *[path.rstrip("/") or "/" for path in sources],
        f"{host}:{mount_point.rstrip('/')}/",
    ]


def rsync_percent(line: str) -> int | None:
    """The overall percentage in one `--info=progress2` line (`  1,234  45%  1.2MB/s ...`)."""
    found = _PERCENT.search(f" {line} ")
    return int(found.group(1)) if found else None


def known_hosts_line(key: str) -> str:
    return f"{HOST_ALIAS} {key}\n"


def connect_address(master_ip: str, private_ip: str | None, public_ip: str | None) -> str | None:
    """The staging instance's address the master reaches: its private one when the master's own
    is private (same or peered VPC), else its public one; None when it has no such address."""
    try:
        master_private = not ipaddress.ip_address(master_ip).is_global
    except ValueError:
        master_private = False
    return private_ip if master_private else public_ip
