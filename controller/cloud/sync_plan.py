"""What `controller sync-data` will do, decided before anything is created: pure, no I/O.

The seed's gbrowse_sync_aws_slave.pl copies the master's data (GBrowse's databases directory, and
the whole MySQL / PostgreSQL data directories when given) to a new EBS snapshot through a staging
instance, then points the config at it. Here: the volume's size (the data's size on disk, with
headroom), the names and tags of what the run makes, where each directory lands on the volume (at
its own absolute path, so a slave's user_data can mount the volume and bind or link each one
back), which earlier snapshots of this command go (`--keep` generations), the new
`data_snapshots` list, and the config's new text (tomlkit: comments and layout kept).

Tags say what a resource is, so any later run or `controller teardown` can find it:
`controller:fleet=<fleet>` on everything; `controller:role=staging` on what lives only for a run
(instance, volume, group, key pair, and the snapshot until the config names it);
`controller:role=data` on a snapshot the config was pointed at, which only `--keep` deletes.
"""

from __future__ import annotations

import math
import posixpath
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import tomlkit
from tomlkit.exceptions import TOMLKitError
from tomlkit.items import Item

from controller.cloud.port import FLEET_TAG, ROLE_TAG
from controller.messages import Role

GIB = 1024**3
BLOCK = 4096  # ext4's block: every file and directory takes whole blocks
HEADROOM = 1.2  # data may grow between sizing and the copy; ext4 keeps inode tables
FS_OVERHEAD_GIB = 1  # journal and metadata of a fresh ext4
MAX_VOLUME_GIB = 16384  # gp3's limit
DATA_ROLE = "data"  # controller:role of a snapshot the config names (kept by --keep)
STAGING_ROLE = str(Role.STAGING)
DEFAULT_DATA_DIR = "/var/lib/gbrowse2/databases"  # GBrowse's databases directory
DEVICE = "/dev/sdf"  # where the staging instance gets the data volume
MOUNT_POINT = "/mnt/controller-sync"  # where the staging instance mounts it
VOLUME_LABEL = "gbrowse-data"  # the filesystem label a slave's fstab can name (LABEL=...)
DESCRIPTION_MAX = 255  # EC2's limit on a snapshot description


class PlanError(Exception):
    """Input the command cannot use; one line naming it and what to do (exit 2)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Source:
    """One directory to copy, measured on the master."""

    path: str  # absolute, normalised
    kind: str  # "data", "mysql" or "postgres"
    bytes_on_disk: int  # what it takes in 4 KiB blocks
    files: int


@dataclass(frozen=True, slots=True, kw_only=True)
class SnapshotInfo:
    """A snapshot as EC2 describes it, with the tags this command reads."""

    snapshot_id: str
    state: str  # pending | completed | error | recoverable...
    started_at: float  # epoch seconds
    fleet: str = ""
    role: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class SyncPlan:
    fleet: str
    region: str
    image_id: str
    instance_type: str
    subnet: str
    zone: str
    sources: tuple[Source, ...]
    size_gib: int
    keep: int
    ssh_user: str
    ssh_port: int
    ssh_key_file: str  # "" = a temporary key pair
    key_pair_name: str  # [slave] ssh_key when ssh_key_file is set, else "" (a temporary one)

    @property
    def data_bytes(self) -> int:
        return sum(s.bytes_on_disk for s in self.sources)


def on_disk(size: int) -> int:
    """The bytes a file of `size` bytes takes on ext4 (whole blocks; an empty file none)."""
    return math.ceil(size / BLOCK) * BLOCK


def volume_size_gib(data_bytes: int) -> int:
    """The volume for `data_bytes` of data: headroom, plus a fresh filesystem's overhead."""
    size = math.ceil(data_bytes * HEADROOM / GIB) + FS_OVERHEAD_GIB
    if size > MAX_VOLUME_GIB:
        raise PlanError(
            f"the data takes {data_bytes / GIB:.0f} GiB: more than one EBS volume holds "
            f"({MAX_VOLUME_GIB} GiB); sync fewer directories"
        )
    return size


def check_sources(paths: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """(kind, path) pairs made absolute and normalised; PlanError for a relative path or one
    given twice or inside another (its files would be copied twice)."""
    seen: list[tuple[str, str]] = []
    for kind, path in paths:
        if not posixpath.isabs(path):
            raise PlanError(f"{path}: give the absolute path of the directory to copy")
        normal = posixpath.normpath(path)
        if normal == "/":
            raise PlanError("/: copying the whole filesystem is not a data sync; name directories")
        for _, other in seen:
            inner, outer = sorted((normal, other), key=len)
            if outer == inner or outer.startswith(inner.rstrip("/") + "/"):
                raise PlanError(f"{normal}: overlaps {other}; give each directory once")
        seen.append((kind, normal))
    return seen


def run_name(fleet: str, run_id: str) -> str:
    """The Name tag and the name of the run's group and key pair (unique per run, so a group
    or key pair a killed run left behind never blocks the next one)."""
    return f"controller-{fleet}-staging-{run_id}"


def tags(fleet: str, role: str, name: str) -> list[dict[str, str]]:
    values = {FLEET_TAG: fleet, ROLE_TAG: role, "Name": name}
    return [{"Key": key, "Value": value} for key, value in values.items()]


def snapshot_description(fleet: str, sources: Iterable[Source]) -> str:
    text = f"controller sync-data of fleet {fleet}: " + " ".join(s.path for s in sources)
    return text if len(text) <= DESCRIPTION_MAX else text[: DESCRIPTION_MAX - 3] + "..."


def updated_snapshots(current: Sequence[str], ours: Iterable[str], new: str) -> tuple[str, ...]:
    """The new `data_snapshots`: the new snapshot takes the place of the first one this command
    made (so the slaves' device order stays: /dev/sdf, /dev/sdg, ...); the others it made are
    dropped; snapshots it did not make stay where they are. With none of its own listed, the new
    one comes first, where the seed's single data snapshot was."""
    mine = set(ours)
    result: list[str] = []
    placed = False
    for snapshot in current:
        if snapshot in mine:
            if not placed:
                result.append(new)
                placed = True
        elif snapshot != new:
            result.append(snapshot)
    if not placed:
        result.insert(0, new)
    return tuple(result)


def snapshots_to_delete(
    ours: Sequence[SnapshotInfo], keep: int, protected: Iterable[str]
) -> list[str]:
    """Snapshots this command made for the config (role data) beyond the `keep` newest
    completed ones; never one the config names (`protected`), never one still pending."""
    if keep < 1:
        raise ValueError("keep at least the snapshot just made")
    named = set(protected)
    done = sorted(
        (s for s in ours if s.role == DATA_ROLE and s.state == "completed"),
        key=lambda s: (s.started_at, s.snapshot_id),
        reverse=True,
    )
    return [s.snapshot_id for s in done[keep:] if s.snapshot_id not in named]


def edit_config(text: str, snapshots: Sequence[str], image_id: str | None) -> str:
    """The config's text with [slave] data_snapshots (and image_id) set, everything else as it
    was: comments, order, spacing. A missing key is added to [slave] (the section too).
    PlanError when the text is not TOML or [slave] is not a table."""
    try:
        document = tomlkit.parse(text)
    except TOMLKitError as exc:
        raise PlanError(f"cannot edit the config: {exc}") from None
    slave = document.get("slave")
    if slave is None:
        slave = tomlkit.table()
        document["slave"] = slave
    elif not isinstance(slave, dict):
        raise PlanError("cannot edit the config: [slave] is not a table")
    array = tomlkit.array()
    array.extend(snapshots)
    _set(slave, "data_snapshots", array)
    if image_id is not None:
        _set(slave, "image_id", tomlkit.item(image_id))
    return tomlkit.dumps(document)


def _set(table: dict, key: str, value: Item) -> None:
    """Set `key`, keeping the old value's trailing comment at its column where it fits."""
    old = table.get(key)
    if isinstance(old, Item) and old.trivia.comment:
        width = len(old.as_string()) + len(old.trivia.comment_ws)
        value.trivia.comment_ws = " " * max(1, width - len(value.as_string()))
        value.trivia.comment = old.trivia.comment
    table[key] = value


def plan_lines(plan: SyncPlan) -> list[str]:
    """What the run will do, for --dry-run and the question before it starts."""
    where = plan.subnet or "the default VPC"
    if plan.zone:
        where += f", zone {plan.zone}"
    key = plan.ssh_key_file or "a temporary key pair (deleted after)"
    lines = [f"fleet {plan.fleet}, region {plan.region}"]
    for source in plan.sources:
        lines.append(
            f"copy {source.path} ({source.kind}): {_size(source.bytes_on_disk)}, "
            f"{source.files} files -> {MOUNT_POINT}{source.path} on the volume"
        )
    if any(s.kind in ("mysql", "postgres") for s in plan.sources):
        lines.append(
            "note: the WHOLE MySQL / PostgreSQL data directories are copied, not just the "
            "databases GBrowse shows; stop or lock the database for a consistent copy"
        )
    lines += [
        f"volume: {plan.size_gib} GiB gp3 at {DEVICE} for {_size(plan.data_bytes)} of data "
        f"(+{round((HEADROOM - 1) * 100)}% and {FS_OVERHEAD_GIB} GiB for the filesystem), "
        "deleted with the staging instance",
        f"staging instance: {plan.instance_type} from {plan.image_id} in {where}, "
        f"tagged {ROLE_TAG}={STAGING_ROLE}, SSH as {plan.ssh_user} on port {plan.ssh_port} "
        f"with {key}, its own group admitting only this master on that port",
        f"then: snapshot the volume, remove the staging instance, its group and volume, point "
        f"[slave] data_snapshots at the snapshot (CONFIG.bak first), keep {plan.keep} "
        "generation(s) of this command's snapshots",
    ]
    return lines


def _size(n: int) -> str:
    for unit, scale in (("GiB", GIB), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"
