"""Start a server process with its output in a file, and stop it by PID."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from tests.harness.net import ServerStartError


def spawn(argv: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start `argv` with stdout and stderr appended to `log`; fail the test if it cannot run."""
    with open(log, "ab") as out:
        try:
            return subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        except OSError as exc:
            raise ServerStartError(f"cannot run {argv[0]}: {exc}", log) from exc


def stop(process: subprocess.Popen | None, timeout: float = 10.0) -> None:
    """SIGTERM the process by PID, then SIGKILL it if it lingers; always reaps it."""
    if process is None or process.poll() is not None:
        return
    os.kill(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=timeout)
