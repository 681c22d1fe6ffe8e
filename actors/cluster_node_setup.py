"""ClusterNodeSetup: turns a booted instance into a Grid Engine node over SSH, and back.

For each InstanceUp with role NODE, in its own task:

1. ssh: connect as `ssh_user` (root, as StarCluster set nodes up; `cluster_user` is whom jobs
   run as) to `cluster.ssh_port` with the key in `cluster.ssh_key_file`. While the node boots the
   connection is refused or times out: only OSError is retried, with backoff, until
   `ssh_wait_timeout`; an authentication failure or a wrong host key fails at once (retrying
   would hide it). Host keys are trusted on first use and pinned per instance
   (controller.gridengine.host_keys, in `known_hosts_path`).
2. volume:NAME for each of the cluster's volumes (controller.gridengine.node_volumes).
3. plugin:NAME for each of its plugins, in order (controller.gridengine.node_plugins). The sge
   plugin reads the node's memory, registers the node on the head through the local Grid Engine
   clients (the controller runs on the head), then starts the node's execd.
4. NodeReady(hostname=ip-a-b-c-d), or NodeSetupFailed(step, reason) at the first failing step.

Setups run concurrently, at most `max_concurrent` past the SSH wait at a time; head-side Grid
Engine changes are serialised. A node that was set up is not set up again for a repeated
InstanceUp. On InstanceDown the node's setup is cancelled if it runs, its host key pin dropped,
and (with an sge plugin) it is taken out of Grid Engine: queue instance disabled, removed from the
hostlist, exec/submit/admin host deleted; each step tolerates the host being gone already. A node
announced down twice (drained, then gone) is deregistered once, unless the first attempt failed.
Nothing here crashes the actor: a failure is the node's, reported and logged.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Sequence
from typing import Any

import asyncssh

from controller.config.plugins import Plugin, PluginError, SgePlugin, cluster_plugins, sge_plugin
from controller.config.schema import ClusterSection, Config, VolumeSection
from controller.gridengine.host_keys import HostKeyStore, host_pattern
from controller.gridengine.node_plugins import (
    HeadCommand,
    NodeInfo,
    RemoteCommand,
    consumable_line,
    memory_command,
    node_memory,
    register_commands,
    remote_commands,
)
from controller.gridengine.node_volumes import volume_commands
from controller.gridengine.sge import ec2_hostname, with_consumable
from controller.gridengine.sge_client import SgeClient, SgeError
from controller.gridengine.sge_deregister import deregister_node, run_head_command
from controller.messages import (
    InstanceDown,
    InstanceId,
    InstanceUp,
    NodeReady,
    NodeSetupFailed,
    Role,
)
from controller.runtime.actor import Actor
from controller.runtime.backoff import backoff_delay
from controller.runtime.bus import EOI, Bus


class StepFailed(Exception):
    """One setup step of one node failed; `reason` is the line NodeSetupFailed carries."""

    def __init__(self, step: str, reason: str) -> None:
        super().__init__(f"{step}: {reason}")
        self.step = step
        self.reason = reason


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
        ssh_user: str = "root",
        head_host: str = "",
        max_concurrent: int = 8,
        ssh_wait_timeout: float = 600.0,
        ssh_retry_delays: Sequence[float] = (1, 2, 4, 8, 15),
        connect_timeout: float = 15.0,
        command_timeout: float = 600.0,
        device_wait: int = 60,
    ) -> None:
        super().__init__(name="cluster_node_setup", bus=bus)
        self.config = config
        self.cluster = cluster
        self.host_keys = HostKeyStore(known_hosts_path)
        self.sge = sge
        self.ssh_user = ssh_user
        self.head_host = head_host  # "" = the qmaster's name, else this machine's
        self.ssh_wait_timeout = ssh_wait_timeout
        self.ssh_retry_delays = tuple(ssh_retry_delays)
        self.connect_timeout = connect_timeout
        self.command_timeout = command_timeout
        self.device_wait = device_wait
        self._max_concurrent = max_concurrent
        self._limit: asyncio.Semaphore | None = None
        self._head_lock = asyncio.Lock()
        self._plugins: list[Plugin] = []
        self._sge_plugin: SgePlugin | None = None
        self._client_keys: list[asyncssh.SSHKey] | tuple[()] = ()
        self._setups: dict[InstanceId, asyncio.Task[None]] = {}
        self._removals: set[asyncio.Task[None]] = set()
        self._ready: set[InstanceId] = set()
        # Taken out of Grid Engine, awaiting the node's second InstanceDown (SpotPool announces
        # a drained node and again a gone one); a failed deregistration is tried again then.
        self._deregistered: set[InstanceId] = set()
        bus.subscribe(self.inbox, InstanceUp, InstanceDown)

    # lifecycle

    async def setup(self) -> None:
        """Check the plugins and the key before any node arrives: a config mistake stops the
        start with one line naming it."""
        try:
            self._plugins = cluster_plugins(self.config, self.cluster)
        except PluginError as exc:
            where = self.config.path or "config"
            raise ValueError(
                "\n".join(f"{where}: {line}" for line in str(exc).splitlines())
            ) from None
        self._sge_plugin = sge_plugin(self._plugins)
        if self._sge_plugin is not None and self.sge is None:
            p = self._sge_plugin
            self.sge = SgeClient(
                sge_root=p.sge_root, cell=p.cell, bin_dir=p.bin_dir, prefix=p.command_prefix
            )
        if self.cluster.ssh_key_file:
            try:
                self._client_keys = [asyncssh.read_private_key(self.cluster.ssh_key_file)]
            except (OSError, asyncssh.KeyImportError) as exc:
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
                raise ValueError(
                    f"cluster.{self.cluster.name}.ssh_key_file: cannot use "
                    f"{self.cluster.ssh_key_file}: {reason} (an unencrypted private key the "
                    "nodes accept is needed)"
                ) from None
        if not self.head_host:
            if self._sge_plugin is not None and self.sge is not None:
                self.head_host = self.sge.master_host()
            else:
                self.head_host = socket.gethostname()
        self._limit = asyncio.Semaphore(self._max_concurrent)

    async def run(self) -> None:
        while True:
            msg = await self.inbox.get()
            if msg is EOI:
                return
            self.handle(msg)

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
                task = asyncio.create_task(self._remove(msg, running), name=f"node-remove:{iid}")
                self._removals.add(task)
                task.add_done_callback(self._removals.discard)

    def _setup_done(self, task: asyncio.Task[None]) -> None:
        for iid, running in list(self._setups.items()):
            if running is task:
                del self._setups[iid]

    # set up one node

    async def _set_up(self, up: InstanceUp) -> None:
        started = self.clock()
        log = self.log.bind(instance_id=up.instance_id, address=up.address)
        step = "address"
        try:
            node = NodeInfo(
                instance_id=up.instance_id, address=up.address, hostname=ec2_hostname(up.address)
            )
            log.info("node.setup_started", hostname=node.hostname)
            step = "ssh"
            conn = await self._connect(node)
            assert self._limit is not None, "setup() creates it"
            async with conn, self._limit:
                for name, command in volume_commands(
                    self._volumes(), self.head_host, device_wait=self.device_wait
                ):
                    step = f"volume:{name}"
                    await self._remote(conn, step, command)
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

    async def _connect(self, node: NodeInfo) -> asyncssh.SSHClientConnection:
        """Wait for the node's sshd and log in; refused or unreachable is retried until
        ssh_wait_timeout, anything SSH itself says is final."""
        port = self.cluster.ssh_port
        pattern = host_pattern(node.address, port)
        where = f"{self.ssh_user}@{node.address}:{port}"
        deadline = self.clock() + self.ssh_wait_timeout
        attempt = 0
        while True:
            pinned = self.host_keys.get(pattern)
            if pinned is not None and pinned.instance_id != node.instance_id:
                self.host_keys.forget(pattern)  # the address belongs to a new instance now
                pinned = None
            known_hosts = (
                asyncssh.import_known_hosts(f"{pattern} {pinned.key}\n") if pinned else None
            )
            try:
                conn = await asyncssh.connect(
                    node.address,
                    port=port,
                    username=self.ssh_user,
                    client_keys=self._client_keys or (),
                    known_hosts=known_hosts,
                    config=None,
                    agent_path=None,
                    gss_auth=False,
                    gss_kex=False,
                    connect_timeout=self.connect_timeout,
                )
            except OSError as exc:  # refused, unreachable, timed out: still booting
                left = deadline - self.clock()
                if left <= 0:
                    raise StepFailed(
                        "ssh",
                        f"no SSH on {node.address}:{port} within "
                        f"{self.ssh_wait_timeout:g}s (last: {exc.strerror or exc!r}); check the "
                        "security group allows port "
                        f"{port} from the head and that the image runs sshd",
                    ) from None
                delay = min(backoff_delay(self.ssh_retry_delays, attempt), left)
                attempt += 1
                await asyncio.sleep(delay)
                continue
            except asyncssh.PermissionDenied as exc:
                raise StepFailed(
                    "ssh",
                    f"{where} refused the key {self.cluster.ssh_key_file or '(default keys)'}: "
                    f"{exc.reason}; put its public key in the node's authorized_keys",
                ) from None
            except asyncssh.HostKeyNotVerifiable as exc:
                raise StepFailed(
                    "ssh",
                    f"{where} shows a host key other than the one pinned for "
                    f"{node.instance_id} in {self.host_keys.path} ({exc.reason}); "
                    "refusing to connect",
                ) from None
            except asyncssh.Error as exc:
                raise StepFailed("ssh", f"{where}: {type(exc).__name__}: {exc.reason}") from None
            if pinned is None:
                key = conn.get_server_host_key()
                if key is not None:
                    public = key.export_public_key("openssh").decode()
                    self.host_keys.pin(pattern, public, node.instance_id)
                    self.log.info("node.host_key_pinned", instance_id=node.instance_id)
            return conn

    async def _apply(
        self, conn: asyncssh.SSHClientConnection, step: str, plugin: Plugin, node: NodeInfo
    ) -> None:
        if not isinstance(plugin, SgePlugin):
            for command in remote_commands(plugin, node):
                await self._remote(conn, step, command)
            return
        memory = plugin.node_memory
        if not memory:
            memory = node_memory(plugin, await self._remote(conn, step, memory_command()))
        async with self._head_lock:
            await self._ensure_consumable(step, plugin)
            for command in register_commands(plugin, node.hostname, memory, self.head_host):
                await self._head(step, command)
        self.log.info("node.registered", hostname=node.hostname, memory=memory)
        for command in remote_commands(plugin, node, self.head_host):
            await self._remote(conn, step, command)

    async def _remote(
        self, conn: asyncssh.SSHClientConnection, step: str, command: RemoteCommand
    ) -> str:
        """Run one command on the node; its stdout. A non-zero exit fails the step."""
        try:
            async with asyncio.timeout(self.command_timeout):
                result = await conn.run(command.command, input=command.input, check=False)
        except TimeoutError:
            raise StepFailed(
                step, f"{command.what}: no end within {self.command_timeout:g}s"
            ) from None
        except (asyncssh.Error, OSError) as exc:
            raise StepFailed(step, f"{command.what}: the SSH session failed: {exc}") from None
        stdout = _text(result.stdout)
        if result.exit_status != 0:
            said = " ".join((_text(result.stderr) or stdout).split())[-400:] or "no output"
            status = result.exit_status if result.exit_status is not None else result.exit_signal
            raise StepFailed(step, f"{command.what} exited with {status}: {said}")
        return stdout

    async def _head(self, step: str, command: HeadCommand) -> None:
        assert self.sge is not None, "an sge plugin gives a client"
        try:
            await run_head_command(self.sge, command)
        except SgeError as exc:
            raise StepFailed(step, f"{command.what} on the head: {exc}") from None

    async def _ensure_consumable(self, step: str, plugin: SgePlugin) -> None:
        assert self.sge is not None, "an sge plugin gives a client"
        try:
            complexes = await self.sge.run("qconf", "-sc")
            updated = with_consumable(complexes, consumable_line(plugin))
            if updated is not None:
                await self.sge.run_with_file("qconf", "-Mc", text=updated)
                self.log.info("sge.consumable_added", consumable=plugin.consumable)
        except SgeError as exc:
            raise StepFailed(
                step, f"adding the {plugin.consumable} consumable on the head: {exc}"
            ) from None

    # take one node out

    async def _remove(self, down: InstanceDown, setup: asyncio.Task[None] | None) -> None:
        log = self.log.bind(instance_id=down.instance_id, address=down.address)
        if setup is not None:
            setup.cancel()
            await asyncio.wait({setup})
            log.info("node.setup_cancelled", reason=str(down.reason))
        self._ready.discard(down.instance_id)
        self.host_keys.forget(host_pattern(down.address, self.cluster.ssh_port))
        if self._sge_plugin is None or self.sge is None:
            return
        try:
            hostname = ec2_hostname(down.address)
        except ValueError:
            return
        async with self._head_lock:
            if down.instance_id in self._deregistered:
                # The second InstanceDown of a scaled-in or lost node (drained, then gone):
                # Grid Engine let it go at the first.
                self._deregistered.discard(down.instance_id)
                return
            failures = await deregister_node(self.sge, self._sge_plugin, hostname)
            if not failures:
                self._deregistered.add(down.instance_id)
        if failures:
            log.warning("node.deregister_failed", hostname=hostname, reasons=failures)
        else:
            log.info("node.deregistered", hostname=hostname, reason=str(down.reason))


def _text(data: object) -> str:
    if data is None:
        return ""
    return data.decode(errors="replace") if isinstance(data, bytes) else str(data)
