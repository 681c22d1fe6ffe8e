"""Replacing slaves launched from an older spec, one at a time (FleetReconciler's).

Each slave is tagged at launch with what it boots from (`controller:spec`, launch_digest of its
image, data snapshots and user data). After a reload that changes any of them, new launches use
the new spec at once, and the slaves on an older one are replaced gradually, by the rules below;
the tag rebuilds which ones are old after a restart. An instance without the tag (launched by a
controller before the tag existed) counts as current: upgrading the controller replaces nothing.

- One old slave at a time is being replaced, the one launched first, once the one before it
  has gone. The policy sees it as it sees a slave under a spot interruption warning
  (controller.policy.band): gone for scale-out, so its replacement is launched now, held for
  scale-in, and the first removed. The fleet so holds one instance more than the policy wants
  at most, draining ones included (one more spot instance billed; a farm of N turns over in
  about N times a boot, a drain and two polls), and the table's "keep what it has" does not
  grow by it.
- It is retired (unlisted, Apache reloaded, then terminated, as every removal) once the slaves
  that serve without it cover the floor, max(the band's min, the desired count): when its
  replacement is ready, or at once when the fleet holds a surplus. A slave adopted after a
  restart has not passed the probe yet, but may be serving: it waits the same way.
- A scale-in in the meantime removes old slaves first, as far as the floor allows; the policy
  removing the slave being replaced before its replacement serves is held back (that surge is
  not a surplus). Nothing here ever takes the slaves that serve below the floor where the
  policy's own choice would not.

Only the render farm is refreshed: a batch node runs jobs and keeps its spec until it goes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from controller.cloud.port import launch_digest
from controller.messages import LostReason, Role
from controller.policy.fleet_plans import Tracked
from controller.policy.lifecycle import Phase
from controller.policy.pool_profile import PoolMember


@dataclass(frozen=True, slots=True, kw_only=True)
class Slave:
    """What refreshing reads of one instance."""

    instance_id: str
    launched_at: float
    ready: bool  # passed the readiness probe: listed in renderfarm.conf
    leaving: bool  # draining, terminating, or under a spot interruption warning
    old: bool  # launched from another spec than launches use now

    @property
    def serving(self) -> bool:
        return self.ready and not self.leaving


def next_to_replace(slaves: Iterable[Slave]) -> Slave | None:
    """The old slave to replace now: the one launched first (a stable choice from cycle to
    cycle, and after a restart); None while an old one is still leaving (one at a time)."""
    old = [s for s in slaves if s.old]
    if any(s.leaving for s in old):
        return None
    return min(old, key=lambda s: (s.launched_at, s.instance_id), default=None)


def old_first(remove: Sequence[str], slaves: Sequence[Slave], floor: int) -> tuple[str, ...]:
    """The policy's removals with old slaves in place of current ones, as far as the floor allows.

    A pick of an old serving slave that would leave fewer than `floor` serving is dropped (the
    policy took the slave being replaced for a surplus). A current pick is swapped for an old
    slave (booting ones first, then the longest running) when the swap takes no more serving
    slaves, or leaves `floor` serving. Picks under an interruption warning stay.
    """
    by_id = {s.instance_id: s for s in slaves}
    picks = [by_id[i] for i in remove if i in by_id]
    unknown = tuple(i for i in remove if i not in by_id)
    left = sum(s.serving for s in slaves) - sum(p.serving for p in picks)
    for p in reversed(picks[:]):
        if left >= floor:
            break
        if p.old and p.serving:
            picks.remove(p)
            left += 1
    chosen = {p.instance_id for p in picks}
    spare = sorted(
        (s for s in slaves if s.old and not s.leaving and s.instance_id not in chosen),
        key=lambda s: (s.ready, s.launched_at, s.instance_id),
    )
    for n, p in enumerate(picks):
        if p.old or p.leaving:
            continue
        for o in spare:
            change = p.serving - o.serving  # to the count left serving
            if change >= 0 or left + change >= floor:
                picks[n] = o
                spare.remove(o)
                left += change
                break
    return tuple(p.instance_id for p in picks) + unknown


def retire_now(slaves: Sequence[Slave], removed: Iterable[str], floor: int) -> Slave | None:
    """The old slave to retire in this cycle: the next to replace, when the slaves serving
    without it (and without `removed`) still cover `floor`; None otherwise, and None when
    `removed` takes an old slave already (one at a time)."""
    gone = set(removed)
    if any(s.old and s.instance_id in gone for s in slaves):
        return None
    rest = [s for s in slaves if s.instance_id not in gone]
    target = next_to_replace(rest)
    if target is None:
        return None
    others = sum(s.serving for s in rest if s is not target)
    return target if others >= floor else None


class RefreshPlans:
    """FleetReconciler's part that replaces old slaves (it owns the state these methods use)."""

    tracked: dict[Any, Tracked]
    _spec_cache: tuple[Any, str] | None = None  # (launch settings, their digest)
    _refresh: tuple[tuple[Slave, ...], Slave | None] | None = None  # this cycle's, for refreshed
    _old_count = 0  # old slaves at the last cycle (logged when it changes)
    _old_at: tuple[int, int] = (-1, 0)  # (FleetViews.changes, old slaves) when last counted

    def current_spec(self) -> str:
        """The controller:spec tag launches carry now."""
        launch = self.launch
        if self._spec_cache is None or self._spec_cache[0] is not launch:
            digest = launch_digest(launch.image_id, launch.snapshots, launch.user_data)
            self._spec_cache = (launch, digest)
        return self._spec_cache[1]

    def marked(self, members: tuple[PoolMember, ...]) -> tuple[PoolMember, ...]:
        """The policy's view of the pool: the old slave being replaced counts as going away."""
        self._refresh = None
        if self.role is not Role.SLAVE:
            return members
        current = self.current_spec()
        if self._old_at[0] != self.changes:  # the tracked set or the launch settings changed
            old = sum(1 for t in self.tracked.values() if t.spec != current and t.spec)
            self._old_at = (self.changes, old)
        old = self._old_at[1]
        if old != self._old_count:
            self.note("info", "slaves.old_spec", old=old, spec=current)
            self._old_count = old
        if not old:
            return members
        slaves = tuple(_slave(t, current) for t in self.tracked.values())
        target = next_to_replace(slaves)
        self._refresh = (slaves, target)
        if target is None:
            return members
        iid = target.instance_id
        return tuple(replace(m, interrupted=True) if m.instance_id == iid else m for m in members)

    def refreshed(self, decision: Any) -> Any:
        """The policy's decision with old slaves removed first; retires the slave being replaced
        when the floor allows (module docstring)."""
        if self._refresh is None:
            return decision
        slaves, target = self._refresh
        self._refresh = None
        floor = max(decision.band[0], decision.desired)
        remove = old_first(decision.remove, slaves, floor)
        retire = retire_now(slaves, remove, floor)
        if target is not None and target.instance_id in remove:
            # the policy takes the surge for a surplus, and the floor lets it go: retired
            retire, remove = target, tuple(i for i in remove if i != target.instance_id)
        old = sum(s.old and not s.leaving for s in slaves)
        if not old:
            return replace(decision, remove=remove)
        note = f"{old} on an older image or data"
        if retire is not None:
            note += f": {retire.instance_id} retired"
            self._drain(self.tracked[retire.instance_id], LostReason.REPLACED, delay=None)
        elif target is not None:
            note += f": replacing {target.instance_id}"
        return replace(decision, remove=remove, reason=f"{decision.reason}; {note}")


def _slave(t: Tracked, current: str) -> Slave:
    leaving = t.interrupted or t.phase in (Phase.DRAINING, Phase.TERMINATING, Phase.GONE)
    return Slave(
        instance_id=t.instance_id,
        launched_at=t.launched_at,
        ready=t.phase is Phase.READY,
        leaving=leaving,
        old=bool(t.spec) and t.spec != current,
    )
