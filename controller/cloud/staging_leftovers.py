"""What `controller sync-data` runs leave on EC2, found by tag and removed in EC2's order.

Everything a run makes carries `controller:fleet=<fleet>` and `controller:role=staging`
(controller.cloud.sync_plan): the staging instance, its data volume, its group, the temporary key
pair, and the snapshot until the config names it. A run removes its own at the end (and what an
earlier, killed run left, at its start); `controller teardown` calls `remove_staging_leftovers`.
The order is EC2's: instances first, waited for (their volumes go with them,
DeleteOnTermination), then what they used (groups, key pairs, volumes that outlived them), and
staging snapshots the config does not name. The ids a run knows are added to what the tags find,
since EC2's reads lag its writes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from controller.cloud.ec2cloud import Ec2Cloud
from controller.cloud.ec2errors import EC2_ERRORS, classify
from controller.cloud.port import InstanceState
from controller.cloud.staging import StagingEc2, StagingError, failed, staging_filter
from controller.cloud.sync_plan import STAGING_ROLE
from controller.messages import InstanceId

Progress = Callable[[str], None]
TERMINATE_TIMEOUT = 600.0
POLL_SECONDS = 5.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Leftovers:
    """The fleet's staging resources (what a run made and has not removed yet)."""

    instances: tuple[str, ...] = ()
    volumes: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    key_pairs: tuple[str, ...] = ()  # key pair names (DeleteKeyPair by id is not everywhere)
    snapshots: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return any((self.instances, self.volumes, self.groups, self.key_pairs, self.snapshots))

    def __str__(self) -> str:
        parts = [
            f"{name} {', '.join(ids)}"
            for name, ids in (
                ("instances", self.instances),
                ("volumes", self.volumes),
                ("security groups", self.groups),
                ("key pairs", self.key_pairs),
                ("snapshots", self.snapshots),
            )
            if ids
        ]
        return "; ".join(parts) or "nothing"


async def sweep(
    ec2: StagingEc2,
    *,
    known: Leftovers = Leftovers(),
    keep_snapshots: Sequence[str],
    progress: Progress,
    what: str,
    snapshots: bool = True,
) -> None:
    """Find the fleet's staging resources by tag, add `known`, remove them all; StagingError
    naming what is left. `keep_snapshots` (the config's) are never taken for leftovers."""
    found = await find_leftovers(ec2, keep_snapshots=keep_snapshots)
    found = Leftovers(
        instances=_union(known.instances, found.instances),
        volumes=found.volumes,
        groups=_union(known.groups, found.groups),
        key_pairs=_union(known.key_pairs, found.key_pairs),
        snapshots=found.snapshots if snapshots else (),
    )
    if not found:
        return
    progress(f"removing {what}: {found}")
    left = await remove(ec2, found, progress=progress)
    if left:
        raise StagingError(
            f"could not remove {left}: remove them by hand, or run `controller sync-data` or "
            "`controller teardown` again"
        )


async def remove_staging_leftovers(
    cloud: Ec2Cloud, fleet: str, *, keep_snapshots: Sequence[str], progress: Progress
) -> bool:
    """For `controller teardown`: remove every staging resource of the fleet; True when none is
    left. A staging snapshot the config names (`keep_snapshots`) is kept."""
    try:
        await sweep(
            StagingEc2(cloud, fleet),
            keep_snapshots=keep_snapshots,
            progress=progress,
            what="what sync-data left",
        )
    except StagingError as exc:
        progress(str(exc))
        return False
    return True


async def find_leftovers(ec2: StagingEc2, *, keep_snapshots: Sequence[str] = ()) -> Leftovers:
    """Every staging resource of the fleet that still exists."""
    filters = staging_filter(ec2.fleet)
    operation = "DescribeInstances"
    try:
        instances = [
            i["InstanceId"]
            async for r in ec2.pages("describe_instances", "Reservations", Filters=filters)
            for i in r.get("Instances", ())
            if i.get("State", {}).get("Name") != InstanceState.TERMINATED
        ]
        operation = "DescribeVolumes"
        volumes = [
            v["VolumeId"] async for v in ec2.pages("describe_volumes", "Volumes", Filters=filters)
        ]
        operation = "DescribeSecurityGroups"
        answer = await ec2.client.describe_security_groups(Filters=filters)
        groups = [g["GroupId"] for g in answer.get("SecurityGroups", ())]
        operation = "DescribeKeyPairs"
        answer = await ec2.client.describe_key_pairs(Filters=filters)
        key_pairs = [k["KeyName"] for k in answer.get("KeyPairs", ())]
    except EC2_ERRORS as exc:
        raise failed(exc, operation) from None
    named = set(keep_snapshots)
    snapshots = [
        s.snapshot_id for s in await ec2.snapshots(role=STAGING_ROLE) if s.snapshot_id not in named
    ]
    return Leftovers(
        instances=tuple(instances),
        volumes=tuple(volumes),
        groups=tuple(groups),
        key_pairs=tuple(key_pairs),
        snapshots=tuple(snapshots),
    )


async def remove(ec2: StagingEc2, found: Leftovers, *, progress: Progress) -> Leftovers:
    """Remove them in EC2's order; what could not be removed comes back."""
    alive: tuple[str, ...] = ()
    if found.instances:
        ids = [InstanceId(i) for i in found.instances]
        progress(f"terminating staging instance(s) {', '.join(ids)}")
        result = await ec2.cloud.terminate(ids)
        if not result.ok and result.error is not None:
            progress(f"TerminateInstances failed: {result.error.code}: {result.error.message}")
        alive = await ec2.cloud.wait_terminated(
            ids, timeout=TERMINATE_TIMEOUT, poll_interval=POLL_SECONDS
        )
    if alive:  # what they use cannot go before them
        return Leftovers(
            instances=alive,
            volumes=found.volumes,
            groups=found.groups,
            key_pairs=found.key_pairs,
            snapshots=found.snapshots,
        )
    volumes = [v for v in found.volumes if not await _delete_volume(ec2, v, progress)]
    groups = []
    for group_id in found.groups:
        progress(f"deleting staging security group {group_id}")
        result = await ec2.cloud.delete_security_group(group_id)
        if result.error is not None:
            progress(f"DeleteSecurityGroup {group_id} failed: {result.error.message}")
            groups.append(group_id)
    key_pairs = []
    for key_name in found.key_pairs:
        try:
            await ec2.client.delete_key_pair(KeyName=key_name)
            progress(f"deleted temporary key pair {key_name}")
        except EC2_ERRORS as exc:
            if classify(exc, "DeleteKeyPair").code != "InvalidKeyPair.NotFound":
                progress(str(failed(exc, "DeleteKeyPair")))
                key_pairs.append(key_name)
    snapshots = []
    for snapshot_id in found.snapshots:
        try:
            await ec2.delete_snapshot(snapshot_id)
            progress(f"deleted unfinished snapshot {snapshot_id}")
        except StagingError as exc:
            progress(str(exc))
            snapshots.append(snapshot_id)
    return Leftovers(
        volumes=tuple(volumes),
        groups=tuple(groups),
        key_pairs=tuple(key_pairs),
        snapshots=tuple(snapshots),
    )


async def _delete_volume(ec2: StagingEc2, volume_id: str, progress: Progress) -> bool:
    """A volume of a terminated instance goes with it (DeleteOnTermination); one that outlived
    it is deleted here. False when it is still there."""
    try:
        answer = await ec2.client.describe_volumes(VolumeIds=[volume_id])
        volume = (answer.get("Volumes") or [{}])[0]
        if volume.get("State", "deleted") in ("deleting", "deleted"):
            return True
        if volume.get("State") == "in-use" and all(
            a.get("DeleteOnTermination") for a in volume.get("Attachments", ())
        ):
            return True  # EC2 deletes it with its (terminated) instance
        progress(f"deleting staging volume {volume_id}")
        await ec2.client.delete_volume(VolumeId=volume_id)
    except EC2_ERRORS as exc:
        error = classify(exc, "DeleteVolume")
        if error.code == "InvalidVolume.NotFound":
            return True
        progress(f"DeleteVolume {volume_id} failed: {error.code}: {error.message}")
        return False
    return True


def _union(first: Sequence[str], second: Sequence[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys([*first, *second]))
