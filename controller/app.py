"""Wiring: which actors run, in which order, against which cloud. No business logic here.

Start order is dependency order, so the runtime's reverse-order stop is the teardown
../shared/SPEC.md asks for: the load sampler stops first, RenderfarmWriter empties renderfarm.conf
and reloads, SpotPool cancels requests and terminates and waits, FirewallKeeper deletes the group,
Stats goes last so /status shows the teardown until the end.

A batch cluster (`run --cluster NAME`) runs the same SpotPool with the node profile. Its stop
order: QueueSampler stops polling; the node pool announces every node down (ClusterNodeSetup,
still running, takes them out of Grid Engine), cancels requests, terminates and waits;
ClusterNodeSetup finishes those deregistrations; FirewallKeeper deletes the nodes' group.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from typing import TYPE_CHECKING

import structlog

from controller import __version__
from controller.cloud.port import Cloud
from controller.config.reader import ConfigError, load_config
from controller.config.reload import reload_problems
from controller.config.schema import ClusterSection, Config
from controller.runtime import sdnotify
from controller.runtime.actor import Actor
from controller.runtime.bus import Bus
from controller.runtime.daemon import DaemonError, drop_privileges
from controller.runtime.logs import reopen_logfile
from controller.runtime.supervisor import Runtime

if TYPE_CHECKING:
    from controller.scheduler.side import SchedulerSide

log = structlog.get_logger("controller")


class StartupError(Exception):
    """A user-fixable reason the controller cannot start (one line, exit 2)."""


def have_aws_credentials() -> bool:
    """True when the standard AWS chain or the seed's EC2_* variables give credentials."""
    if os.environ.get("EC2_ACCESS_KEY") and os.environ.get("EC2_SECRET_KEY"):
        return True
    import botocore.session

    return botocore.session.get_session().get_credentials() is not None


async def open_cloud(config: Config, *, dry_run: bool) -> Cloud:
    """Real EC2 (or the configured emulator); a dry run with no credentials gets SimCloud."""
    if config.aws.endpoint_url or have_aws_credentials():
        from controller.cloud.ec2cloud import make_ec2_cloud

        cloud = make_ec2_cloud(config)
        await cloud.open()
        return cloud
    if dry_run:
        from controller.cloud.simcloud import SimCloud

        log.warning("cloud.simulated", reason="no AWS credentials: dry run on the simulated cloud")
        loop = asyncio.get_running_loop()
        return SimCloud.from_config(config, clock=loop.time, wall_offset=time.time() - loop.time())
    raise StartupError(
        "no AWS credentials found: use the AWS chain (environment, profile, SSO, instance role) "
        "or EC2_ACCESS_KEY/EC2_SECRET_KEY, or add --dry-run"
    )


async def fill_config_from_metadata(
    config: Config, *, cluster: str | None
) -> tuple[Config, dict[str, str]]:
    """The config with its blank region, image_id and subnet (of the render farm, or of
    `cluster`) filled from the master's instance metadata, logged once; StartupError when a
    blank region or image_id cannot be filled (not on EC2)."""
    from controller.cloud.master_defaults import (
        MasterDefaultsError,
        fill_from_metadata,
        taken_text,
    )

    try:
        config, taken = await fill_from_metadata(config, cluster=cluster)
    except MasterDefaultsError as exc:
        raise StartupError(str(exc)) from None
    if taken:
        log.info("config.from_instance_metadata", filled=taken_text(taken))
    return config, taken


def check_renderfarm_dir(config: Config) -> None:
    """The render farm writes renderfarm.conf atomically in its directory: refuse to start,
    before anything is made in EC2, when that directory is missing or not writable."""
    path = config.master.renderfarm_conf
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory) or not os.access(directory, os.W_OK | os.X_OK):
        raise StartupError(
            f"[master] renderfarm_conf = {path!r}: directory {directory} is missing or not "
            "writable by this user; install GBrowse there, or set renderfarm_conf to GBrowse's "
            "renderfarm.conf on this machine"
        )


async def master_address(
    config: Config, cloud: Cloud, *, dry_run: bool, subnet: str | None = None
) -> str:
    """The head's address the instances' group admits (`subnet`: where they launch, "" = the
    default VPC), logged once with where it came from and why."""
    from controller.cloud.master_address import MasterAddressError, discover_master_ip

    subnet = config.slave.subnet if subnet is None else subnet
    try:
        found = await discover_master_ip(config, slave_vpc=lambda: cloud.subnet_vpc(subnet))
    except MasterAddressError as exc:
        if not dry_run:
            raise StartupError(str(exc)) from exc
        log.warning("master.address_unknown", reason=str(exc), using="127.0.0.1 (dry run only)")
        return "127.0.0.1"
    log.info("master.address", address=found.ip, source=found.source, reason=found.reason)
    if found.warning:
        log.warning("master.vpcs_differ", problem=found.warning, subnet=subnet or "(default)")
    return found.ip


def build_actors(
    config: Config, bus: Bus, cloud: Cloud, master_ip: str, *, dry_run: bool
) -> list[Actor]:
    from actors.firewall_keeper import FirewallKeeper
    from actors.load_sampler import LoadSampler
    from actors.renderfarm_writer import RenderfarmWriter
    from actors.slave_health import SlaveHealth
    from actors.spot_pool import SpotPool
    from actors.stats import Stats
    from controller.policy.factory import make_policy

    actors: list[Actor] = [
        Stats(config=config, bus=bus, dry_run=dry_run),
        FirewallKeeper(config=config, bus=bus, cloud=cloud, master_ip=master_ip, dry_run=dry_run),
        SpotPool(
            config=config,
            bus=bus,
            cloud=cloud,
            policy=make_policy(config.scaling.policy, config),
            dry_run=dry_run,
        ),
        SlaveHealth(config=config, bus=bus),
        RenderfarmWriter(config=config, bus=bus, dry_run=dry_run),
        LoadSampler(config=config, bus=bus),
    ]
    if config.scaling.interruption_queue:
        from actors.interruption_watcher import InterruptionWatcher
        from controller.cloud.sqs import sqs_client_factory

        actors.append(
            InterruptionWatcher(
                config=config,
                bus=bus,
                sqs_client_factory=sqs_client_factory(config),
                dry_run=dry_run,
            )
        )
    return actors


def find_cluster(config: Config, name: str) -> ClusterSection:
    """The [cluster.NAME] section `run --cluster NAME` names, or a StartupError listing them."""
    for cluster in config.clusters:
        if cluster.name == name:
            return cluster
    known = ", ".join(c.name for c in config.clusters) or "none"
    raise StartupError(f"--cluster {name}: no [cluster.{name}] section (defined: {known})")


def head_public_key(cluster: ClusterSection) -> str:
    """The OpenSSH public key of `ssh_key_file`, which nodes get in their user data."""
    if not cluster.ssh_key_file:
        return ""
    import asyncssh

    try:
        key = asyncssh.read_private_key(cluster.ssh_key_file)
    except (OSError, asyncssh.KeyImportError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise StartupError(
            f"cluster.{cluster.name}.ssh_key_file: cannot use {cluster.ssh_key_file}: {reason} "
            "(an unencrypted private key is needed)"
        ) from None
    return key.export_public_key("openssh").decode().strip()


def state_dir() -> str:
    """Where files that outlive a run go: systemd's StateDirectory, else the working directory."""
    return os.environ.get("STATE_DIRECTORY", "").split(":")[0] or os.getcwd()


def cluster_side(config: Config, cluster: ClusterSection) -> SchedulerSide:
    """The scheduler the cluster's plugins name, or a StartupError (`check-config` reports the
    same line)."""
    from controller.config.checks import no_scheduler_plugin
    from controller.config.plugins import PluginError, cluster_plugins
    from controller.scheduler.side import scheduler_side

    try:
        side = scheduler_side(cluster_plugins(config, cluster))
    except PluginError as exc:
        raise StartupError(str(exc).replace("\n", "; ")) from None
    if side is None:
        reason = no_scheduler_plugin(cluster.load_source)
        raise StartupError(f"[cluster.{cluster.name}] plugins: {reason}")
    return side


def build_cluster_actors(
    config: Config,
    cluster: ClusterSection,
    bus: Bus,
    cloud: Cloud,
    master_ip: str,
    *,
    dry_run: bool,
) -> list[Actor]:
    """The batch cluster's actors, on the scheduler its plugins name (Grid Engine or Slurm). A
    dry run leaves out ClusterNodeSetup: it would log in to nodes and change the scheduler."""
    from actors.cluster_node_setup import ClusterNodeSetup
    from actors.firewall_keeper import FirewallKeeper
    from actors.queue_sampler import QueueSampler
    from actors.spot_pool import SpotPool
    from actors.stats import Stats
    from controller.policy.pool_profile import NodeProfile
    from controller.policy.queue_policy import QueuePolicy
    from controller.scheduler.source import queue_source

    side = cluster_side(config, cluster)
    profile = NodeProfile(config, cluster, head_public_key=head_public_key(cluster))
    actors: list[Actor] = [
        Stats(config=config, bus=bus, dry_run=dry_run, cluster=cluster.name),
        FirewallKeeper(
            config=config,
            bus=bus,
            cloud=cloud,
            master_ip=master_ip,
            dry_run=dry_run,
            cluster=cluster,
        ),
    ]
    if not dry_run:
        actors.append(
            ClusterNodeSetup(
                config=config,
                cluster=cluster,
                bus=bus,
                known_hosts_path=os.path.join(state_dir(), "cluster_known_hosts"),
                side=side,
                ssh_user=profile.login_user,
                head_banner=True,  # the controller runs on the head: its motd says MASTER
            )
        )
    actors += [
        SpotPool(
            config=config,
            bus=bus,
            cloud=cloud,
            policy=QueuePolicy.for_cluster(config, cluster),
            profile=profile,
            dry_run=dry_run,
            confirm_release=not dry_run,  # ClusterNodeSetup answers each scale-in
        ),
        QueueSampler(config=config, bus=bus, source=queue_source(side)),
    ]
    return actors


async def run_controller(
    config: Config, *, dry_run: bool, user: str | None = None, cluster: str | None = None
) -> int:
    """Run until SIGTERM/SIGINT; 0 after a clean teardown, 1 after repeated actor crashes.
    With `cluster`, run that batch cluster's nodes instead of the render farm."""
    _log_notes(config)
    # What this machine or the config lacks is refused before the metadata or EC2 is asked.
    if cluster is not None:
        cluster_side(config, find_cluster(config, cluster))
    elif not dry_run:
        check_renderfarm_dir(config)
    config, taken = await fill_config_from_metadata(config, cluster=cluster)
    section = find_cluster(config, cluster) if cluster is not None else None
    bus = Bus()
    cloud = await open_cloud(config, dry_run=dry_run)
    try:
        if section is None:
            master_ip = await master_address(config, cloud, dry_run=dry_run)
            actors = build_actors(config, bus, cloud, master_ip, dry_run=dry_run)
        else:
            master_ip = await master_address(config, cloud, dry_run=dry_run, subnet=section.subnet)
            actors = build_cluster_actors(config, section, bus, cloud, master_ip, dry_run=dry_run)
        # Stats sends READY=1 and STATUS=; the runtime's heartbeat feeds the watchdog.
        runtime = Runtime(
            actors,
            bus=bus,
            on_heartbeat=sdnotify.watchdog,
            on_ready=(lambda: _drop_privileges(user, runtime)) if user else None,
        )
        stats = actors[0]
        if hasattr(stats, "bind_runtime"):
            stats.bind_runtime(runtime)
        runtime.install_signal_handlers()
        _install_reload_handler(config, actors, taken)
        log.info(
            "controller.starting",
            version=__version__,
            fleet=config.controller.fleet,
            cluster=cluster,
            dry_run=dry_run,
        )
        code = await runtime.run_until_stopped()
        log.info("controller.stopped", exit_code=code)
        if runtime.abandoned:
            # asyncio.run() would wait forever for a task that survived cancellation.
            log.error("controller.abandoned_tasks", tasks=sorted(runtime.abandoned))
            await cloud.close()
            os._exit(code or 1)
        return code
    finally:
        await cloud.close()


def _log_notes(config: Config) -> None:
    """What the config should change (a key in its old place): a warning each, at every load."""
    for line in config.notes:
        log.warning("config.note", note=line)


def _install_reload_handler(config: Config, actors: list[Actor], taken: dict[str, str]) -> None:
    """SIGHUP re-reads the config file; only a valid, restart-free change is applied. The keys
    filled from the instance metadata at start (`taken`) are filled the same way again."""
    from controller.cloud.master_defaults import fill_blanks

    current = [config]

    def reload() -> None:
        sdnotify.reloading()
        try:
            reopen_logfile()  # logrotate moved it away: write to a new one
        except OSError as exc:
            log.error("logfile.reopen_failed", error=exc.strerror, hint="still writing the old one")
        try:
            try:
                new = fill_blanks(load_config(current[0].path), taken)
            except ConfigError as exc:
                for line in exc.errors:
                    log.error("config.reload_rejected", problem=line)
                return
            problems = reload_problems(current[0], new)
            for line in problems:
                log.error("config.reload_rejected", problem=line)
            if problems:
                return
            for actor in actors:
                reconfigure = getattr(actor, "reconfigure", None)
                if reconfigure is not None:
                    reconfigure(new)
            current[0] = new
            log.info("config.reloaded", path=new.path)
            _log_notes(new)
        finally:
            sdnotify.notify("READY=1")

    asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, reload)


def _drop_privileges(user: str, runtime: Runtime) -> None:
    """--user: leave root once every actor is set up (the stats port is bound by then)."""
    try:
        drop_privileges(user)
        log.info("privileges.dropped", user=user)
    except DaemonError as exc:
        log.error("privileges.drop_failed", user=user, reason=str(exc))
        runtime.request_stop(reason=f"--user {user}: {exc}", exit_code=2)
