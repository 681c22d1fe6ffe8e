"""The life of one fleet instance, as a table of allowed transitions.

SpotPool moves each instance through these states; an edge that is not in the table is a bug and
is refused loudly rather than silently corrupting the fleet's view (Ray autoscaler's InstanceUtil).
Stuck states are bounded by config: `request_timeout` for LAUNCHING/BOOTING, `drain_seconds` for
DRAINING.
"""

from __future__ import annotations

import enum


class Phase(enum.StrEnum):
    BOOTING = "booting"  # EC2 says pending/running; not yet answering the readiness probe
    READY = "ready"  # passed the probe; listed in renderfarm.conf
    DRAINING = "draining"  # left renderfarm.conf; terminated after drain_seconds
    TERMINATING = "terminating"  # TerminateInstances sent; waiting for EC2 to agree
    GONE = "gone"  # terminated, interrupted or vanished: forgotten after this


ALLOWED: dict[Phase, frozenset[Phase]] = {
    Phase.BOOTING: frozenset(
        {
            Phase.READY,  # the readiness probe passed on every port
            Phase.DRAINING,  # scale-in or interruption warning before it was ever listed
            Phase.TERMINATING,  # never became ready within request_timeout, or scale-in
            Phase.GONE,  # reclaimed or terminated by someone else while booting
        }
    ),
    Phase.READY: frozenset(
        {
            Phase.DRAINING,  # scale-in, interruption warning, or lost liveness
            Phase.GONE,  # vanished without warning (interrupted, terminated by hand)
        }
    ),
    Phase.DRAINING: frozenset(
        {
            Phase.TERMINATING,  # drain period over
            Phase.GONE,  # reclaimed during the drain
            Phase.READY,  # a node chosen for scale-in that Grid Engine gave a job: kept
        }
    ),
    Phase.TERMINATING: frozenset({Phase.GONE}),  # EC2 reports terminated (or it vanished)
    Phase.GONE: frozenset(),
}


class IllegalTransition(RuntimeError):
    pass


def check_transition(old: Phase, new: Phase) -> Phase:
    """Return `new` when the edge is allowed; the same phase is always allowed (idempotent)."""
    if old is new or new in ALLOWED[old]:
        return new
    raise IllegalTransition(f"instance cannot go from {old} to {new}")
