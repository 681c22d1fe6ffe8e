"""A private Slurm 22.05 (Debian's slurmctld, slurmd, slurm-client, munge): munged, slurmctld and
dynamic slurmd nodes, all in the test's temp dir, on 127.0.0.1 and free ports.

Slurm does not work inside a loopback-only network namespace (its daemons cannot resolve or bind
there), so these run in the root network namespace, bound to 127.0.0.1: tests using them are
marked `slurm` and run in a pytest run of their own, outside the namespace the main run uses.
So that nothing leaves the machine all the same, every daemon and client runs in a private
mount namespace (a `sleep` holds it; commands enter it with nsenter) where /etc/hosts names
this machine and the EC2-style node names (ip-127-0-20-5 for 127.0.20.5), /etc/resolv.conf
points at 127.0.0.1 (a name that is not there is never asked of a real DNS server), and a tmpfs
on /run holds munged's socket at its default path (slurmd fetches its configuration from
slurmctld before it knows any other: "configless").

Dynamic nodes (`slurmd -Z -N NAME`) register under NAME; slurmctld reaches a dynamic node at the
address it registered from, 127.0.0.1 here, so only one node runs at a time. Needs root (mount
namespace); a Slurm that cannot start FAILS the tests that use it, with the reason.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from controller.slurm.slurm_client import SlurmClient
from controller.slurm.slurm_queue import find_node, parse_sinfo
from tests.harness import procs
from tests.harness.net import ServerStartError, free_port, read_log

PROGRAMS = ("slurmctld", "slurmd", "munged", "squeue", "sinfo", "scontrol", "sbatch", "nsenter")
PACKAGES = "slurmctld slurmd slurm-client munge"
NODE_ADDRESSES = tuple(f"127.0.20.{i}" for i in range(1, 21))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "slurm: needs a real Slurm, which runs only outside the loopback-only network namespace"
        " (run these with `pytest -m slurm` in the root namespace)",
    )


class Slurm:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.conf = tmp / "slurm.conf"
        self.log = tmp / "daemons.log"
        self.ctld_port = free_port()
        self.slurmd_port = free_port()
        self.host = socket.gethostname()
        self._holder: subprocess.Popen | None = None
        self._munged: subprocess.Popen | None = None
        self._ctld: subprocess.Popen | None = None
        self._nodes: dict[str, subprocess.Popen] = {}

    @property
    def prefix(self) -> tuple[str, ...]:
        """What runs a command inside the private mount namespace."""
        assert self._holder is not None, "Slurm is not started"
        return ("nsenter", "-t", str(self._holder.pid), "-m", "--")

    # use

    def run(
        self, *argv: str, check: bool = True, timeout: float = 30
    ) -> subprocess.CompletedProcess:
        """Run a Slurm command (or any command) inside the mount namespace, with SLURM_CONF."""
        result = subprocess.run(
            [*self.prefix, *argv],
            env={**os.environ, "SLURM_CONF": str(self.conf)},
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"{' '.join(argv)} exited {result.returncode}: {result.stdout}{result.stderr}"
            )
        return result

    def client(self, **kwargs) -> SlurmClient:
        """The controller's client for this Slurm."""
        return SlurmClient(slurm_conf=str(self.conf), prefix=self.prefix, **kwargs)

    def submit(self, *args: str) -> str:
        """sbatch a job; its id."""
        return self.run("sbatch", "--parsable", "-o", "/dev/null", *args).stdout.strip()

    def node_state(self, name: str) -> frozenset[str] | None:
        node = find_node(parse_sinfo(self.run("sinfo", "--json").stdout), name)
        return None if node is None else node.states

    @property
    def conf_server(self) -> str:
        return f"127.0.0.1:{self.ctld_port}"

    def start_node(self, name: str, cpus: int = 2, memory_mb: int = 1000) -> None:
        """A dynamic node NAME joins, as the slurm plugin's command makes it join on a node."""
        assert not self._nodes, "only one dynamic node at a time (they share 127.0.0.1)"
        argv = [*self.prefix, "slurmd", "-D", "-Z", "-N", name]
        argv += ["--conf-server", self.conf_server]
        argv += ["--conf", f"CPUs={cpus} RealMemory={memory_mb}"]
        process = procs.spawn(argv, self.log)
        self._nodes[name] = process
        self._wait(
            f"node {name} idle in Slurm",
            lambda: "IDLE" in (self.node_state(name) or ()),
            process,
        )

    @contextlib.contextmanager
    def joined_node(self, name: str, cpus: int = 2, memory_mb: int = 1000) -> Iterator[str]:
        """NAME joined while the block runs; afterwards no job, no slurmd and no node are left."""
        self.start_node(name, cpus=cpus, memory_mb=memory_mb)
        try:
            yield name
        finally:
            self.cancel_all()
            self.stop_node(name)
            self.run("scontrol", "delete", f"nodename={name}", check=False)

    def wait_running(self, count: int, timeout: float = 30.0) -> None:
        """Until at least `count` jobs run."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.run("squeue", "-h", "-t", "R").stdout.splitlines()) >= count:
                return
            time.sleep(0.2)
        raise AssertionError(
            f"{count} job(s) not running within {timeout}s: {self.run('squeue').stdout}"
        )

    def wait_idle(self, name: str, timeout: float = 30) -> None:
        """Until Slurm lists NAME idle: a slurmd that went to the background (the slurm
        plugin's command) registers a moment after the command returned."""
        deadline = time.monotonic() + timeout
        state = self.node_state(name)
        while not state or "IDLE" not in state:
            if time.monotonic() > deadline:
                log = read_log(self.tmp / f"slurmd-{name}.log", 2000)
                raise AssertionError(
                    f"{name} not idle in Slurm within {timeout:g}s: {state}\n{log}"
                )
            time.sleep(0.1)
            state = self.node_state(name)

    def stop_node(self, name: str) -> None:
        """Stop NAME's slurmd: one start_node began, or one that went to the background (its
        PID file)."""
        procs.stop(self._nodes.pop(name, None), timeout=10)
        pid_file = self.tmp / f"slurmd-{name}.pid"
        try:
            pid = int(pid_file.read_text())
        except (OSError, ValueError):
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
            time.sleep(0.1)
        pid_file.unlink(missing_ok=True)

    def cancel_all(self, wait: float = 20.0) -> None:
        self.run("scancel", "--user", "root", check=False)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not self.run("squeue", "-h", "-t", "PD,R,CG,CF,S", check=False).stdout.strip():
                return
            time.sleep(0.2)

    # start and stop

    def start(self) -> None:
        for program in PROGRAMS:
            if shutil.which(program) is None and not os.path.exists(f"/usr/sbin/{program}"):
                raise ServerStartError(
                    f"Slurm is not installed ({program} is missing): install the Debian "
                    f"packages {PACKAGES}"
                )
        if os.geteuid() != 0:
            raise ServerStartError("the Slurm tests need root (a private mount namespace)")
        if [name for _, name in socket.if_nameindex()] == ["lo"]:
            raise ServerStartError(
                "Slurm cannot run in a loopback-only network namespace: run the slurm tests in "
                "the root namespace, apart from the others (`pytest -m slurm`)"
            )
        self._write_files()
        ready = self.tmp / "namespace-ready"
        self._holder = procs.spawn(
            [
                "unshare", "--mount", "--propagation", "private", "sh", "-c",
                f"mount --bind {self.tmp}/hosts /etc/hosts"
                f" && mount --bind {self.tmp}/resolv.conf /etc/resolv.conf"
                " && mount -t tmpfs -o mode=755 tmpfs /run && mkdir -m 755 /run/munge"
                f" && touch {ready} && exec sleep infinity",
            ],
            self.log,
        )  # fmt: skip
        self._wait("the mount namespace", ready.exists, self._holder)
        self._munged = procs.spawn(
            [
                *self.prefix, "munged", "-F", "--force", f"--key-file={self.tmp}/munge.key",
                f"--log-file={self.tmp}/munged.log", f"--seed-file={self.tmp}/munged.seed",
                "--origin=127.0.0.1",
            ],
            self.log,
        )  # fmt: skip
        self._wait(
            "munged", lambda: self.run("munge", "-n", check=False).returncode == 0, self._munged
        )
        self._ctld = procs.spawn(
            [*self.prefix, "env", f"SLURM_CONF={self.conf}", "slurmctld", "-D", "-i"], self.log
        )
        self._wait(
            "slurmctld answers",
            lambda: "UP" in self.run("scontrol", "ping", check=False).stdout,
            self._ctld,
        )

    def stop(self) -> None:
        try:
            if self._ctld is not None and self._ctld.poll() is None:
                self.cancel_all(wait=5)
        finally:
            for name in list(self._nodes):
                self.stop_node(name)
            procs.stop(self._ctld, timeout=10)
            procs.stop(self._munged, timeout=5)
            procs.stop(self._holder, timeout=5)

    def _write_files(self) -> None:
        (self.tmp / "state").mkdir(parents=True, exist_ok=True)
        for address in NODE_ADDRESSES:  # as Debian's slurmd package makes /var/spool/slurmd
            (self.tmp / "spool" / f"ip-{address.replace('.', '-')}").mkdir(parents=True)
        key = self.tmp / "munge.key"
        key.write_bytes(secrets.token_bytes(128))
        key.chmod(0o600)
        names = [f"{a} ip-{a.replace('.', '-')}" for a in NODE_ADDRESSES]
        (self.tmp / "hosts").write_text(
            "\n".join([f"127.0.0.1 {self.host} localhost", "::1 localhost", *names]) + "\n"
        )
        (self.tmp / "resolv.conf").write_text("nameserver 127.0.0.1\n")
        t = self.tmp
        self.conf.write_text(
            "\n".join(
                [
                    "ClusterName=test",
                    f"SlurmctldHost={self.host}(127.0.0.1)",
                    f"SlurmctldPort={self.ctld_port}",
                    f"SlurmdPort={self.slurmd_port}",
                    "AuthType=auth/munge",
                    "CredType=cred/munge",
                    "SlurmctldParameters=enable_configless",
                    "CommunicationParameters=NoInAddrAny",
                    f"StateSaveLocation={t}/state",
                    f"SlurmdSpoolDir={t}/spool/%n",
                    f"SlurmctldPidFile={t}/slurmctld.pid",
                    f"SlurmdPidFile={t}/slurmd-%n.pid",
                    f"SlurmctldLogFile={t}/slurmctld.log",
                    f"SlurmdLogFile={t}/slurmd-%n.log",
                    "SlurmUser=root",
                    "SlurmdUser=root",
                    "MpiDefault=none",
                    "ProctrackType=proctrack/linuxproc",
                    "TaskPlugin=task/none",
                    "SelectType=select/cons_tres",
                    "SelectTypeParameters=CR_Core_Memory",
                    "SchedulerParameters=sched_interval=1,bf_interval=1",
                    "MaxNodeCount=10",
                    "ReturnToService=2",
                    "JobAcctGatherType=jobacct_gather/none",
                    "PartitionName=all Nodes=ALL Default=YES State=UP",
                ]
            )
            + "\n"
        )

    def _wait(
        self, what: str, ready: Callable[[], bool], process: subprocess.Popen, timeout: float = 30
    ) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise ServerStartError(f"waiting for {what}: the process exited", self.log)
            if ready():
                return
            time.sleep(0.1)
        logs = "".join(
            f"\n--- {p.name} ---\n{read_log(p, 2000)}" for p in sorted(self.tmp.glob("*.log"))
        )
        raise ServerStartError(f"{what}: not within {timeout:g}s{logs}")


@pytest.fixture(scope="module")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Slurm]:
    """One Slurm for a test module; each test leaves no job and no node behind."""
    server = Slurm(tmp_path_factory.mktemp("slurm"))
    try:
        server.start()
        yield server
    finally:
        server.stop()
