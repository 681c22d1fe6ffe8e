"""One `controller sync-data` run on EC2: from the plan to a completed snapshot, and nothing left.

In order: remove what an earlier, killed run left (by tag); make the run's group (SSH from the
master's address only) and, without [sync] ssh_key_file, a key pair for a key made here; launch
the staging instance with its empty data volume; wait for it and for SSH (host key checked,
controller.cloud.staging_ssh); find the volume's device, make the filesystem, mount it; rsync
every directory; unmount; start the snapshot. EC2 finishes a snapshot from the moment it starts,
so the staging instance, its group, key pair and volume are removed right then, and the snapshot
is waited for afterwards. Whatever happens (an error, a cancellation from SIGTERM or Ctrl-C), the
`finally` removes what the run made, and deletes a snapshot that did not complete; only a
`kill -9` skips that, and the next run (or `controller teardown`) finds the rest by its tags.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import asyncssh

from controller.cloud.ec2cloud import Ec2Cloud
from controller.cloud.staging import StagingEc2, StagingError
from controller.cloud.staging_leftovers import Leftovers, sweep
from controller.cloud.staging_shell import (
    connect_address,
    format_command,
    known_hosts_line,
    mount_command,
    rsync_argv,
    ssh_argv,
    unmount_command,
)
from controller.cloud.staging_ssh import connect, rsync, run, wait_device
from controller.cloud.sync_plan import (
    DEVICE,
    MOUNT_POINT,
    VOLUME_LABEL,
    SyncPlan,
    run_name,
    snapshot_description,
)

Progress = Callable[[str], None]


@dataclass(frozen=True, slots=True, kw_only=True)
class Timeouts:
    running: float = 600.0  # launch until EC2 says running
    ssh: float = 600.0  # running until sshd answers
    device: float = 120.0  # until the volume shows on the instance
    poll: float = 5.0  # between two EC2 reads while waiting


@dataclass(slots=True)
class _Made:
    """What this run created, so the cleanup knows it even before EC2 lists it."""

    instance: str = ""
    group: str = ""
    key_pair: str = ""


async def sync_to_snapshot(
    cloud: Ec2Cloud,
    plan: SyncPlan,
    *,
    master_ip: str,
    keep_snapshots: Sequence[str],
    progress: Progress,
    mount_point: str = MOUNT_POINT,
    timeouts: Timeouts = Timeouts(),
) -> str:
    """Copy the plan's directories into a new snapshot; its id. StagingError when a step fails
    (after the cleanup). `keep_snapshots`: the config's, never taken for leftovers."""
    ec2 = StagingEc2(cloud, plan.fleet)
    name = run_name(plan.fleet, uuid.uuid4().hex[:8])
    made = _Made()
    snapshot_id = ""
    completed = cleaned = False
    await sweep(
        ec2, keep_snapshots=keep_snapshots, progress=progress, what="what an earlier run left"
    )
    workdir = tempfile.TemporaryDirectory(prefix="controller-sync-")
    try:
        key, key_file = _client_key(plan, Path(workdir.name))
        vpc_id = await ec2.vpc_of(plan.subnet)
        made.group = await ec2.create_group(name, vpc_id, master_ip, plan.ssh_port)
        progress(f"security group {made.group}: SSH from {master_ip} only")
        key_name = plan.key_pair_name
        if not plan.ssh_key_file:
            made.key_pair = key_name = name
            await ec2.import_key_pair(name, key.export_public_key().decode())
        made.instance = await ec2.launch(
            plan, name=name, group_id=made.group, key_name=key_name, token=name
        )
        progress(f"staging instance {made.instance} launched ({plan.instance_type})")
        instance = await ec2.wait_running(
            made.instance, timeout=timeouts.running, progress=progress, poll=timeouts.poll
        )
        address = connect_address(master_ip, instance.private_ip, instance.public_ip)
        if address is None:
            raise StagingError(
                f"staging instance {made.instance} has no public address and this master "
                f"({master_ip}) is outside the VPC: use a [slave] subnet that gives public "
                "addresses, or run sync-data on a master inside the VPC"
            )
        conn, host_key = await connect(
            address,
            plan.ssh_port,
            plan.ssh_user,
            key,
            lambda: ec2.console_output(made.instance),
            timeout=timeouts.ssh,
            progress=progress,
        )
        volume_id = instance.volume_id or ""
        async with conn:
            known_hosts = Path(workdir.name, "known_hosts")  # rsync's ssh: only the pinned key
            known_hosts.write_text(known_hosts_line(host_key))
            device = await wait_device(conn, volume_id, DEVICE, timeout=timeouts.device)
            progress(f"volume {volume_id} is {device}: making the filesystem")
            await run(conn, "mkfs", format_command(device, VOLUME_LABEL))
            await run(conn, "mount", mount_command(device, mount_point))
            progress(f"copying {len(plan.sources)} director(ies) to {address}:{mount_point}")
            ssh = ssh_argv(
                key_file=key_file,
                port=plan.ssh_port,
                user=plan.ssh_user,
                known_hosts=str(known_hosts),
            )
            await rsync(
                rsync_argv([s.path for s in plan.sources], address, mount_point, ssh), progress
            )
            await run(conn, "umount", unmount_command(mount_point))
        snapshot_id = await ec2.create_snapshot(
            volume_id, name=name, description=snapshot_description(plan.fleet, plan.sources)
        )
        progress(f"snapshot {snapshot_id} started: removing the staging instance meanwhile")
        await _remove_own(ec2, made, keep_snapshots, progress, raise_left=True)
        cleaned = True
        await ec2.wait_snapshot(snapshot_id, progress=progress, poll=timeouts.poll)
        completed = True
        return snapshot_id
    finally:
        workdir.cleanup()
        if snapshot_id and not completed:
            try:
                await ec2.delete_snapshot(snapshot_id)
                progress(f"deleted the unfinished snapshot {snapshot_id}")
            except StagingError as exc:
                progress(f"{exc} (the next run deletes it)")
        if not cleaned:
            await _remove_own(ec2, made, keep_snapshots, progress, raise_left=False)


def _client_key(plan: SyncPlan, workdir: Path) -> tuple[asyncssh.SSHKey, str]:
    """The key to log in with, and a file holding it for rsync's ssh."""
    if plan.ssh_key_file:
        try:
            return asyncssh.read_private_key(plan.ssh_key_file), plan.ssh_key_file
        except (OSError, asyncssh.KeyImportError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise StagingError(
                f"[sync] ssh_key_file {plan.ssh_key_file}: {reason} (an unencrypted private key "
                "is needed)"
            ) from None
    key = asyncssh.generate_private_key("ssh-ed25519", comment="controller sync-data")
    path = workdir / "staging_key"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.export_private_key("openssh"))
    return key, str(path)


async def _remove_own(
    ec2: StagingEc2, made: _Made, keep: Sequence[str], progress: Progress, *, raise_left: bool
) -> None:
    """The run's own resources (and any other staging leftover of the fleet), by id and tag."""
    known = Leftovers(
        instances=(made.instance,) if made.instance else (),
        groups=(made.group,) if made.group else (),
        key_pairs=(made.key_pair,) if made.key_pair else (),
    )
    try:
        await sweep(
            ec2,
            known=known,
            keep_snapshots=keep,
            progress=progress,
            what="the staging resources",
            snapshots=False,
        )
    except StagingError as exc:
        if raise_left:
            raise
        progress(str(exc))
