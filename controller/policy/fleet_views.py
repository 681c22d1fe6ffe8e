"""What the reconciler shows of its fleet, built again only when the fleet changed
(FleetReconciler's).

The pool decides at every poll and looks at every reading (a month replayed by `simulate` is
hundreds of thousands of each), and mostly its fleet is as it was the time before. So the members
its policy sees, the SlaveViews of FleetObserved, the fleet's cost per hour and the zone of the
next launch are kept with the value of `changes` they were built at, and built again once it
moved. Every change to what they read calls `changed()`: a tracked instance added, dropped, moved
to another phase, given its address or warned of interruption; a price fetched; new launch
settings.
"""

from __future__ import annotations

from typing import Any

from controller.messages import FleetObserved, SlaveView
from controller.policy.fleet_plans import Tracked
from controller.policy.lifecycle import Phase
from controller.policy.pool_profile import PoolMember

_STALE: tuple[int, Any] = (-1, None)


class FleetViews:
    """FleetReconciler's part that shows the fleet (it owns the state these methods use)."""

    tracked: dict[Any, Tracked]
    changes = 0  # moved by changed(): what the views below read is not what it was
    _members: tuple[int, Any] = _STALE  # (changes when built, what it built)
    _slave_views: tuple[int, Any] = _STALE
    _cost: tuple[int, Any] = _STALE
    _zone: tuple[int, Any] = _STALE
    _next_price: tuple[int, Any] = _STALE

    def changed(self) -> None:
        self.changes += 1

    def members(self) -> tuple[PoolMember, ...]:
        if self._members[0] != self.changes:
            members = tuple(
                PoolMember(
                    instance_id=t.instance_id,
                    address=t.address,
                    hostname=t.hostname,
                    launched_at=t.launched_at,
                    ready=t.phase is Phase.READY,
                    draining=t.phase in (Phase.DRAINING, Phase.TERMINATING),
                    interrupted=t.interrupted,
                )
                for t in self.tracked.values()
            )
            self._members = (self.changes, members)
        return self._members[1]

    def publish_fleet(self) -> None:
        if self._slave_views[0] != self.changes:
            views = tuple(
                SlaveView(
                    instance_id=t.instance_id,
                    address=t.address,
                    state=str(t.phase),
                    healthy=t.phase is Phase.READY,
                    since=t.since_wall,
                    instance_type=t.instance_type,
                    zone=t.zone,
                )
                for t in self.tracked.values()
            )
            self._slave_views = (self.changes, views)
        self.publish(
            FleetObserved(
                at=self.now(),
                members=self._slave_views[1],
                pending_requests=self.pending_requests,
                cost_per_hour=self._cost_per_hour(),
            )
        )

    def _cost_per_hour(self) -> float:
        if self._cost[0] != self.changes:
            price = self._price
            cost = sum(
                price(t.instance_type, t.zone)
                for t in self.tracked.values()
                if t.phase is not Phase.GONE
            )
            self._cost = (self.changes, cost)
        return self._cost[1]

    def _any_zone(self) -> str:
        """The zone of some tracked instance: where a price is asked for when none is set."""
        if self._zone[0] != self.changes:
            self._zone = (self.changes, next((t.zone for t in self.tracked.values() if t.zone), ""))
        return self._zone[1]

    def _price_for_next_launch(self) -> float:
        if self._next_price[0] != self.changes:
            price = self._price(self.launch.instance_types[0], self._any_zone())
            self._next_price = (self.changes, price)
        return self._next_price[1]
