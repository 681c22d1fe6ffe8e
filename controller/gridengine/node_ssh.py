"""Logging in to a cluster node over SSH and running its setup commands (ClusterNodeSetup's).

While the node boots the connection is refused or times out: only OSError is retried, with
backoff, until `wait_timeout`; an authentication failure or a wrong host key fails at once
(retrying would hide it). Host keys are trusted on first use and pinned per instance
(controller.gridengine.host_keys). A command that exits non-zero, times out or loses its session
fails its step with one line (StepFailed), which NodeSetupFailed carries.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import asyncssh

from controller.gridengine.host_keys import HostKeyStore, host_pattern
from controller.gridengine.node_plugins import NodeInfo, RemoteCommand
from controller.runtime.backoff import backoff_delay


class StepFailed(Exception):
    """One setup step of one node failed; `reason` is the line NodeSetupFailed carries."""

    def __init__(self, step: str, reason: str) -> None:
        super().__init__(f"{step}: {reason}")
        self.step = step
        self.reason = reason


@dataclass
class NodeSsh:
    """How the head reaches its nodes."""

    user: str
    port: int
    key_file: str
    client_keys: Sequence[asyncssh.SSHKey]
    host_keys: HostKeyStore
    clock: Callable[[], float]
    log: Any
    wait_timeout: float = 600.0
    retry_delays: Sequence[float] = (1, 2, 4, 8, 15)
    connect_timeout: float = 15.0
    command_timeout: float = 600.0

    async def connect(self, node: NodeInfo) -> asyncssh.SSHClientConnection:
        """Wait for the node's sshd and log in; refused or unreachable is retried until
        wait_timeout, anything SSH itself says is final."""
        port = self.port
        pattern = host_pattern(node.address, port)
        where = f"{self.user}@{node.address}:{port}"
        deadline = self.clock() + self.wait_timeout
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
                    username=self.user,
                    client_keys=self.client_keys or (),
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
                        f"{self.wait_timeout:g}s (last: {exc.strerror or exc!r}); check the "
                        "security group allows port "
                        f"{port} from the head and that the image runs sshd",
                    ) from None
                delay = min(backoff_delay(self.retry_delays, attempt), left)
                attempt += 1
                await asyncio.sleep(delay)
                continue
            except asyncssh.PermissionDenied as exc:
                raise StepFailed(
                    "ssh",
                    f"{where} refused the key {self.key_file or '(default keys)'}: "
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

    async def run(
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
        if stdout.strip():  # what the node reports: a service it has not, a volume formatted
            peer = conn.get_extra_info("peername") or ("?",)
            said = " ".join(stdout.split())[-400:]
            self.log.info("node.said", address=peer[0], step=step, what=command.what, said=said)
        return stdout


def _text(data: object) -> str:
    if data is None:
        return ""
    return data.decode(errors="replace") if isinstance(data, bytes) else str(data)
