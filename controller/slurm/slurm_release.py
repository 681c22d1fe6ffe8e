"""Takes one dynamic node out of the head's Slurm, only if it is empty, for a scale-in.

The policy chose the node on a queue sample that may be older than Slurm's last allocation, so
the node is drained first (no new job can start there), then sinfo is read again. A CPU still
allocated there (or a job completing) keeps the node: it is resumed (unless it was drained
before we came: the operator's doing) and the scale-in is dropped. An empty drained node is
deleted from Slurm (`scontrol delete`), which slurmctld itself refuses while a job holds it; that
refusal keeps the node too. A node Slurm does not have passes at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from controller.slurm.slurm_client import NODE_BUSY, NODE_GONE, SlurmClient, SlurmError
from controller.slurm.slurm_queue import SlurmNode, SlurmParseError, find_node, parse_sinfo

DRAIN_REASON = "controller scale-in"


@dataclass(frozen=True, slots=True)
class Release:
    """The outcome of `release_node`: released (out of Slurm, may be terminated) or kept."""

    released: bool
    reason: str = ""  # why it was kept
    failures: list[str] = field(default_factory=list)  # steps that failed on an empty node


async def release_node(slurm: SlurmClient, hostname: str) -> Release:
    """Drain `hostname`, look again, and delete it from Slurm only if it is empty."""
    try:
        before = await _node(slurm, hostname)
    except (SlurmError, SlurmParseError) as exc:
        return Release(False, f"cannot read {hostname}'s state in Slurm: {exc}")
    if before is None:
        return Release(True)  # never joined, or deleted already
    drained_before = "DRAIN" in before.states  # the operator's reason is left as it is
    if not drained_before:
        try:
            said = await slurm.drain(hostname, DRAIN_REASON)
        except SlurmError as exc:
            return Release(False, f"cannot drain {hostname}, so it may still get jobs: {exc}")
        if NODE_GONE in said:
            return Release(True)
    try:
        after = await _node(slurm, hostname)
    except (SlurmError, SlurmParseError) as exc:
        reason = f"cannot tell whether a job runs on {hostname}: {exc}"
        return Release(False, reason + await _resume(slurm, hostname, drained_before))
    if after is None:
        return Release(True)
    if after.busy:
        reason = f"{after.alloc_cpus} CPU(s) in use on {hostname} after it was drained"
        return Release(False, reason + await _resume(slurm, hostname, drained_before))
    try:
        await slurm.delete(hostname)
    except SlurmError as exc:
        if NODE_BUSY in exc.output:
            reason = f"Slurm refused to delete {hostname}: a job holds it"
            return Release(False, reason + await _resume(slurm, hostname, drained_before))
        return Release(True, failures=[f"delete {hostname} from Slurm: {exc}"])
    return Release(True)


async def _node(slurm: SlurmClient, hostname: str) -> SlurmNode | None:
    return find_node(parse_sinfo(await slurm.sinfo()), hostname)


async def _resume(slurm: SlurmClient, hostname: str, drained_before: bool) -> str:
    """Resume `hostname`, unless it was drained before we came; "" or what went wrong, to add
    to the reason. Left drained, the node gets no new job and the policy removes it once idle."""
    if drained_before:
        return f"; {hostname} stays drained, as it was before"
    try:
        await slurm.resume(hostname)
    except SlurmError as exc:
        return f"; resuming {hostname} failed: {exc}"
    return ""
