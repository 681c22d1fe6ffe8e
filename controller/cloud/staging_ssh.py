"""The SSH half of `controller sync-data`: log in to the staging instance, run its commands, rsync.

The instance's host key is made at its first boot, so it cannot be known beforehand. cloud-init
prints the keys (and their fingerprints) on the console; when `console()` shows them, only those
are accepted (a different key is refused before any command runs). When the console shows none,
the key presented at the first connection is trusted and pinned for the rest of the run: rsync's
ssh gets a known_hosts file holding only that key, with StrictHostKeyChecking. While the instance
boots the connection is refused or times out: only OSError is retried; anything SSH itself says
(a refused key, a wrong host key) fails at once, since retrying would hide it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence

import asyncssh

from controller.cloud.staging import StagingError
from controller.cloud.staging_shell import (
    LSBLK,
    PROGRESS_STEP,
    ConsoleKeys,
    console_keys,
    find_device,
    rsync_percent,
)
from controller.runtime.backoff import backoff_delay

Progress = Callable[[str], None]
RETRY_DELAYS = (1.0, 2.0, 4.0, 8.0, 15.0)
COMMAND_TIMEOUT = 600.0  # mkfs of a large volume takes a while
RSYNC_VANISHED = 24  # "some files vanished before they could be transferred": a live directory


async def connect(
    address: str,
    port: int,
    user: str,
    client_key: asyncssh.SSHKey,
    console: Callable[[], Awaitable[str]],
    *,
    timeout: float,
    progress: Progress,
    retry_delays: Sequence[float] = RETRY_DELAYS,
    connect_timeout: float = 15.0,
) -> tuple[asyncssh.SSHClientConnection, str]:
    """Wait for SSH and log in; the connection and the host key it showed ("TYPE BASE64")."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    where = f"{user}@{address}:{port}"
    expected = ConsoleKeys()
    attempt = 0
    while True:
        if not expected.keys:
            expected = console_keys(await console())
        known_hosts = (
            asyncssh.import_known_hosts(
                "".join(f"{address},[{address}]:{port} {key}\n" for key in expected.keys)
            )
            if expected.keys
            else None
        )
        try:
            conn = await asyncssh.connect(
                address,
                port=port,
                username=user,
                client_keys=[client_key],
                known_hosts=known_hosts,
                config=None,
                agent_path=None,
                gss_auth=False,
                gss_kex=False,
                connect_timeout=connect_timeout,
            )
        except OSError as exc:  # refused, unreachable, timed out: still booting
            left = deadline - loop.time()
            if left <= 0:
                raise StagingError(
                    f"no SSH on {address}:{port} within {timeout:.0f}s (last: "
                    f"{exc.strerror or exc!r}); check that the image runs sshd on that port "
                    "and that this master reaches the staging instance's subnet"
                ) from None
            await asyncio.sleep(min(backoff_delay(retry_delays, attempt), left))
            attempt += 1
            continue
        except asyncssh.PermissionDenied as exc:
            raise StagingError(
                f"{where} refused the key: {exc.reason}; set [sync] ssh_user to the image's "
                "login user (and ssh_key_file to a key it accepts)"
            ) from None
        except asyncssh.HostKeyNotVerifiable as exc:
            raise StagingError(
                f"{where} shows a host key other than the ones its console printed "
                f"({exc.reason}): refusing to connect"
            ) from None
        except asyncssh.Error as exc:
            raise StagingError(f"{where}: {type(exc).__name__}: {exc.reason}") from None
        return conn, _checked_key(conn, expected, where, progress)


def _checked_key(
    conn: asyncssh.SSHClientConnection, expected: ConsoleKeys, where: str, progress: Progress
) -> str:
    key = conn.get_server_host_key()
    if key is None:  # only without host key checking and no key at all: never from sshd
        conn.close()
        raise StagingError(f"{where} showed no host key")
    public = " ".join(key.export_public_key("openssh").decode().split()[:2])
    if expected.keys:
        progress(f"host key of {where} verified against its console output")
    elif expected.fingerprints:
        if key.get_fingerprint("sha256") not in expected.fingerprints:
            conn.close()
            raise StagingError(
                f"{where} shows host key {key.get_fingerprint('sha256')}, not one its console "
                "printed: refusing to connect"
            )
        progress(f"host key of {where} verified against its console fingerprints")
    else:
        progress(
            f"host key of {where} ({key.get_fingerprint('sha256')}) trusted on first use "
            "and pinned for this run (its console shows no host keys yet)"
        )
    return public


async def run(
    conn: asyncssh.SSHClientConnection, what: str, command: str, timeout: float = COMMAND_TIMEOUT
) -> str:
    """Run one command on the staging host; its stdout. A non-zero exit is a StagingError."""
    try:
        async with asyncio.timeout(timeout):
            result = await conn.run(command, check=False)
    except TimeoutError:
        raise StagingError(
            f"{what} on the staging instance: no end within {timeout:.0f}s"
        ) from None
    except (asyncssh.Error, OSError) as exc:
        raise StagingError(
            f"{what} on the staging instance: the SSH session failed: {exc}"
        ) from None
    stdout = _text(result.stdout)
    if result.exit_status != 0:
        said = " ".join((_text(result.stderr) or stdout).split())[-400:] or "no output"
        status = result.exit_status if result.exit_status is not None else result.exit_signal
        raise StagingError(f"{what} on the staging instance exited with {status}: {said}")
    return stdout


async def wait_device(
    conn: asyncssh.SSHClientConnection,
    volume_id: str,
    device: str,
    *,
    timeout: float = 120.0,
    poll: float = 2.0,
) -> str:
    """The data volume's device name on the staging host, once the kernel shows it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        found = find_device(await run(conn, "lsblk", LSBLK), volume_id, device)
        if found:
            return found
        if loop.time() >= deadline:
            raise StagingError(
                f"the data volume {volume_id} did not show up on the staging instance within "
                f"{timeout:.0f}s (looked for {device}, its /dev/xvd name, and an NVMe disk with "
                "its id as serial)"
            )
        await asyncio.sleep(poll)


async def rsync(argv: Sequence[str], progress: Progress) -> None:
    """Run rsync, one progress line each PROGRESS_STEP percent; StagingError when it fails.
    Cancelled, it kills rsync before it returns."""
    try:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    except OSError as exc:
        raise StagingError(f"cannot run {argv[0]}: {exc.strerror or exc}; install rsync") from None
    assert process.stdout is not None and process.stderr is not None
    errors = asyncio.create_task(process.stderr.read())
    try:
        shown = -PROGRESS_STEP
        pending = b""
        while chunk := await process.stdout.read(4096):
            *lines, pending = (pending + chunk).replace(b"\r", b"\n").split(b"\n")
            for line in lines:
                percent = rsync_percent(line.decode(errors="replace"))
                if percent is not None and percent >= shown + PROGRESS_STEP:
                    shown = percent - percent % PROGRESS_STEP
                    progress(f"rsync: {percent}%")
        status = await process.wait()
        said = " ".join((await errors).decode(errors="replace").split())[-400:]
    finally:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
        errors.cancel()
    if status == RSYNC_VANISHED:
        progress(f"rsync: some files vanished while they were copied (live data?): {said}")
    elif status != 0:
        raise StagingError(f"rsync exited with {status}: {said or 'no message'}")
    else:
        progress("rsync: done")


def _text(data: object) -> str:
    if data is None:
        return ""
    return data.decode(errors="replace") if isinstance(data, bytes) else str(data)
