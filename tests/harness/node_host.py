"""A booted cluster node for tests: OpenSSH's sshd in the node's own mount, UTS and PID namespaces,
on a 127.0.20.x address, whose disks are loop devices backed by image files in the test's temp dir.

ClusterNodeSetup runs its commands there for real (mkfs, mount, profile.d, motd, init scripts,
sge_execd), so nothing the node does may reach this machine's disks or files. The namespace has:
- /dev: a tmpfs holding only null, zero, full, random, urandom, tty, pts, ptmx, fd links, and the
  node's disks (`Disk`): block device nodes with the major:minor of a loop device whose backing file
  is checked to be the disk's image before the node starts; once it has, every block device in the
  node's /dev is checked again to be one of them (so a mistake fails here, before any mkfs);
- /etc: an overlay whose changes land in `etc_dir` (profile.d, motd.tail, init.d scripts);
- /mnt: a tmpfs, where the tests mount their volumes; /run: a tmpfs, as at every boot;
- its own host name (ip-a-b-c-d) and processes: `pgrep` on the node sees only the node's.

SSH: a thread accepts on ADDRESS:PORT in the test's network namespace and serves each connection
with `sshd -i` entered into the node's namespaces (nsenter), so the node may live in another network
namespace: `NodeHost(..., head=grid_engine)` puts it in the test Grid Engine's (see `_join_head`).

Needs root, loop devices, mount/UTS/PID namespaces and overlayfs: without one, `start` FAILS with
the reason. `stop` ends every process of the node with its PID namespace and detaches the loops.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.harness import procs
from tests.harness.gridengine import CELL, NODE_ADDRESSES, GridEngine
from tests.harness.net import ServerStartError, free_port, read_log
from tests.harness.sshd import SSHD, Sshd

TOOLS = ("unshare", "nsenter", "losetup", "mknod", "mkfs.ext4", "blkid", "mountpoint", "findmnt")
# Character devices a node's sessions need, as (name, major, minor).
CHAR_DEVICES = (("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8))
CHAR_DEVICES += (("urandom", 1, 9), ("tty", 5, 0))
# The node's init: it reaps what daemons leave behind (sge_execd's first fork), as init does.
INIT = """
import os, time
while True:
    try:
        os.wait()
    except ChildProcessError:
        time.sleep(0.5)
"""
# The head as a node of the test Grid Engine sees it: 127.0.21.N, routed from 127.0.20.N.
HEAD_ALIAS_NET = "127.0.21."
EXECD_PORT_BASE = 6500  # + the node's last octet; the head's execd holds 6445


@dataclass(frozen=True)
class Disk:
    """A volume attached to the node. `device` is its node under /dev (nvme1n1, as on Nitro);
    `links` the other names udev gives it there (sdf, disk/by-id/...). `files` (name: text) makes
    the image an ext4 filesystem holding them, as a volume made from a snapshot is; None leaves it
    blank, as a new volume is."""

    device: str = "nvme1n1"
    links: tuple[str, ...] = ("sdf",)
    files: dict[str, str] | None = None
    size_mb: int = 64


@dataclass
class _Loop:
    disk: Disk
    image: Path
    loop: str  # /dev/loopN
    rdev: int


class NodeHost:
    """One node (see the module docstring); `node_host()` starts and stops one."""

    def __init__(
        self,
        root: Path,
        address: str,
        *,
        disks: Sequence[Disk] = (),
        head: GridEngine | None = None,
        port: int = 0,
    ) -> None:
        self.root = root
        self.address = address
        self.hostname = "ip-" + address.replace(".", "-")
        self.port = port or free_port(address)
        self.disks = tuple(disks)
        self.head = head
        (root / "sshd").mkdir(parents=True, exist_ok=True)
        self.sshd = Sshd(root / "sshd", address=address, port=self.port)
        self.client_key_path = self.sshd.client_key_path  # root may log in with it
        self.etc_dir = root / "etc"  # what the node changed in /etc
        self.log = root / "node.log"
        self.pid = 0  # the node's init, as this machine's PID namespace numbers it
        self.execd_port = EXECD_PORT_BASE + int(address.rsplit(".", 1)[1])
        self._loops: list[_Loop] = []
        self._holder: subprocess.Popen | None = None
        self._listener: socket.socket | None = None
        self._sessions: list[subprocess.Popen] = []
        self._route_added = False
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._serve, name=f"node-{address}", daemon=True)

    # use

    def run(self, command: str, timeout: float = 30) -> subprocess.CompletedProcess:
        """Run a shell command on the node (its namespaces), as the test's check from inside."""
        return subprocess.run(
            [*self._enter(), "sh", "-c", command],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def read(self, path: str) -> str:
        """A file as the node sees it ("" if missing)."""
        result = self.run(f"cat {path}")
        return result.stdout if result.returncode == 0 else ""

    def image(self, index: int) -> Path:
        return self._loops[index].image

    # start and stop

    def start(self) -> None:
        _preflight()
        self.etc_dir.mkdir()
        (self.root / "etc-work").mkdir()
        (self.etc_dir / "hostname").write_text(self.hostname + "\n")
        for index, disk in enumerate(self.disks):
            self._loops.append(_attach(disk, self.root / f"disk{index}.img"))
        overlays = [("/etc", self.etc_dir, self.root / "etc-work")]
        if self.head is not None:
            overlays.append(self._join_head())
        prefix = self.head.prefix if self.head is not None else ()
        script = self._script(overlays)
        argv = [*prefix, "unshare", "--mount", "--propagation", "private", "--uts", "--pid"]
        argv += ["--fork", "--mount-proc", "--kill-child", "sh", "-c", script]
        self._holder = procs.spawn(argv, self.log)
        self.pid = self._wait_for_init()
        self._check_devices()
        self._listener = socket.create_server((self.address, self.port))
        self._thread.start()

    def stop(self) -> None:
        """Everything the node started dies with its PID namespace; the loops are detached and
        checked gone (a loop left attached fails the test)."""
        self._stopping.set()
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            self._thread.join(timeout=5)
        if self.pid and self._holder is not None and self._holder.poll() is None:
            # The node's init, killed from outside its PID namespace, takes every process of
            # the node with it (unshare itself ignores SIGTERM while it waits for it).
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
        procs.stop(self._holder, timeout=5)
        for session in self._sessions:
            procs.stop(session, timeout=5)
        if self._route_added and self.head is not None:
            self.head.run(*self._route("del"), check=False)
        left = [lp.loop for lp in self._loops if not _detach(lp)]
        self._loops.clear()
        if left:
            raise AssertionError(f"loop devices still attached after the node stopped: {left}")

    def _script(self, overlays: list[tuple[str, Path, Path]]) -> str:
        lines = [
            "set -e",
            f"hostname {self.hostname}",
            "mount -t tmpfs -o mode=0755,size=4m node-dev /dev",
            *(f"mknod -m 666 /dev/{name} c {ma} {mi}" for name, ma, mi in CHAR_DEVICES),
            "mkdir /dev/pts /dev/shm /dev/disk /dev/disk/by-id",
            "mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts /dev/pts",
            "mount -t tmpfs -o mode=1777 node-shm /dev/shm",
            "ln -s pts/ptmx /dev/ptmx && ln -s /proc/self/fd /dev/fd",
            "ln -s /proc/self/fd/0 /dev/stdin && ln -s /proc/self/fd/1 /dev/stdout",
            "ln -s /proc/self/fd/2 /dev/stderr",
        ]
        for lp in self._loops:
            major, minor = os.major(lp.rdev), os.minor(lp.rdev)
            lines.append(f"mknod -m 660 /dev/{lp.disk.device} b {major} {minor}")
            for link in lp.disk.links:  # relative, as udev makes them
                up = "../" * link.count("/")
                lines.append(f"mkdir -p $(dirname /dev/{link})")
                lines.append(f"ln -s {up}{lp.disk.device} /dev/{link}")
        for target, upper, work in overlays:
            lines.append(
                f"mount -t overlay node-overlay -o lowerdir={target},upperdir={upper},"
                f"workdir={work} {target}"
            )
        lines += ["mount -t tmpfs -o mode=0755 node-mnt /mnt"]
        lines += ["mount -t tmpfs -o mode=0755 node-run /run", "mkdir -m 0755 /run/sshd /run/lock"]
        lines.append(f"exec {shlex.quote(sys.executable)} -c {shlex.quote(INIT)} node-init")
        return "\n".join(lines) + "\n"

    def _wait_for_init(self, timeout: float = 15) -> int:
        """The PID of the node's init (the holder's child) once its namespace is set up."""
        assert self._holder is not None
        deadline = time.monotonic() + timeout
        children = Path(f"/proc/{self._holder.pid}/task/{self._holder.pid}/children")
        while time.monotonic() < deadline:
            if self._holder.poll() is not None:
                raise ServerStartError("the node's namespace could not be set up", self.log)
            with contextlib.suppress(OSError, ValueError, IndexError):
                pid = int(children.read_text().split()[0])
                if Path(f"/proc/{pid}/cmdline").read_bytes().endswith(b"\0node-init\0"):
                    return pid
            time.sleep(0.02)
        raise ServerStartError(f"the node's namespace was not set up within {timeout}s", self.log)

    def _check_devices(self) -> None:
        """Every block device the node can see must be one of its loops (the safety net)."""
        ours = {lp.rdev for lp in self._loops}
        dev = Path(f"/proc/{self.pid}/root/dev")
        if (dev / "loop-control").exists() or not (dev / "null").exists():
            raise ServerStartError("the node's /dev is not its own tmpfs", self.log)
        for where, _, files in os.walk(dev):
            for name in files:
                info = os.lstat(os.path.join(where, name))
                if stat.S_ISBLK(info.st_mode) and info.st_rdev not in ours:
                    path = os.path.join(where, name).replace(str(dev), "/dev", 1)
                    raise ServerStartError(f"the node's {path} is not one of its loop devices")
        for lp in self._loops:
            for name in (lp.disk.device, *lp.disk.links):
                info = os.stat(dev / name)  # follows the links, inside the node's /dev
                if not stat.S_ISBLK(info.st_mode) or info.st_rdev != lp.rdev:
                    raise ServerStartError(f"the node's /dev/{name} is not {lp.loop}")

    def _join_head(self) -> tuple[str, Path, Path]:
        """Make the node a second host of the test Grid Engine, in its network namespace.

        The qmaster names a connection by its source address, which on loopback is 127.0.0.1,
        the head's own. So the node resolves the head's name to 127.0.21.N, for which a local
        route in the namespace gives 127.0.20.N as source: the qmaster sees ip-127-0-20-N.
        The head's execd holds port 6445 there, so the node's /etc/services moves its execd
        to EXECD_PORT_BASE + N. The node gets its own view of the cell's `common` directory
        (an overlay: what it writes, act_qmaster, stays its own)."""
        assert self.head is not None
        result = self.head.run(*self._route("add"), check=False)
        if result.returncode != 0:
            raise ServerStartError(f"ip route add in {self.head.netns}: {result.stderr.strip()}")
        self._route_added = True
        alias = self._head_alias()
        hosts = [f"127.0.0.1 {self.hostname} localhost", f"{alias} {self.head.master_host}"]
        hosts += [f"{a} ip-{a.replace('.', '-')}" for a in NODE_ADDRESSES if a != self.address]
        (self.etc_dir / "hosts").write_text("\n".join(hosts) + "\n")
        services = Path("/etc/services").read_text().splitlines()
        services = [ln for ln in services if "sge_execd" not in ln and "sge-execd" not in ln]
        services.append(f"sge-execd {self.execd_port}/tcp sge_execd")
        (self.etc_dir / "services").write_text("\n".join(services) + "\n")
        upper, work = self.root / "cell-common", self.root / "cell-work"
        upper.mkdir()
        work.mkdir()
        return (str(self.head.sge_root / CELL / "common"), upper, work)

    def _head_alias(self) -> str:
        return HEAD_ALIAS_NET + self.address.rsplit(".", 1)[1]

    def _route(self, verb: str) -> tuple[str, ...]:
        # A more specific local route than 127.0.0.0/8's, whose preferred source is the node's.
        alias = self._head_alias()
        return (
            *("ip", "route", verb, "local", f"{alias}/32", "dev", "lo"),
            *("src", self.address, "table", "local"),
        )

    # SSH

    def _enter(self) -> list[str]:
        return ["nsenter", "-t", str(self.pid), "-m", "-u", "-p", "-n", "--"]

    def _serve(self) -> None:
        assert self._listener is not None
        config = str(self.sshd.root / "sshd_config")
        while not self._stopping.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            with conn, open(self.log, "ab") as log:
                session = subprocess.Popen(
                    [*self._enter(), SSHD, "-i", "-e", "-f", config],
                    stdin=conn.fileno(),
                    stdout=conn.fileno(),
                    stderr=log,
                    start_new_session=True,
                )
            self._sessions = [s for s in self._sessions if s.poll() is None] + [session]

    def read_log(self) -> str:
        return read_log(self.log)


def _preflight() -> None:
    """What a node needs from this machine; a missing piece fails the test naming it."""
    if os.geteuid() != 0:
        raise ServerStartError("the node host needs root (loop devices, mount namespaces)")
    if not Path(SSHD).exists():
        raise ServerStartError(f"{SSHD} is missing: install openssh-server (scripts/test does)")
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        raise ServerStartError(f"the node host needs {', '.join(missing)} (util-linux, e2fsprogs)")
    if not Path("/dev/loop-control").exists():
        raise ServerStartError("no /dev/loop-control: this machine offers no loop devices")
    probe = subprocess.run(
        ["unshare", "--mount", "--uts", "--pid", "--fork", "--mount-proc", "true"],
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.returncode != 0:
        raise ServerStartError(f"cannot make mount/UTS/PID namespaces: {probe.stderr.strip()}")
    if "overlay" not in Path("/proc/filesystems").read_text():
        raise ServerStartError("the kernel has no overlayfs (the node's /etc is an overlay)")
    os.makedirs("/run/sshd", exist_ok=True)  # sshd's privilege separation directory


def _attach(disk: Disk, image: Path) -> _Loop:
    """The disk's image, attached to a loop device checked to be backed by that very file."""
    with open(image, "wb") as out:
        out.truncate(disk.size_mb * 1024 * 1024)
    if disk.files is not None:  # a filesystem made on the image FILE: no block device involved
        content = image.with_suffix(".files")
        content.mkdir()
        for name, text in disk.files.items():
            (content / name).write_text(text)
        _must("mkfs.ext4", "-q", "-F", "-d", str(content), str(image))
    loop = _must("losetup", "--find", "--show", str(image)).strip()
    info = os.stat(loop)
    sys_dir = Path(f"/sys/dev/block/{os.major(info.st_rdev)}:{os.minor(info.st_rdev)}")
    try:
        backing = (sys_dir / "loop" / "backing_file").read_text().strip()
    except OSError:
        backing = ""
    if not stat.S_ISBLK(info.st_mode) or Path(backing) != image.resolve():
        subprocess.run(["losetup", "-d", loop], check=False)
        raise ServerStartError(f"{loop} is not a loop device backed by {image} ({backing!r})")
    return _Loop(disk=disk, image=image, loop=loop, rdev=info.st_rdev)


def _detach(lp: _Loop, timeout: float = 10) -> bool:
    """Detach a loop while it is still ours (the kernel lets it go once the node's mounts are
    gone); False if it stays attached."""
    backing = Path(f"/sys/dev/block/{os.major(lp.rdev)}:{os.minor(lp.rdev)}/loop/backing_file")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if Path(backing.read_text().strip()) != lp.image.resolve():
                return True  # detached, and the device reused by someone else already
        except OSError:
            return True  # detached
        subprocess.run(["losetup", "-d", lp.loop], capture_output=True, check=False)
        time.sleep(0.1)
    return False


def _must(*argv: str) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ServerStartError(f"{' '.join(argv)} exited {result.returncode}: {result.stderr}")
    return result.stdout


@contextlib.contextmanager
def node_host(address: str, **kwargs) -> Iterator[NodeHost]:
    """A started NodeHost in a fresh temp dir, stopped and removed at the end."""
    root = Path(tempfile.mkdtemp(prefix="test-node-host-"))
    node = NodeHost(root, address, **kwargs)
    try:
        node.start()
        yield node
    finally:
        try:
            node.stop()
        finally:
            shutil.rmtree(root, ignore_errors=True)
