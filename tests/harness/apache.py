"""A private Apache httpd with mod_status, the load source the controller samples.

It gets its own ServerRoot in a temp dir (world-readable, because the workers run as www-data
when the tests run as root), listens on 127.0.0.1 at a free port, and is stopped by PID.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import procs
from tests.harness.net import ServerStartError, free_port, read_log, wait_for_port

APACHE = "/usr/sbin/apache2"
AB = "/usr/bin/ab"
MODULES = "/usr/lib/apache2/modules"

CONFIG = """\
ServerRoot "{root}"
ServerName 127.0.0.1
Listen 127.0.0.1:{port}
PidFile "{root}/run/httpd.pid"
DefaultRuntimeDir "{root}/run"
ErrorLog "{root}/logs/error.log"
LogLevel warn
{user}
LoadModule mpm_event_module {modules}/mod_mpm_event.so
LoadModule authz_core_module {modules}/mod_authz_core.so
LoadModule authz_host_module {modules}/mod_authz_host.so
LoadModule dir_module {modules}/mod_dir.so
LoadModule status_module {modules}/mod_status.so
ExtendedStatus On
StartServers 1
ServerLimit 2
ThreadsPerChild 16
MaxRequestWorkers 32
DocumentRoot "{root}/htdocs"
DirectoryIndex index.html
<Directory "{root}/htdocs">
    Require all granted
</Directory>
<Location "/server-status">
    SetHandler server-status
    Require ip 127.0.0.1
</Location>
"""


class Apache:
    """One httpd; `start()` again after `stop()` reuses the same port."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.status_url = f"{self.base_url}/server-status?auto"
        self.log = root / "logs" / "stdout.log"
        self._process: subprocess.Popen | None = None
        self._loads: list[LoadHandle] = []
        self._write_tree()

    def _write_tree(self) -> None:
        for sub in ("run", "logs", "htdocs"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        (self.root / "htdocs" / "index.html").write_text("<html><body>test page</body></html>\n")
        user = "User www-data\nGroup www-data" if os.geteuid() == 0 else ""
        config = CONFIG.format(root=self.root, port=self.port, user=user, modules=MODULES)
        (self.root / "httpd.conf").write_text(config)
        for path in [self.root, *self.root.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)

    def start(self) -> None:
        if not Path(APACHE).exists():
            raise ServerStartError(f"{APACHE} is missing: install apache2 (scripts/test does)")
        argv = [APACHE, "-d", str(self.root), "-f", "httpd.conf", "-DFOREGROUND"]
        self._process = procs.spawn(argv, self.log)
        try:
            wait_for_port(
                "127.0.0.1",
                self.port,
                alive=lambda: self._process.poll() is None,
                log=self.root / "logs" / "error.log",
            )
        except ServerStartError as exc:
            procs.stop(self._process)
            raise ServerStartError(f"{exc}\n--- {self.log} ---\n{read_log(self.log)}") from None

    def stop(self) -> None:
        procs.stop(self._process)
        self._process = None

    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def close(self) -> None:
        """Stop every background load and the server."""
        for load in self._loads:
            load.stop()
        self.stop()

    def status(self) -> str:
        """The raw `/server-status?auto` text (this fetch itself counts as an access)."""
        with urllib.request.urlopen(self.status_url, timeout=10) as response:
            return response.read().decode()

    def total_accesses(self) -> int:
        match = re.search(r"^Total Accesses: (\d+)$", self.status(), re.MULTILINE)
        assert match, f"no Total Accesses in {self.status_url}"
        return int(match.group(1))

    def drive_load(self, requests: int, concurrency: int = 4) -> None:
        """Run `ab` to completion against the index page; fail the test if ab fails."""
        log = self.root / "logs" / "ab.log"
        process = procs.spawn(self._ab_argv(requests, concurrency), log)
        try:
            code = process.wait(timeout=120)
        finally:
            procs.stop(process)
        assert code == 0, f"ab exited {code}\n{read_log(log)}"

    def drive_load_background(self, requests: int = 10_000_000, concurrency: int = 4) -> LoadHandle:
        """Start `ab` and return at once; `.stop()` the handle (the fixture also does)."""
        process = procs.spawn(self._ab_argv(requests, concurrency), self.root / "logs" / "ab.log")
        handle = LoadHandle(process)
        self._loads.append(handle)
        return handle

    def _ab_argv(self, requests: int, concurrency: int) -> list[str]:
        if not Path(AB).exists():
            raise AssertionError(f"{AB} is missing: install apache2-utils (scripts/test does)")
        # -r: keep going on socket errors, so a restart of httpd does not end the load.
        return [AB, "-q", "-r", "-n", str(requests), "-c", str(concurrency), self.base_url + "/"]


class LoadHandle:
    """A running `ab`; `.stop()` ends it by PID."""

    def __init__(self, process: subprocess.Popen) -> None:
        self._process = process

    def running(self) -> bool:
        return self._process.poll() is None

    def stop(self) -> None:
        procs.stop(self._process)


@pytest.fixture
def apache() -> Iterator[Apache]:
    root = Path(tempfile.mkdtemp(prefix="test-apache-"))
    server = Apache(root)
    try:
        server.start()
        yield server
    finally:
        server.close()
        shutil.rmtree(root, ignore_errors=True)
