"""ClusterNodeSetup: turns a booted instance into a Grid Engine or Slurm node over SSH, and back.

The scheduler's part is a "side" (controller.gridengine.sge_side for an sge plugin,
controller.slurm.slurm_side for a slurm plugin; none without either): what the head does at
start, for a node joining, and for a node leaving. At start, before any node exists, the head is
made ready: for Grid Engine the `mem_requested` consumable exists, so Segway jobs asking for it
are accepted and wait as demand, and the head has its memory as that consumable
(head_is_exec_host) or no slots in the queue; for Slurm sinfo must answer. If the scheduler does
not answer, this is tried again with backoff, and before every node's registration. With
`head_banner` (the daemon), the head gets its motd banner (MASTER).

For each InstanceUp with role NODE, in its own task:

1. ssh: connect as `ssh_user` (root, as StarCluster set nodes up; `cluster_user` is whom jobs
   run as) to `cluster.ssh_port` with the key in `cluster.ssh_key_file`, waiting while the node
   boots; host keys are pinned per instance in `known_hosts_path`
   (controller.gridengine.node_ssh).
2. volume:NAME for each of the cluster's volumes (controller.gridengine.node_volumes).
3. plugin:NAME for each of its plugins, in order (controller.gridengine.node_plugins). The sge
   plugin reads the node's memory, registers the node on the head through the local Grid Engine
   clients (the controller runs on the head), then starts the node's execd. The slurm plugin
   starts the node's slurmd (a dynamic node under the EC2 name, configless from the head),
   and the node is ready once sinfo lists it.
4. NodeReady(hostname=ip-a-b-c-d), or NodeSetupFailed(step, reason) at the first failing step.

Setups run concurrently, at most `max_concurrent` past the SSH wait at a time; head-side Grid
Engine changes are serialised. A node that was set up is not set up again for a repeated
InstanceUp. On InstanceDown the node's setup is cancelled if it runs, and it is taken out of
the scheduler: Grid Engine's queue instance disabled, removed from the hostlist, exec/submit/admin
host deleted, or Slurm's node set DOWN and deleted; each step tolerates the host being gone
already. A scale-in (the policy chose the node on a queue sample that may be older than the
scheduler's last dispatch) first disables the node's queue instance (Slurm: drains the node) and
looks again: a node found running a job is kept (NodeKept, taking jobs again), an empty one is
deregistered and released (NodeReleased), and only then does the node pool terminate it. Its
host key pin goes once it left the scheduler. A node announced
down twice (drained, then gone) is deregistered once, unless the first attempt failed. Nothing
here crashes the actor: a failure is the node's, reported and logged.

After a restart (`kill -9` included) the node pool adopts the running nodes and each is set up
again: every step is idempotent, runs under a lock on the node (so it waits for what the killed
controller left running there), and `commands` run once per instance and boot (markers in
`node_state_dir/INSTANCE` on the node). At the pool's first view of the fleet, the hosts of
pinned instances that are gone leave the scheduler.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Coroutine, Sequence
from typing import Any

import asyncssh

from controller.config.plugins import Plugin, PluginError, cluster_plugins
from controller.config.schema import ClusterSection, Config, VolumeSection
from controller.gridengine.head_motd import write_head_banners
from controller.gridengine.host_keys import HostKeyStore, host_pattern, pattern_address
from controller.gridengine.node_plugins import (
    NodeInfo,
    RemoteCommand,
    locked,
    memory_command,
    remote_commands,
)
from controller.gridengine.node_ssh import NodeSsh, StepFailed
from controller.gridengine.node_volumes import volume_commands
from controller.gridengine.sge import ec2_hostname
from controller.gridengine.sge_client import SgeClient
from controller.gridengine.sge_side import SgeSide
from controller.messages import (
    FleetObserved,
    InstanceDown,
    InstanceId,
    InstanceUp,
    LostReason,
    NodeKept,
    NodeReady,
    NodeReleased,
    NodeSetupFailed,
    Role,
)
from controller.runtime.actor import Actor
from controller.runtime.backoff import backoff_delay
from controller.runtime.bus import EOI, Bus
from controller.scheduler.side import Gone, Released, SchedulerSide, scheduler_side
from controller.slurm.slurm_client import SlurmClient

HEAD_RETRY_DELAYS = (1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0)
NODE_STATE_DIR = "/run/controller-node"  # tmpfs: a rebooted node is set up in full again


class ClusterNodeSetup(Actor):
    # Deregistering a cluster's nodes at teardown is a few qconf calls per node.
    grace_seconds = 120.0

    def __init__(
        self,
        *,
        config: Config,
        cluster: ClusterSection,
        bus: Bus,
        known_hosts_path: str | os.PathLike[str],
        sge: SgeClient | None = None,
        slurm: SlurmClient | None = None,
        side: SchedulerSide | None = None,  # else from the plugins, with `sge` or `slurm`
        ssh_user: str = "root",
        head_host: str = "",
        max_concurrent: int = 8,
        ssh_wait_timeout: float = 600.0,
        ssh_retry_delays: Sequence[float] = (1, 2, 4, 8, 15),
        connect_timeout: float = 15.0,
        command_timeout: float = 600.0,
        device_wait: int = 60,
        node_state_dir: str = NODE_STATE_DIR,
        head_banner: bool = False,  # write the motd plugins' MASTER banner here (on the head)
    ) -> None:
        super().__init__(name="cluster_node_setup", bus=bus)
        self.config = config
        self.cluster = cluster
        self.host_keys = HostKeyStore(known_hosts_path)
        self.sge = sge
        self.slurm = slurm
        self.side = side
        self.head_host = head_host  # "" = the scheduler's head, else this machine's
        self.device_wait = device_wait
        self.node_state_dir = node_state_dir  # on the node: each instance's lock and markers
        self.head_banner = head_banner
        self.ssh = NodeSsh(
            user=ssh_user,
            port=cluster.ssh_port,
            key_file=cluster.ssh_key_file,
            client_keys=(),
            host_keys=self.host_keys,
            clock=self.clock,
            log=self.log,
            wait_timeout=ssh_wait_timeout,
            retry_delays=tuple(ssh_retry_delays),
            connect_timeout=connect_timeout,
            command_timeout=command_timeout,
        )
        self._max_concurrent = max_concurrent
        self._limit: asyncio.Semaphore | None = None
        self._head_lock = asyncio.Lock()
        self._head_ready = False  # prepare_head succeeded
        self._plugins: list[Plugin] = []
        self._setups: dict[InstanceId, asyncio.Task[None]] = {}
        self._removals: set[asyncio.Task[None]] = set()
        self._ready: set[InstanceId] = set()
        # Taken out of Grid Engine, awaiting the node's second InstanceDown (SpotPool announces
        # a drained node and again a gone one); a failed deregistration is tried again then.
        self._deregistered: set[InstanceId] = set()
        self.removals_dropped = 0  # scale-ins dropped: the node had a job when looked at again
        self._swept = False  # the hosts of pinned instances that are gone were taken out
        bus.subscribe(self.inbox, InstanceUp, InstanceDown, FleetObserved)

    # lifecycle

    async def setup(self) -> None:
        """Check the plugins and the key before any node arrives: a config mistake stops the
        start with one line naming it. Then make the head's Grid Engine ready (once: run()
        tries again if it did not answer)."""
        try:
            self._plugins = cluster_plugins(self.config, self.cluster)
        except PluginError as exc:
            where = self.config.path or "config"
            raise ValueError(
                "\n".join(f"{where}: {line}" for line in str(exc).splitlines())
            ) from None
        if self.side is None:
            self.side = scheduler_side(self._plugins, sge=self.sge, slurm=self.slurm)
        if isinstance(self.side, SgeSide):
            self.sge = self.side.client  # the tests reach Grid Engine's client here
        if self.cluster.ssh_key_file:
            try:
                self.ssh.client_keys = [asyncssh.read_private_key(self.cluster.ssh_key_file)]
            except (OSError, asyncssh.KeyImportError) as exc:
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
                raise ValueError(
                    f"cluster.{self.cluster.name}.ssh_key_file: cannot use "
                    f"{self.cluster.ssh_key_file}: {reason} (an unencrypted private key the "
                    "nodes accept is needed)"
                ) from None
        if not self.head_host:
            self.head_host = self.side.head_host() if self.side else socket.gethostname()
        self._limit = asyncio.Semaphore(self._max_concurrent)
        await self._prepare_head()
        plugins = self._plugins if self.head_banner else []
        for problem in await write_head_banners(plugins, self.head_host, self.cluster.name):
            self.log.warning("head.motd_not_written", problem=problem)

    async def run(self) -> None:
        retry = asyncio.create_task(self._prepare_head_until_done(), name="head")
        try:
            while True:
                msg = await self.inbox.get()
                if msg is EOI:
                    return
                self.handle(msg)
        finally:
            retry.cancel()

    async def stop(self) -> None:
        """Setups in flight are cancelled; removals (the teardown's deregistrations, which the
        node pool announces before it terminates) are finished, within the grace."""
        for task in self._setups.values():
            task.cancel()
        tasks = [*self._setups.values(), *self._removals]
        if tasks:
            await asyncio.wait(tasks)

    def handle(self, msg: object) -> None:
        match msg:
            case InstanceUp(role=Role.NODE, instance_id=iid) if (
                iid not in self._setups and iid not in self._ready
            ):
                task = asyncio.create_task(self._set_up(msg), name=f"node-setup:{iid}")
                self._setups[iid] = task
                task.add_done_callback(self._setup_done)
            case InstanceDown(instance_id=iid):
                running = self._setups.pop(iid, None)
                self._in_background(self._remove(msg, running), f"node-remove:{iid}")
            case FleetObserved(members=members) if not self._swept:
                self._swept = True
                alive = {m.instance_id for m in members}
                self._in_background(self._take_out_orphans(alive), "node-orphans")

    def _in_background(self, work: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(work, name=name)
        self._removals.add(task)
        task.add_done_callback(self._removals.discard)

    def _setup_done(self, task: asyncio.Task[None]) -> None:
        for iid, running in list(self._setups.items()):
            if running is task:
                del self._setups[iid]

    # the head

    async def _prepare_head(self) -> bool:
        """The side's prepare_head once; True when the head is ready (or there is no side)."""
        side = self.side
        if self._head_ready or side is None:
            return True
        try:
            async with self._head_lock:
                found = await side.prepare_head(self.head_host)
        except side.errors as exc:
            self.log.warning(
                f"{side.name}.head_not_ready",
                reason=str(exc),
                hint=f"{side.head_hint}; trying again",
            )
            return False
        self._head_ready = True
        self.log.info(f"{side.name}.head_ready", head=self.head_host, **found)
        return True

    async def _prepare_head_until_done(self) -> None:
        attempt = 0
        while not await self._prepare_head():
            await self.sleep(backoff_delay(HEAD_RETRY_DELAYS, attempt))
            attempt += 1

    # set up one node

    async def _set_up(self, up: InstanceUp) -> None:
        started = self.clock()
        log = self.log.bind(instance_id=up.instance_id, address=up.address)
        step = "address"
        try:
            node = NodeInfo(
                instance_id=up.instance_id,
                address=up.address,
                hostname=ec2_hostname(up.address),
                cluster=self.cluster.name,
                state_dir=f"{self.node_state_dir}/{up.instance_id}",
            )
            log.info("node.setup_started", hostname=node.hostname)
            step = "ssh"
            conn = await self.ssh.connect(node)
            assert self._limit is not None, "setup() creates it"
            async with conn, self._limit:
                for name, command in volume_commands(
                    self._volumes(), self.head_host, device_wait=self.device_wait
                ):
                    step = f"volume:{name}"
                    await self._remote(conn, step, command, node)
                for plugin in self._plugins:
                    step = f"plugin:{plugin.name}"
                    await self._apply(conn, step, plugin, node)
        except StepFailed as exc:
            self._failed(up, exc.step, exc.reason, log)
            return
        except (ValueError, PluginError) as exc:
            self._failed(up, step, str(exc), log)
            return
        except Exception as exc:  # a surprise must fail this node, not the actor
            log.exception("node.setup_crashed", step=step)
            self._failed(up, step, f"{type(exc).__name__}: {exc}", log)
            return
        self._ready.add(up.instance_id)
        seconds = round(self.clock() - started, 3)
        log.info("node.ready", hostname=node.hostname, seconds=seconds)
        self.publish(
            NodeReady(
                at=self.clock(),
                instance_id=up.instance_id,
                address=up.address,
                hostname=node.hostname,
            )
        )

    def _failed(self, up: InstanceUp, step: str, reason: str, log: Any) -> None:
        log.warning("node.setup_failed", step=step, reason=reason)
        self.publish(
            NodeSetupFailed(
                at=self.clock(),
                instance_id=up.instance_id,
                address=up.address,
                step=step,
                reason=reason,
            )
        )

    def _volumes(self) -> list[VolumeSection]:
        by_name = {v.name: v for v in self.config.volumes}
        return [by_name[name] for name in self.cluster.volumes if name in by_name]

    async def _apply(
        self, conn: asyncssh.SSHClientConnection, step: str, plugin: Plugin, node: NodeInfo
    ) -> None:
        """A plugin's commands on the node; the scheduler's plugin registers the node on the
        head before them and waits for it to join after them."""
        side = self.side if self.side is not None and plugin == self.side.plugin else None
        if side is not None:
            try:
                async with self._head_lock:
                    found = await side.register(
                        node.hostname, lambda: self.ssh.run(conn, step, memory_command())
                    )
            except side.errors as exc:
                raise StepFailed(step, str(exc)) from None
            if found:  # Slurm registers nothing on the head: the node's slurmd joins
                self.log.info("node.registered", hostname=node.hostname, **found)
        for command in remote_commands(plugin, node, self.head_host):
            await self._remote(conn, step, command, node)
        if side is not None:
            try:
                await side.joined(node.hostname, self.sleep)
            except side.errors as exc:
                raise StepFailed(step, str(exc)) from None

    async def _remote(
        self, conn: asyncssh.SSHClientConnection, step: str, command: RemoteCommand, node: NodeInfo
    ) -> str:
        return await self.ssh.run(conn, step, locked(command, node))

    # take one node out

    async def _remove(self, down: InstanceDown, setup: asyncio.Task[None] | None) -> None:
        log = self.log.bind(instance_id=down.instance_id, address=down.address)
        if setup is not None:
            setup.cancel()
            await asyncio.wait({setup})
            log.info("node.setup_cancelled", reason=str(down.reason))
        scale_in = down.reason is LostReason.SCALE_IN
        try:
            hostname = ec2_hostname(down.address)
        except ValueError:
            hostname = ""
        side = self.side
        if side is None or not hostname:
            self._let_go(down, scale_in, forget=True)
            return
        async with self._head_lock:
            if down.instance_id in self._deregistered:
                # The second InstanceDown of a scaled-in or lost node (drained, then gone):
                # the scheduler let it go at the first.
                self._deregistered.discard(down.instance_id)
                self._let_go(down, scale_in, forget=True)
                return
            release: Released
            if scale_in:  # chosen on a sample that may be stale: only if it is empty
                release = await side.release(hostname, self.sleep)
            else:  # lost, interrupted or torn down: it goes whatever runs there
                release = Gone(failures=await side.deregister(hostname, self.sleep))
            if release.released and not release.failures:
                self._deregistered.add(down.instance_id)
        if not release.released:
            self.removals_dropped += 1
            log.warning("node.removal_dropped", hostname=hostname, reason=release.reason)
            self.publish(
                NodeKept(
                    at=self.clock(),
                    instance_id=down.instance_id,
                    address=down.address,
                    reason=release.reason,
                )
            )
            return
        if release.failures:
            log.warning("node.deregister_failed", hostname=hostname, reasons=release.failures)
        else:
            log.info("node.deregistered", hostname=hostname, reason=str(down.reason))
        self._let_go(down, scale_in, forget=not release.failures)

    async def _take_out_orphans(self, alive: set[str]) -> None:
        """After a restart, at the node pool's first view of the fleet: a host this controller
        set up (pinned) whose instance is gone (ended while no controller ran, or while a
        killed one was taking it out) leaves the scheduler, so no host stays without an instance."""
        if self.side is None:
            return
        for pin in self.host_keys.pins():
            if pin.instance_id in alive:
                continue
            try:
                hostname = ec2_hostname(pattern_address(pin.pattern))
            except ValueError:
                continue
            async with self._head_lock:
                failures = await self.side.deregister(hostname, self.sleep)
            if failures:
                self.log.warning(
                    "node.orphan_deregister_failed", hostname=hostname, reasons=failures
                )
                continue
            self.host_keys.forget(pin.pattern)
            self.log.info(
                "node.orphan_deregistered", hostname=hostname, instance_id=pin.instance_id
            )

    def _let_go(self, down: InstanceDown, scale_in: bool, *, forget: bool) -> None:
        """Forget the node, and its pin once it left the scheduler (until then the pin tells a
        restart the host may be registered); for a scale-in, the pool may terminate it."""
        self._ready.discard(down.instance_id)
        if forget:
            self.host_keys.forget(host_pattern(down.address, self.cluster.ssh_port))
        if scale_in:
            self.publish(
                NodeReleased(at=self.clock(), instance_id=down.instance_id, address=down.address)
            )
