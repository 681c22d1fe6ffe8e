"""Mounting a cluster's [volume.X] sections on a node, as shell commands: pure, no I/O.

- `snapshot_id` volumes: every node gets its own volume made from the snapshot. The node pool
  attaches them, in the order the cluster lists its volumes (counting snapshot volumes only), at
  `device_name(0)`, `(1)`, ...
  (/dev/sdf, /dev/sdg, ...: the block device mappings it launches with). The node may show
  /dev/sdf as /dev/xvdf (Xen) or, on Nitro, as an NVMe disk that udev links to /dev/sdf (Amazon
  Linux's ec2-utils; elsewhere install such a rule). The command waits up to `device_wait`
  seconds for one of those names, then mounts it at `mount_path` unless something is mounted
  there already. A device with no filesystem at all (`blkid -p` finds nothing: the copy of a
  blank volume's snapshot, a new volume) gets ext4 first; one that holds anything is never
  formatted, and a second setup finds it mounted (or, after a reboot, mounts it again). A volume
  that never shows up fails the setup: a node without its data is no use.
- `volume_id` volumes: one volume on the head, shared like StarCluster's NFS mounts: the node
  mounts `HEAD:mount_path` over NFS. Exporting it from the head is not done by the controller.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence

from controller.config.schema import ClusterSection, Config, VolumeSection
from controller.gridengine.node_plugins import RemoteCommand

FIRST_DEVICE_LETTER = "f"
MAX_VOLUMES = 11  # /dev/sdf .. /dev/sdp, the names EC2 recommends for EBS data volumes
# `blkid -p` exits 2 when it finds no signature at all (filesystem, partition table, RAID, LUKS,
# swap...): only then is the device formatted; any other failure stops the setup.
FORMAT_IF_BLANK = (
    'found=0; blkid -p "$dev" >/dev/null 2>&1 || found=$?;'
    ' if [ "$found" -eq 2 ]; then mkfs -t ext4 -q "$dev"'
    ' && echo "formatted $dev (ext4): it held no filesystem";'
    ' elif [ "$found" -ne 0 ]; then echo "blkid -p $dev exited $found: cannot tell whether it'
    ' holds a filesystem, not formatting it" >&2; false; fi'
)


def node_snapshots(config: Config, cluster: ClusterSection) -> tuple[str, ...]:
    """The snapshot volumes of a cluster, in its volume order: EC2 attaches the i-th at
    /dev/sd(f+i), where `volume_commands` looks for it. Shared `volume_id` volumes are
    mounted over NFS and take no device."""
    by_name = {v.name: v for v in config.volumes}
    return tuple(
        by_name[name].snapshot_id
        for name in cluster.volumes
        if name in by_name and by_name[name].snapshot_id
    )


def device_name(index: int) -> str:
    """The device name the node pool attaches the cluster's `index`-th volume at."""
    if not 0 <= index < MAX_VOLUMES:
        raise ValueError(f"a cluster can mount at most {MAX_VOLUMES} volumes (index {index})")
    return "/dev/sd" + chr(ord(FIRST_DEVICE_LETTER) + index)


def volume_commands(
    volumes: Sequence[VolumeSection], head: str, *, device_wait: int = 60
) -> list[tuple[str, RemoteCommand]]:
    """(volume name, the command that mounts it) for each volume, in order."""
    commands = []
    index = 0  # among the snapshot volumes: only they are block devices of the node
    for volume in volumes:
        path = shlex.quote(volume.mount_path)
        mount_unless_mounted = f"mkdir -p {path} && {{ mountpoint -q {path} || mount %s {path}; }}"
        if volume.snapshot_id:
            sd = device_name(index)
            index += 1
            candidates = f"{sd} /dev/xvd{sd[-1]}"
            wait = int(device_wait)
            command = (
                f'dev=""; i=0; while :; do for d in {candidates}; do'
                f' if [ -b "$d" ]; then dev="$d"; fi; done;'
                f' if [ -n "$dev" ] || [ "$i" -ge {wait} ]; then break; fi;'
                f" i=$((i + 1)); sleep 1; done;"
                f' if [ -z "$dev" ]; then echo "no block device {candidates.replace(" ", " or ")}'
                f' after {wait}s for {volume.snapshot_id}" >&2; exit 1; fi; '
                f"mkdir -p {path} && {{ mountpoint -q {path} ||"
                f' {{ {FORMAT_IF_BLANK} && mount "$dev" {path}; }}; }}'
            )
            what = f"mount {sd} ({volume.snapshot_id}) at {volume.mount_path}"
        else:
            source = shlex.quote(f"{head}:{volume.mount_path}")
            command = mount_unless_mounted % f"-t nfs {source}"
            what = f"mount {head}:{volume.mount_path} over NFS"
        commands.append((volume.name, RemoteCommand(command, what)))
    return commands
