"""A private OpenSSH sshd on a loopback address, with a generated host key and client key.

Tests pin the host key (`known_hosts()`), so host-key checking is exercised, not switched off.
`sshd_factory(address)` can listen on a moto instance's 127.0.20.x address.
"""

from __future__ import annotations

import getpass
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import asyncssh
import pytest

from tests.harness import procs
from tests.harness.net import ServerStartError, free_port, read_log, wait_for_port

SSHD = "/usr/sbin/sshd"
SSH_KEYGEN = "/usr/bin/ssh-keygen"

CONFIG = """\
Port {port}
ListenAddress {address}
HostKey {root}/host_key
PidFile {root}/sshd.pid
AuthorizedKeysFile {root}/authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin prohibit-password
UsePAM no
StrictModes no
LogLevel VERBOSE
"""


class Sshd:
    def __init__(self, root: Path, address: str = "127.0.0.1", port: int = 0) -> None:
        self.root = root
        self.host = address
        self.port = port or free_port(address)
        self.username = getpass.getuser()
        self.client_key_path = root / "client_key"
        self.log = root / "sshd.log"
        self._process: subprocess.Popen | None = None
        _keygen(root / "host_key")
        _keygen(self.client_key_path)
        self.host_public_key = (root / "host_key.pub").read_text().strip()
        (root / "authorized_keys").write_text((root / "client_key.pub").read_text())
        config = CONFIG.format(port=self.port, address=address, root=root)
        (root / "sshd_config").write_text(config)

    def known_hosts(self) -> asyncssh.SSHKnownHosts:
        """The host key pinned for this server, for `asyncssh.connect(known_hosts=...)`."""
        return asyncssh.import_known_hosts(
            f"{self.host},[{self.host}]:{self.port} {self.host_public_key}\n"
        )

    def start(self) -> None:
        if not Path(SSHD).exists():
            raise ServerStartError(f"{SSHD} is missing: install openssh-server (scripts/test does)")
        os.makedirs("/run/sshd", exist_ok=True)  # privilege separation directory
        argv = [SSHD, "-D", "-e", "-f", str(self.root / "sshd_config")]
        self._process = procs.spawn(argv, self.log)
        try:
            wait_for_port(
                self.host, self.port, alive=lambda: self._process.poll() is None, log=self.log
            )
        except ServerStartError:
            procs.stop(self._process)
            raise

    def stop(self) -> None:
        procs.stop(self._process)
        self._process = None

    def read_log(self) -> str:
        return read_log(self.log)


def _keygen(path: Path) -> None:
    result = subprocess.run(
        [SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", "test", "-f", str(path)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise ServerStartError(f"ssh-keygen failed for {path}: {result.stderr.strip()}")


@pytest.fixture
def sshd_factory() -> Iterator[Callable[..., Sshd]]:
    """Start an sshd on `address` (default 127.0.0.1) and a free or given port."""
    started: list[tuple[Sshd, Path]] = []

    def start(address: str = "127.0.0.1", port: int = 0) -> Sshd:
        root = Path(tempfile.mkdtemp(prefix="test-sshd-"))
        server = Sshd(root, address=address, port=port)
        started.append((server, root))
        server.start()
        return server

    try:
        yield start
    finally:
        for server, root in started:
            server.stop()
            shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def sshd(sshd_factory: Callable[..., Sshd]) -> Sshd:
    return sshd_factory()
