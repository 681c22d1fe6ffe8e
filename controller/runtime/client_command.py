"""One run of a scheduler's command-line client (qstat, qconf, squeue, scontrol ...), without
blocking: the one place that starts it, bounds it with a timeout, kills and reaps it when it
overruns or the caller is cancelled, and turns each way it can fail into one error line.

controller.gridengine.sge_client and controller.slurm.slurm_client run every call through it,
with their own error class (a ClientError) and their own hints.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping, Sequence


class ClientError(Exception):
    """A client failed, timed out or could not be run: `command` as the user would type it,
    `reason` in one line, and what it printed."""

    def __init__(self, command: Sequence[str], reason: str, output: str = "") -> None:
        self.command = tuple(command)
        self.reason = reason
        self.output = output
        super().__init__(f"`{' '.join(self.command)}` {reason}")


async def run_client(
    argv: Sequence[str],
    *,
    shown: Sequence[str],
    env: Mapping[str, str],
    timeout: float,
    error: type[ClientError],
    missing_hint: str,
    silent_hint: str,
    ok_if: Sequence[str] = (),
    merge_stderr: bool = False,
) -> str:
    """Run `argv`; its stdout (with `merge_stderr`, both streams as written).

    A non-zero exit raises `error(shown, ...)` quoting what it said (stderr, then stdout),
    unless that contains one of `ok_if`: then what it said is returned. A missing program
    names `missing_hint`, no answer within `timeout` seconds `silent_hint`."""
    try:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT if merge_stderr else asyncio.subprocess.PIPE,
            env=dict(env),
            start_new_session=True,
        )
    except FileNotFoundError:
        raise error(shown, f"cannot run: {argv[0]} not found; {missing_hint}") from None
    except OSError as exc:
        raise error(shown, f"cannot run: {exc.strerror or exc}") from None
    try:
        async with asyncio.timeout(timeout):
            out, err = await process.communicate()
    except TimeoutError:
        await _kill(process)
        raise error(shown, f"gave no answer within {timeout:g}s; {silent_hint}") from None
    except asyncio.CancelledError:
        await _kill(process)
        raise
    text = out.decode(errors="replace")
    if process.returncode == 0:
        return text
    said = (err or b"").decode(errors="replace") + text
    if any(marker in said for marker in ok_if):
        return said
    words = " ".join(said.split())[-500:] or "no output"
    raise error(shown, f"exited with {process.returncode}: {words}", said)


async def _kill(process: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError):
        process.kill()
    await process.wait()  # reap it; a client killed by SIGKILL ends at once
