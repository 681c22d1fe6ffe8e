"""`controller teardown -c CONFIG [--cluster NAME] [--dry-run] [--yes] [--force]`: remove
everything tagged as this fleet's, in ../shared/SPEC.md's order, without ever stranding a site.

Before anything is touched: the fleet's lock (controller.runtime.fleet_lock) is taken, shared, so
a teardown refuses while a controller of the fleet runs (it would relaunch what is terminated;
`--force` goes on anyway) and no controller starts while it works. Then the fleet is read
(controller.commands.teardown_plan): if EC2 cannot be read, the slaves cannot be ended, so
nothing else happens either: one line, exit 1. `--dry-run` prints that plan and stops; on a
terminal the plan is shown and a `[y/N]` asked first, unless `--yes` (not on a terminal, as from
a script or systemd, it goes on).

Then, for a fleet whose controller is gone (or was never stopped cleanly): first renderfarm.conf
goes back to its empty form (and the master reloads), so GBrowse stops sending work to slaves
that are about to vanish; then controller.cloud.teardown cancels the spot requests, terminates the
instances, waits for them and deletes the volumes that outlived them and the fleet's security
groups; last, what `sync-data` left (controller.cloud.staging_leftovers). Each step prints one line.

With `--cluster NAME` (a batch cluster's fleet, which has no renderfarm.conf) the first step is
the scheduler's instead: each of the fleet's nodes is taken out of it on the head, as
`run --cluster` does at SIGTERM: with the `sge` plugin's calls from Grid Engine, or (a `slurm`
plugin) set DOWN and deleted from Slurm, a node Slurm no longer has passing. A scheduler that
cannot be reached is reported and the nodes are terminated all the same: a stale exec host is
cheaper than a node billed forever.

Exit 0 when nothing of the fleet is left (and every node left its scheduler; a dry run: when the
fleet could be read), 1 otherwise (refused, unreadable, answered no, something left), 2 for a
config that cannot be used.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from controller.cloud.master_defaults import MasterDefaultsError, fill_from_metadata, taken_text
from controller.cloud.port import Cloud, InstanceState
from controller.cloud.teardown import configured_volume_ids
from controller.commands.exit_codes import EXIT_BAD_INPUT, EXIT_LEFT, EXIT_OK
from controller.commands.teardown_plan import TeardownPlan, plan_lines, read_failure, read_plan
from controller.config.plugins import PluginError, cluster_plugins
from controller.config.reader import ConfigError, load_config
from controller.config.schema import Config
from controller.gbrowse.renderfarm import render_renderfarm, write_atomic
from controller.messages import Role
from controller.runtime.fleet_lock import FleetBusy, FleetLock
from controller.scheduler.side import SchedulerSide, scheduler_side

RELOAD_TIMEOUT = 60.0
SCHEDULER_TIMEOUT = 20.0  # per scheduler call: an unreachable head must not stall the teardown


class _BadInput(Exception):
    """A config the command cannot use; its lines go to stderr, exit 2."""


class _Refused(Exception):
    """The teardown may not start (a controller of the fleet runs); one line to stderr, exit 1."""


def teardown_command(
    config_path: str,
    cluster: str | None = None,
    *,
    dry_run: bool = False,
    yes: bool = False,
    force: bool = False,
) -> int:
    try:
        config = load_config(config_path)
        side = _cluster_side(config, cluster) if cluster is not None else None
        # A blank region is the master's: the fleet is where the controller launched it.
        config, taken = asyncio.run(fill_from_metadata(config, launches=False))
    except ConfigError as exc:
        for line in exc.errors or (str(exc),):
            print(line, file=sys.stderr)
        return EXIT_BAD_INPUT
    except _BadInput as exc:
        print(exc, file=sys.stderr)
        return EXIT_BAD_INPUT
    except MasterDefaultsError as exc:
        print(f"{config_path}: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT

    def say(line: str) -> None:
        print(line, flush=True)

    if taken:
        say(f"from the master's instance metadata: {taken_text(taken)}")
    fleet = config.controller.fleet
    try:
        lock = None if dry_run else _hold_fleet(fleet, force=force, say=say)
    except _Refused as exc:
        print(exc, file=sys.stderr)
        return EXIT_LEFT
    try:
        # Nothing is touched before the fleet has been read: a teardown that cannot end the
        # slaves must not take them out of GBrowse either.
        plan = asyncio.run(_read_plan(config))
        if plan.error is not None:
            print(read_failure(config, plan.error), file=sys.stderr)
            return EXIT_LEFT
        lines = plan_lines(
            plan,
            renderfarm=renderfarm_step(config) if cluster is None else None,
            scheduler=scheduler_steps(plan, cluster, side) if cluster is not None else (),
        )
        if dry_run:
            for line in lines + _running_note(fleet):
                say(line)
            say("dry run: nothing was changed")
            return EXIT_OK
        if not yes and sys.stdin.isatty() and sys.stdout.isatty():
            for line in lines:
                say(line)
            if not _confirm(f"Tear down fleet {fleet}? [y/N] "):
                say("teardown cancelled: nothing was changed")
                return EXIT_LEFT
        return _tear_down(config, cluster, side, say)
    finally:
        if lock is not None:
            lock.release()


def _tear_down(
    config: Config, cluster: str | None, side: SchedulerSide | None, say: Callable[[str], None]
) -> int:
    # A cluster's fleet has no slaves: its first step is the scheduler's, not renderfarm.conf's.
    renderfarm_ok = clear_renderfarm(config, say) if cluster is None else True
    if cluster is not None and side is None:
        say(_no_scheduler(cluster))
    report, scheduler_ok = asyncio.run(_teardown(config, say, side))
    if report.clean and renderfarm_ok and scheduler_ok:
        return EXIT_OK
    return EXIT_LEFT


def _hold_fleet(fleet: str, *, force: bool, say: Callable[[str], None]) -> FleetLock | None:
    """The fleet's lock, held shared while the teardown works, so no controller of the fleet
    runs meanwhile; _Refused while one does (or when that cannot be told), unless `force`:
    then None, after saying so."""
    lock = FleetLock(fleet, shared=True)
    try:
        lock.acquire()
        return lock
    except FleetBusy as busy:
        problem = f"a controller of fleet {fleet} is running ({busy.holder})"
        todo = (
            "stop it first (at SIGTERM it tears the fleet down itself when on_exit = "
            '"teardown"), or add --force'
        )
    except OSError as exc:
        problem = (
            f"cannot tell whether a controller of fleet {fleet} runs: "
            f"lock {lock.path}: {exc.strerror or exc}"
        )
        todo = "run as the controller's user or root, or add --force"
    if not force:
        raise _Refused(f"teardown: {problem}; {todo}")
    say(f"teardown: {problem}; going on (--force)")
    return None


def _running_note(fleet: str) -> list[str]:
    """For --dry-run: a line when a controller of the fleet runs (the teardown would refuse)."""
    try:
        with FleetLock(fleet, shared=True):
            return []
    except FleetBusy as busy:
        return [
            f"note: a controller of fleet {fleet} is running ({busy.holder}): the "
            "teardown would refuse without --force"
        ]
    except OSError:
        return []


def _confirm(question: str) -> bool:
    print(question, end="", flush=True)
    return sys.stdin.readline().strip().lower() in ("y", "yes")


async def _read_plan(config: Config) -> TeardownPlan:
    from controller.cloud.ec2cloud import make_ec2_cloud

    async with make_ec2_cloud(config) as cloud:
        return await read_plan(
            cloud,
            config.controller.fleet,
            _kept_groups(config),
            configured_volume_ids(config),
        )


def _kept_groups(config: Config) -> tuple[str, ...]:
    return (config.slave.security_group,) if config.slave.security_group else ()


def renderfarm_step(config: Config) -> str:
    """What the teardown will do to renderfarm.conf, as clear_renderfarm decides it."""
    path = config.master.renderfarm_conf
    if not path:
        return "renderfarm.conf: none configured ([master] renderfarm_conf): nothing to rewrite"
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.exists(path) and not os.access(directory, os.W_OK):
        return f"renderfarm.conf: {path} does not exist and {directory} is not writable: skipped"
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        text = None
    except OSError as exc:
        return f"renderfarm.conf: {path} cannot be read ({exc.strerror}): rewriting it may fail"
    if text == render_renderfarm(()):
        return f"renderfarm.conf: {path} already lists no slaves: left as is"
    listed = 0 if text is None else sum("://" in line for line in text.splitlines())
    command = config.master.reload_command
    reload = f"reload with `{shlex.join(command)}`" if command else "no reload_command to run"
    return f"renderfarm.conf: rewrite {path} with no slaves (it lists {listed}), then {reload}"


def scheduler_steps(plan: TeardownPlan, cluster: str, side: SchedulerSide | None) -> list[str]:
    """One line per node of the fleet that leaves its scheduler first (--cluster)."""
    from controller.gridengine.sge import ec2_hostname

    if side is None:
        return [_no_scheduler(cluster)]
    tag, scheduler = side.name, side.scheduler
    if not plan.nodes:
        return [f"{tag}: fleet {plan.fleet} has no nodes to take out of {scheduler}"]
    lines = []
    for node in plan.nodes:
        try:
            name = ec2_hostname(node.private_ip or "")
        except ValueError:
            lines.append(f"{tag}: {node.instance_id} has no EC2 host name: left in {scheduler}")
            continue
        lines.append(f"{tag}: take {name} ({node.instance_id}) out of {scheduler} on the head")
    return lines


def _no_scheduler(cluster: str) -> str:
    return (
        f'cluster: [cluster.{cluster}] has no plugin of kind "sge" or "slurm": no scheduler'
        " to leave"
    )


def _cluster_side(config: Config, name: str) -> SchedulerSide | None:
    """The scheduler of [cluster.NAME] (None: it has none); _BadInput naming the problem."""
    cluster = next((c for c in config.clusters if c.name == name), None)
    if cluster is None:
        known = ", ".join(c.name for c in config.clusters) or "none"
        raise _BadInput(f"--cluster {name}: no [cluster.{name}] section (defined: {known})")
    try:
        return scheduler_side(cluster_plugins(config, cluster), timeout=SCHEDULER_TIMEOUT)
    except PluginError as exc:
        where = config.path or "config"
        raise _BadInput("\n".join(f"{where}: {line}" for line in str(exc).splitlines())) from None


async def _teardown(config: Config, say: Callable[[str], None], side: SchedulerSide | None):
    from controller.cloud.ec2cloud import make_ec2_cloud
    from controller.cloud.staging_leftovers import remove_staging_leftovers
    from controller.cloud.teardown import teardown_fleet

    async with make_ec2_cloud(config) as cloud:
        scheduler_ok = True
        if side is not None:
            scheduler_ok = await deregister_fleet_nodes(cloud, config.controller.fleet, side, say)
        report = await teardown_fleet(
            cloud,
            config.controller.fleet,
            keep_group_ids=_kept_groups(config),
            keep_volume_ids=configured_volume_ids(config),
            progress=say,
        )
        # what a `sync-data` killed with -9 left: its key pair, unfinished snapshots, a volume
        staging_ok = await remove_staging_leftovers(
            cloud, config.controller.fleet, keep_snapshots=config.slave.data_snapshots, progress=say
        )
        return report, scheduler_ok and staging_ok


async def deregister_fleet_nodes(
    cloud: Cloud, fleet: str, side: SchedulerSide, say: Callable[[str], None]
) -> bool:
    """Take every node of the fleet (found by its tags) out of the head's scheduler, one line
    each; True when each one is out (or never was in)."""
    from controller.gridengine.sge import ec2_hostname

    tag, scheduler = side.name, side.scheduler
    view = await cloud.describe_fleet(fleet)
    if view.error is not None:
        say(
            f"{tag}: cannot read fleet {fleet} to find its nodes: {view.error.message}; "
            f"none taken out of {scheduler}"
        )
        return False
    nodes = [
        i
        for i in view.instances
        if i.role is Role.NODE and i.state is not InstanceState.TERMINATED and i.private_ip
    ]
    if not nodes:
        say(f"{tag}: fleet {fleet} has no nodes to take out of {scheduler}")
        return True
    named = []
    for inst in nodes:
        try:
            named.append((inst.instance_id, ec2_hostname(inst.private_ip or "")))
        except ValueError:
            say(f"{tag}: {inst.instance_id} has no EC2 host name ({inst.private_ip}): skipped")
    try:
        await side.answers()
    except side.errors as exc:
        hosts = ", ".join(host for _, host in named)
        later = (
            "scontrol delete nodename=HOST" if tag == "slurm" else "qconf -de HOST, qconf -dh HOST"
        )
        say(
            f"{tag}: cannot reach {scheduler} on the head: {exc}; terminating anyway, and "
            f"{hosts} may stay registered: remove them later ({later})"
        )
        return False
    all_out = True
    for instance_id, hostname in named:
        failures = await side.deregister(hostname, asyncio.sleep)
        if failures:
            all_out = False
            say(f"{tag}: {hostname} ({instance_id}) not fully out of {scheduler}: {failures[0]}")
        else:
            say(f"{tag}: {hostname} ({instance_id}) taken out of {scheduler}")
    return all_out and len(named) == len(nodes)


def clear_renderfarm(config: Config, say: Callable[[str], None]) -> bool:
    """Rewrite renderfarm.conf with no slaves and reload the master if that changed it.

    Skipped (True) when there is no file and its directory cannot hold one (this host is not
    the master). False when the file could not be written or the reload failed.
    """
    path = config.master.renderfarm_conf
    if not path:
        return True
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.exists(path) and not os.access(directory, os.W_OK):
        say(f"renderfarm.conf: {path} does not exist and {directory} is not writable: skipped")
        return True
    try:
        changed = write_atomic(path, render_renderfarm(()))
    except OSError as exc:
        say(
            f"renderfarm.conf: cannot rewrite {path}: {exc.strerror or exc}; "
            "run as a user who may write it ([master] renderfarm_conf)"
        )
        return False
    if not changed:
        say(f"renderfarm.conf: {path} already lists no slaves")
        return True
    say(f"renderfarm.conf: {path} now lists no slaves (renderfarm = 0)")
    return _reload(config.master.reload_command, say)


def _reload(command: tuple[str, ...], say: Callable[[str], None]) -> bool:
    if not command:
        return True
    shown = shlex.join(command)
    try:
        done = subprocess.run(
            list(command),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=RELOAD_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        say(f"reload: `{shown}` failed: {exc}; fix [master] reload_command or reload by hand")
        return False
    if done.returncode != 0:
        output = (done.stdout + done.stderr).decode(errors="replace").strip()[-300:]
        say(f"reload: `{shown}` exited {done.returncode}: {output}; reload the master by hand")
        return False
    say(f"reload: `{shown}` done")
    return True
