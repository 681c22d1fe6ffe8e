"""`controller sync-data -c CONFIG [--path DIR ...] [--mysql DIR] [--postgres DIR] [--image-id AMI]
[--keep N] [--dry-run] [--yes]`: the seed's gbrowse_sync_aws_slave.pl.

The master's data goes to a new EBS snapshot through a staging instance (controller.cloud.sync_run),
then the config's [slave] data_snapshots (and image_id, with --image-id) name it: CONFIG.bak is
written first, then CONFIG is replaced atomically with its comments and layout kept. The snapshot
is tagged `controller:role=data` only once the config names it, and this command's older data
snapshots beyond `--keep` generations are deleted. A running controller takes the new snapshot on
SIGHUP; the slaves it launches from then on get it.

Nothing is created before the input is checked: every directory must exist and be readable (the
sizes are measured from it), the image known, the key readable. `--dry-run` prints the plan and
stops; on a terminal the command asks before it starts, unless `--yes`. SIGTERM or Ctrl-C stop
the copy and remove what the run made; once the snapshot is complete, the config update is
finished first. One run at a time per fleet (controller.runtime.fleet_lock, its own name).

Exit 0 done, 1 failed (with nothing left behind, or a line naming what is), 2 bad input;
130 after Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import os
import shutil
import signal
import stat
import sys
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

import asyncssh

from controller.cloud.master_defaults import MasterDefaultsError, fill_from_metadata, taken_text
from controller.cloud.sync_plan import (
    BLOCK,
    DATA_ROLE,
    DEFAULT_DATA_DIR,
    STAGING_ROLE,
    PlanError,
    Source,
    SyncPlan,
    check_sources,
    edit_config,
    on_disk,
    plan_lines,
    snapshots_to_delete,
    updated_snapshots,
    volume_size_gib,
)
from controller.commands.exit_codes import EXIT_BAD_INPUT, EXIT_OK
from controller.config.reader import ConfigError, load_config, parse_config
from controller.config.schema import Config
from controller.runtime.fleet_lock import FleetBusy, FleetLock

if TYPE_CHECKING:
    from controller.cloud.staging import StagingEc2

EXIT_FAILED = 1
EXIT_INTERRUPTED = 130


def sync_data_command(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
        if args.image_id:  # what the staging instance boots: no blank image to fill then
            config = replace(config, slave=replace(config.slave, image_id=args.image_id))
        # The staging instance launches as a slave would: blanks are the master's own.
        config, taken = asyncio.run(fill_from_metadata(config))
    except ConfigError as exc:
        for line in exc.errors or (str(exc),):
            print(line, file=sys.stderr)
        return EXIT_BAD_INPUT
    except MasterDefaultsError as exc:
        hint = "" if config.slave.image_id else ", or give --image-id"
        print(f"{args.config}: {exc}{hint}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if taken:
        print(f"from the master's instance metadata: {taken_text(taken)}")
    try:
        plan = make_plan(config, args)
    except PlanError as exc:
        print(f"sync-data: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    for line in plan_lines(plan):
        print(line)
    if args.dry_run:
        print("dry run: nothing was created")
        return EXIT_OK
    if not args.yes and sys.stdin.isatty() and sys.stdout.isatty() and not _confirm():
        print("nothing done")
        return EXIT_OK
    # One run per fleet: a run's first step removes the fleet's staging leftovers, which would
    # be a concurrent run's staging instance. '+' never occurs in a fleet name: no clash.
    lock = FleetLock(f"{plan.fleet}+sync-data")
    try:
        lock.acquire()
    except FleetBusy as exc:
        print(f"sync-data: fleet {plan.fleet} is being synced already ({exc})", file=sys.stderr)
        return EXIT_FAILED
    except OSError as exc:
        print(f"sync-data: cannot take the lock {lock.path}: {exc.strerror}", file=sys.stderr)
        return EXIT_FAILED
    try:
        return asyncio.run(_sync(config, plan, args.config, args.image_id))
    finally:
        lock.release()


def make_plan(config: Config, args: argparse.Namespace) -> SyncPlan:
    """Check the input and measure the data; PlanError (exit 2) for anything unusable."""
    if args.keep < 1:
        raise PlanError(f"--keep {args.keep}: keep at least 1 generation (the new snapshot)")
    image_id = args.image_id or config.slave.image_id
    if not image_id.startswith("ami-"):
        shown = f" ({image_id!r})" if image_id else ""
        raise PlanError(
            f"no image for the staging instance{shown}: set [slave] image_id or give --image-id"
        )
    wanted = [("data", p) for p in (args.path or [DEFAULT_DATA_DIR])]
    wanted += [(kind, p) for kind, p in (("mysql", args.mysql), ("postgres", args.postgres)) if p]
    sources = tuple(measure(kind, path) for kind, path in check_sources(wanted))
    key_file = config.sync.ssh_key_file
    if key_file:
        try:
            asyncssh.read_private_key(key_file)
        except (OSError, asyncssh.KeyImportError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise PlanError(
                f"[sync] ssh_key_file {key_file}: {reason} (an unencrypted private key the "
                "image's login user accepts is needed)"
            ) from None
    return SyncPlan(
        fleet=config.controller.fleet,
        region=config.slave.region,
        image_id=image_id,
        instance_type=config.sync.staging_instance_type,
        subnet=config.slave.subnet,
        zone=config.slave.availability_zone,
        sources=sources,
        size_gib=volume_size_gib(sum(s.bytes_on_disk for s in sources)),
        keep=args.keep,
        ssh_user=config.sync.ssh_user,
        ssh_port=config.sync.ssh_port,
        ssh_key_file=key_file,
        key_pair_name=config.slave.ssh_key if key_file else "",
    )


def measure(kind: str, path: str) -> Source:
    """The directory's size on disk (hard links once); PlanError when it is missing or any part
    of it cannot be read (rsync would fail on it later)."""
    if not os.path.isdir(path):
        hint = " (GBrowse's databases directory: pass --path DIR)" if kind == "data" else ""
        raise PlanError(f"{path}: no such directory{hint}")
    unreadable: list[OSError] = []
    total = files = 0
    seen: set[tuple[int, int]] = set()
    for top, _dirs, names in os.walk(path, onerror=unreadable.append):
        total += BLOCK  # the directory itself
        for name in names:
            full = os.path.join(top, name)
            try:
                info = os.lstat(full)
            except OSError as exc:
                unreadable.append(exc)
                continue
            if stat.S_ISLNK(info.st_mode):
                continue  # a short symlink lives in its inode
            if info.st_nlink > 1:
                if (info.st_dev, info.st_ino) in seen:
                    continue  # rsync -H copies a hard link once
                seen.add((info.st_dev, info.st_ino))
            total += on_disk(info.st_size)
            files += 1
            if stat.S_ISREG(info.st_mode) and not os.access(full, os.R_OK):
                unreadable.append(PermissionError(errno.EACCES, os.strerror(errno.EACCES), full))
    if unreadable:
        first = unreadable[0]
        raise PlanError(
            f"cannot read {first.filename}: {first.strerror}; run sync-data as a user who can "
            f"read all of {path} (root, as the seed's script ran)"
        )
    return Source(path=path, kind=kind, bytes_on_disk=total, files=files)


def _confirm() -> bool:
    try:
        answer = input("create the staging instance and the snapshot? [y/N] ")
    except EOFError:
        return False
    return answer.strip().lower() in ("y", "yes")


def say(line: str) -> None:
    print(line, flush=True)


async def _sync(config: Config, plan: SyncPlan, config_path: str, image_id: str | None) -> int:
    from controller.cloud.ec2cloud import make_ec2_cloud
    from controller.cloud.master_address import MasterAddressError, discover_master_ip
    from controller.cloud.staging import StagingEc2, StagingError
    from controller.cloud.sync_run import sync_to_snapshot

    async with make_ec2_cloud(config) as cloud:
        try:
            master = await discover_master_ip(
                config, slave_vpc=lambda: cloud.subnet_vpc(config.slave.subnet)
            )
        except MasterAddressError as exc:
            print(f"sync-data: {exc}", file=sys.stderr)
            return EXIT_BAD_INPUT
        if master.warning:
            say(f"warning: {master.warning}")
        ec2 = StagingEc2(cloud, plan.fleet)
        finishing = False

        async def work() -> None:
            nonlocal finishing
            named = config.slave.data_snapshots
            ours = await _named_snapshots(ec2, named)
            snapshot_id = await sync_to_snapshot(
                cloud, plan, master_ip=master.ip, keep_snapshots=named, progress=say
            )
            finishing = True  # the snapshot exists: a signal now waits for the config update
            new = updated_snapshots(named, ours, snapshot_id)
            _write_config(config_path, new, image_id)
            await ec2.mark_data(snapshot_id)
            say(f"data stored in snapshot(s) {snapshot_id}")
            say(f"updated conf file, previous version in {config_path}.bak")
            await _retire(ec2, plan.keep, new)
            say("a running controller takes the new snapshot on SIGHUP (systemctl reload)")

        task = asyncio.create_task(work(), name="sync-data")
        stopped = _on_signals(task, lambda: finishing)
        try:
            await task
        except asyncio.CancelledError:
            say("stopped: what the run made is removed")
            return EXIT_INTERRUPTED if stopped[0] == signal.SIGINT else EXIT_FAILED
        except (StagingError, PlanError, OSError) as exc:
            print(f"sync-data: {exc}", file=sys.stderr)
            return EXIT_FAILED
        finally:
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)
    return EXIT_OK  # a signal that came once the snapshot was complete waited for the end


def _on_signals(task: asyncio.Task[None], finishing: Callable[[], bool]) -> list[int]:
    """SIGINT and SIGTERM cancel the run once (its `finally` removes what it made); later
    signals only say so. Returns the signals received, in order."""
    received: list[int] = []

    def handle(signum: int) -> None:
        received.append(signum)
        if finishing():
            say("signal received: finishing the config update first")
        elif len(received) == 1:
            say("signal received: stopping, and removing what this run made")
            task.cancel()
        else:
            say("still removing what this run made; `controller teardown` removes the rest")

    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, handle, signum)
    return received


async def _named_snapshots(ec2: StagingEc2, named: Sequence[str]) -> set[str]:
    """Which of the config's snapshots this command made for the fleet; one a killed run left
    tagged staging although the config names it becomes a data snapshot now."""
    if not named:
        return set()
    ours = set()
    for snapshot in await ec2.snapshots(ids=named):
        if snapshot.fleet != ec2.fleet or snapshot.role not in (DATA_ROLE, STAGING_ROLE):
            continue
        ours.add(snapshot.snapshot_id)
        if snapshot.role == STAGING_ROLE:
            await ec2.mark_data(snapshot.snapshot_id)
    return ours


def _write_config(path: str, snapshots: Sequence[str], image_id: str | None) -> None:
    """CONFIG.bak first (a copy, mode kept), then CONFIG replaced atomically; the new text is
    checked to be a valid config before either is written."""
    from controller.gbrowse.renderfarm import write_atomic

    with open(path, encoding="utf-8") as f:
        text = f.read()
    new = edit_config(text, snapshots, image_id)
    try:
        parse_config(tomllib.loads(new), path)
    except (ConfigError, tomllib.TOMLDecodeError) as exc:
        raise PlanError(f"{path}: the updated config would not be valid: {exc}") from None
    shutil.copy2(path, f"{path}.bak")
    write_atomic(path, new)


async def _retire(ec2: StagingEc2, keep: int, named: Sequence[str]) -> None:
    """Delete this command's data snapshots beyond `keep` generations; a failure only warns."""
    from controller.cloud.staging import StagingError

    try:
        old = snapshots_to_delete(await ec2.snapshots(role=DATA_ROLE), keep, named)
        for snapshot_id in old:
            await ec2.delete_snapshot(snapshot_id)
            say(f"deleted old data snapshot {snapshot_id} (--keep {keep})")
    except StagingError as exc:
        say(f"warning: old data snapshots not deleted: {exc}")
