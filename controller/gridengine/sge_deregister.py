"""Takes one node out of the head's Grid Engine: the sge plugin's deregistration calls, in order.

Shared by ClusterNodeSetup (a node scaled in, lost or torn down by `run --cluster`) and
`controller teardown --cluster` (a fleet whose controller is gone). Every step is tried even
after one fails, since a later one may still succeed; each tolerates the host being gone already,
so a node that was never registered passes.

A node chosen for scale-in is released only if it is empty (`release_node`): the policy chose
it on a queue sample that may be older than Grid Engine's last dispatch, so its queue instance is
disabled first (no new job can start there), then qstat is read again for that host. A job
running (or slots reserved) there keeps the node: its queue is enabled again (unless it was
disabled before) and the scale-in is dropped. Only an empty node is deregistered.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from controller.config.plugins import SgePlugin
from controller.gridengine.node_plugins import HeadCommand, deregister_commands
from controller.gridengine.sge import SgeParseError, parse_qstat
from controller.gridengine.sge_client import SgeClient, SgeError

# What qmod says about a queue instance Grid Engine does not have (the host never registered).
GONE = ("does not exist", "invalid queue", "can't resolve")
ALREADY_DISABLED = "already in the specified state"


@dataclass(frozen=True, slots=True)
class Release:
    """The outcome of `release_node`: released (deregistered, may be terminated) or kept."""

    released: bool
    reason: str = ""  # why it was kept
    failures: list[str] = field(default_factory=list)  # deregistration steps that failed


async def run_head_command(sge: SgeClient, command: HeadCommand) -> None:
    """One Grid Engine call on the head; SgeError when it fails."""
    program, *args = command.argv
    if command.file_text is None:
        await sge.run(program, *args, ok_if=command.ok_if)
    else:
        await sge.run_with_file(program, *args, text=command.file_text, ok_if=command.ok_if)


async def deregister_node(
    sge: SgeClient, plugin: SgePlugin, hostname: str, *, disabled: bool = False
) -> list[str]:
    """Disable (unless `disabled` already), unlist and delete `hostname`; the reasons of the
    steps that failed (empty: it is out of Grid Engine)."""
    failures = []
    for command in deregister_commands(plugin, hostname):
        if disabled and command.argv[0] == "qmod":
            continue
        try:
            await run_head_command(sge, command)
        except SgeError as exc:
            failures.append(f"{command.what} on the head: {exc}")
    return failures


async def release_node(sge: SgeClient, plugin: SgePlugin, hostname: str) -> Release:
    """Disable the node's queue instance, look again, and deregister it only if it is empty."""
    instance = f"{plugin.queue}@{hostname}"
    try:
        said = await sge.run("qmod", "-d", instance, ok_if=GONE)
    except SgeError as exc:
        return Release(False, f"cannot disable {instance}, so it may still get jobs: {exc}")
    unknown = any(marker in said for marker in GONE)
    try:
        jobs = await _jobs_on(sge, hostname)
    except (SgeError, SgeParseError) as exc:
        if unknown:  # the qmaster answered that it has no such queue instance: none of ours
            return Release(True, failures=await deregister_node(sge, plugin, hostname))
        reason = f"cannot tell whether a job runs on {hostname}: {exc}"
        return Release(False, reason + await _enable(sge, instance, said))
    if jobs:
        reason = f"{jobs} slot(s) in use on {hostname} after {instance} was disabled"
        return Release(False, reason + await _enable(sge, instance, said))
    return Release(True, failures=await deregister_node(sge, plugin, hostname, disabled=True))


async def _jobs_on(sge: SgeClient, hostname: str) -> int:
    """Slots used or reserved on `hostname` in any queue (0 when no queue has it)."""
    try:
        text = await sge.run("qstat", "-f", "-xml", "-u", "*", "-s", "rs", "-q", f"*@{hostname}")
    except SgeError as exc:
        if not exc.output.strip():  # Grid Engine's silent exit 1: no queue instance matches
            return 0
        raise
    return sum(
        i.slots_used + i.slots_reserved for i in parse_qstat(text).instances if i.host == hostname
    )


async def _enable(sge: SgeClient, instance: str, disabling_said: str) -> str:
    """Enable `instance` again, unless it was disabled before we came (the operator's doing);
    "" or what went wrong, to add to the reason. Left disabled, the node gets no new job and
    the policy removes it once idle, or the next setup of the node enables it."""
    if ALREADY_DISABLED in disabling_said:
        return f"; {instance} stays disabled, as it was before"
    try:
        await sge.run("qmod", "-e", instance)
    except SgeError as exc:
        return f"; enabling {instance} again failed: {exc}"
    return ""
