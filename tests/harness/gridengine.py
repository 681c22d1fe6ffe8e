"""A private Grid Engine 8.1.9 (Debian's gridengine-* packages): qmaster and execd in their own
network namespace, with a fresh cell in a temp dir.

Ports 6444/6445 are fixed, so the daemons run inside `ip netns add ge-test-<pid>-<n>`, where
`/etc/netns/<name>/hosts` makes the names resolve both ways: this machine's host name on
127.0.0.1 (first, so 127.0.0.1 maps back to it: a client whose address resolves to another name
is refused), and EC2-style names for 127.0.20.1-20 (`ip-127-0-20-5`), the addresses moto gives
test instances. Every Grid Engine command runs through `ip netns exec <name>`.

The cell (SGE_ROOT in a temp dir, linking the package's binaries; classic spooling) starts empty
and is set up for tests: min_uid/min_gid 0 (jobs run as root), a 1 s scheduling interval, the
`mem_requested` consumable, the master as admin, submit and exec host with
`complex_values mem_requested=2G`, and `all.q` with 2 slots on the master. Needs root (netns,
/etc/netns); a Grid Engine that cannot start FAILS the tests that use it, with the reason.
"""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller.gridengine.sge_client import SgeClient
from tests.harness import procs
from tests.harness.net import ServerStartError, read_log

QMASTER = "/usr/sbin/sge_qmaster"
EXECD = "/usr/sbin/sge_execd"
LIBEXEC = "/usr/lib/gridengine"
PACKAGE_ROOT = "/var/lib/gridengine"
SHARE = "/usr/share/gridengine"
CELL = "test"
MASTER_MEMORY = "2G"  # the master's mem_requested capacity
SLOTS = 2
# EC2-style names the netns resolves, for test instances in 127.0.20.0/24.
NODE_ADDRESSES = tuple(f"127.0.20.{i}" for i in range(1, 21))
_INSTANCES = itertools.count(1)


class GridEngine:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.sge_root = tmp / "root"
        # Unique per instance: a test module that imports the session fixture gets its own.
        self.netns = f"ge-test-{os.getpid()}-{next(_INSTANCES)}"
        self.master_host = socket.gethostname()
        self.env = {"SGE_ROOT": str(self.sge_root), "SGE_CELL": CELL}
        self.prefix = ("ip", "netns", "exec", self.netns)
        self.log = tmp / "daemons.log"
        self._netns_made = False
        self._qmaster: subprocess.Popen | None = None
        self._execd: subprocess.Popen | None = None

    # use

    def run(
        self, *argv: str, check: bool = True, timeout: float = 30
    ) -> subprocess.CompletedProcess:
        """Run a Grid Engine command (or any command) inside the namespace, with the cell's env."""
        result = subprocess.run(
            [*self.prefix, *argv],
            env={**os.environ, **self.env, "EDITOR": "false"},
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

    def run_with_file(self, *argv: str, text: str) -> subprocess.CompletedProcess:
        path = self.tmp / f"input-{time.monotonic_ns()}.txt"
        path.write_text(text)
        try:
            return self.run(*argv, str(path))
        finally:
            path.unlink(missing_ok=True)

    def client(self, **kwargs) -> SgeClient:
        """The controller's client for this Grid Engine."""
        return SgeClient(
            sge_root=str(self.sge_root),
            cell=CELL,
            prefix=self.prefix,
            tmp_dir=str(self.tmp),
            **kwargs,
        )

    def delete_all_jobs(self, wait: float = 10.0) -> None:
        self.run("qdel", "-f", "-u", "*", check=False)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not self.run("qstat", "-u", "*", check=False).stdout.strip():
                return
            time.sleep(0.2)

    # start and stop

    def start(self) -> None:
        for path in (QMASTER, EXECD, f"{LIBEXEC}/spoolinit", f"{LIBEXEC}/qconf"):
            if not os.path.exists(path):
                raise ServerStartError(
                    f"Grid Engine is not installed ({path} is missing): run scripts/test, which "
                    "installs gridengine-master gridengine-exec gridengine-client"
                )
        if os.geteuid() != 0:
            raise ServerStartError("the Grid Engine tests need root (ip netns, /etc/netns)")
        self._make_netns()
        self._make_cell()
        self._qmaster = procs.spawn(
            [*self.prefix, QMASTER], self.log, env={**os.environ, **self.env, "SGE_ND": "1"}
        )
        self._wait(
            "sge_qmaster answers",
            lambda: self.run("qconf", "-sh", check=False).returncode == 0,
            self._qmaster,
        )
        self._configure()
        self._execd = procs.spawn(
            [*self.prefix, EXECD], self.log, env={**os.environ, **self.env, "SGE_ND": "1"}
        )
        self._wait("sge_execd reports its load", self._execd_up, self._execd)

    def stop(self) -> None:
        try:
            if self._qmaster is not None and self._qmaster.poll() is None:
                self.delete_all_jobs()
        finally:
            procs.stop(self._execd, timeout=5)
            procs.stop(self._qmaster, timeout=3)  # a throwaway cell: no need for its 6 s shutdown
            if self._netns_made:
                subprocess.run(["ip", "netns", "delete", self.netns], check=False)
                shutil.rmtree(f"/etc/netns/{self.netns}", ignore_errors=True)

    def _make_netns(self) -> None:
        result = subprocess.run(
            ["ip", "netns", "add", self.netns], capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            raise ServerStartError(f"ip netns add {self.netns} failed: {result.stderr.strip()}")
        self._netns_made = True
        etc = Path("/etc/netns", self.netns)
        etc.mkdir(parents=True, exist_ok=True)
        lines = [f"127.0.0.1 {self.master_host} localhost", "::1 localhost"]
        lines += [f"{a} ip-{a.replace('.', '-')}" for a in NODE_ADDRESSES]
        (etc / "hosts").write_text("\n".join(lines) + "\n")
        self.run("ip", "link", "set", "lo", "up")

    def _make_cell(self) -> None:
        common = self.sge_root / CELL / "common"
        common.mkdir(parents=True)
        for sub in ("bin", "lib", "utilbin", "util"):
            (self.sge_root / sub).symlink_to(f"{PACKAGE_ROOT}/{sub}")
        spool = self.tmp / "spool"
        (spool / "qmaster").mkdir(parents=True)
        (spool / "execd").mkdir()
        (common / "bootstrap").write_text(
            "admin_user none\n"
            "default_domain none\n"
            "ignore_fqdn false\n"
            "spooling_method classic\n"
            "spooling_lib libspoolc\n"
            f"spooling_params {common};{spool}/qmaster\n"
            "binary_path /usr/sbin\n"
            f"qmaster_spool_dir {spool}/qmaster\n"
            "security_mode none\n"
            "listener_threads 2\nworker_threads 2\nscheduler_threads 1\n"
        )
        (common / "act_qmaster").write_text(self.master_host + "\n")
        settings = {
            "execd_spool_dir": str(spool / "execd"),
            "min_uid": "0",
            "min_gid": "0",
            "load_report_time": "00:00:02",
        }
        conf = []
        for line in Path(SHARE, "default-configuration").read_text().splitlines():
            key = line.split()[0] if line.strip() and not line.startswith("#") else ""
            conf.append(f"{key} {settings[key]}" if key in settings else line)
        global_conf = self.tmp / "global"
        global_conf.write_text("\n".join(conf) + "\n")
        spool_params = f"{common};{spool}/qmaster"
        for argv in (
            (f"{LIBEXEC}/spoolinit", "classic", "libspoolc", spool_params, "init"),
            (f"{LIBEXEC}/spooldefaults", "configuration", str(global_conf)),
            (f"{LIBEXEC}/spooldefaults", "complexes", f"{SHARE}/util/resources/centry"),
            (f"{LIBEXEC}/spooldefaults", "usersets", f"{SHARE}/util/resources/usersets"),
            (f"{LIBEXEC}/spooldefaults", "managers", "root"),
        ):
            result = self.run(*argv, check=False)
            if result.returncode != 0:
                raise ServerStartError(
                    f"{' '.join(argv)} exited {result.returncode}: {result.stdout}{result.stderr}"
                )

    def _configure(self) -> None:
        master = self.master_host
        self.run("qconf", "-as", master)
        complexes = self.run("qconf", "-sc").stdout
        self.run_with_file(
            "qconf", "-Mc", text=complexes + "mem_requested mem_requested MEMORY <= YES YES 0 0\n"
        )
        sched = self.run("qconf", "-ssconf").stdout
        sched = _set_fields(
            sched, schedule_interval="0:0:1", flush_submit_sec="1", flush_finish_sec="1"
        )
        self.run_with_file("qconf", "-Msconf", text=sched)
        self.run_with_file(
            "qconf",
            "-Ae",
            text=f"hostname {master}\ncomplex_values mem_requested={MASTER_MEMORY}\n"
            "load_scaling NONE\nuser_lists NONE\nxuser_lists NONE\nprojects NONE\n"
            "xprojects NONE\nusage_scaling NONE\nreport_variables NONE\n",
        )
        queue = _set_fields(
            self.run("qconf", "-sq").stdout,
            qname="all.q",
            hostlist=master,
            pe_list="NONE",
            slots=str(SLOTS),
            # A loaded test machine must not put the queue in alarm (np_load_avg > 1.75).
            load_thresholds="NONE",
        )
        self.run_with_file("qconf", "-Aq", text=queue)

    def _execd_up(self) -> bool:
        out = self.run("qstat", "-f", "-u", "*", check=False).stdout
        line = next(
            (ln for ln in out.splitlines() if ln.startswith(f"all.q@{self.master_host}")), ""
        )
        # The state column ("au": alarm, unknown) is empty once execd has reported its load.
        return bool(line) and len(line.split()) == 5

    def _wait(self, what: str, ready, process: subprocess.Popen, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise ServerStartError(f"Grid Engine: waiting until {what}, it exited", self.log)
            if ready():
                return
            time.sleep(0.2)
        raise ServerStartError(
            f"Grid Engine: not {what} within {timeout}s; qmaster messages:\n"
            + read_log(self.tmp / "spool" / "qmaster" / "messages"),
            self.log,
        )


def _set_fields(text: str, **values: str) -> str:
    """A `qconf -s*` listing with some `key value` lines replaced."""
    out = []
    for line in text.splitlines():
        key = line.split()[0] if line.strip() else ""
        out.append(f"{key} {values[key]}" if key in values else line)
    return "\n".join(out) + "\n"


@pytest.fixture(scope="session")
def grid_engine() -> Iterator[GridEngine]:
    tmp = Path(tempfile.mkdtemp(prefix="test-gridengine-"))
    os.chmod(tmp, 0o755)
    engine = GridEngine(tmp)
    try:
        engine.start()
        yield engine
    finally:
        engine.stop()
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
def ge(grid_engine: GridEngine) -> Iterator[GridEngine]:
    """The session's Grid Engine with no job left from before, and none left after."""
    grid_engine.delete_all_jobs()
    try:
        yield grid_engine
    finally:
        grid_engine.delete_all_jobs()
