"""Small network helpers shared by the harness modules."""

from __future__ import annotations

import socket
import time
from pathlib import Path


def free_port(address: str = "127.0.0.1") -> int:
    """A TCP port free on `address` right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((address, 0))
        return sock.getsockname()[1]


def wait_for_port(
    address: str, port: int, timeout: float = 10.0, alive=lambda: True, log: Path | None = None
) -> None:
    """Block until something accepts on (address, port); fail with the server's log otherwise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            raise ServerStartError(f"server for {address}:{port} exited early", log)
        try:
            with socket.create_connection((address, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.02)
    raise ServerStartError(f"nothing listened on {address}:{port} within {timeout}s", log)


class ServerStartError(AssertionError):
    """A test server did not come up; the message carries its log so the failure says why."""

    def __init__(self, reason: str, log: Path | None = None) -> None:
        text = reason
        if log is not None:
            text += f"\n--- {log} ---\n{read_log(log)}"
        super().__init__(text)


def read_log(path: Path, limit: int = 4000) -> str:
    """The tail of a server log, or a note that it is missing."""
    try:
        data = path.read_text(errors="replace")
    except OSError as exc:
        return f"(no log: {exc})"
    return data[-limit:] or "(empty log)"
