"""Taking instances out: drains, terminations and abandoned spot requests (FleetReconciler's).

A slave in service leaves renderfarm.conf first (DrainSlave); its drain delay runs from the
rewrite that no longer lists it (RenderfarmWritten), or UNLIST_GRACE later if that never comes, so
a writer gone silent never leaks an instance. But while the writer says it cannot write the file
(RenderfarmWriteFailed: a read-only or full directory) such a slave is held, draining, not
terminated: the file would list an ended instance, whose address EC2 may give to another. It goes
once a rewrite drops it; at teardown it goes anyway (the writer reports the stale file).
Then TerminateInstances; "not found" about an instance launched moments ago is EC2's lag, so it is
asked again; one asked to end that a describe still shows alive TERMINATE_RESEND_SECONDS later is
asked again too. A spot request left open past request_timeout is cancelled and its type and
zone cool down.
"""

from __future__ import annotations

import math
from typing import Any
from urllib.parse import urlsplit

from controller.cloud.port import FleetView
from controller.messages import LostReason, RenderfarmWriteFailed, RenderfarmWritten
from controller.policy.fleet_plans import (
    NOT_FOUND_RETRY_SECONDS,
    UNLIST_GRACE,
    CancelCall,
    Plan,
    TerminateCall,
    Tracked,
    outcome,
)
from controller.policy.lifecycle import Phase

# What the RenderfarmWriter says about renderfarm.conf (for a pool that drains by unlisting).
UNLISTING_NEWS = (RenderfarmWritten, RenderfarmWriteFailed)


class RetirePlans:
    """FleetReconciler's part that retires instances (it owns the state these methods use)."""

    tracked: dict[Any, Tracked]
    unlist_failed_at: float | None = None  # the writer's last "cannot write" (loop time)
    _draining: tuple[int, bool] = (-1, False)  # (FleetViews.changes, any draining) last looked

    def _drain(self, t: Tracked, reason: LostReason, delay: float | None) -> None:
        """Take it out of service now (a slave leaves renderfarm.conf, a node Grid Engine);
        terminate it after `delay` (default: the profile's drain)."""
        if t.phase in (Phase.DRAINING, Phase.TERMINATING, Phase.GONE):
            return
        if self._kept_since_sample(t, reason):
            return  # the sample that chose it again is older than Grid Engine's "busy"
        listed = t.phase is Phase.READY
        if delay is None:
            # Never in service: nothing to drain. In service: let work in flight finish.
            delay = self.profile.drain_seconds() if listed else 0.0
        self._move(t, Phase.DRAINING)
        t.drain_until = self.now() + delay
        if listed and self.profile.drain_after_unlisting:
            # Unlist, reload, then terminate, whatever the reason (a lost slave too: its address
            # may go to another instance while GBrowse still sends it renders). The delay runs
            # once GBrowse stops sending it renders (see _unlisted).
            t.unlist_delay = delay
            t.drain_until += UNLIST_GRACE
        t.down_reason = reason
        self._await_release(t, reason)  # a node's scale-in waits for Grid Engine's word
        self.publish(
            self.profile.drain_type(
                at=self.now(), instance_id=t.instance_id, address=t.address, reason=reason
            )
        )
        self.note(
            "info",
            f"{self.role}.draining",
            instance_id=t.instance_id,
            reason=str(reason),
            delay=delay,
        )

    def _renderfarm_news(self, msg: RenderfarmWritten | RenderfarmWriteFailed) -> None:
        if isinstance(msg, RenderfarmWriteFailed):
            self.unlist_failed_at = self.now()
        else:
            self.unlist_failed_at = None
            self._unlisted(msg.addresses)

    def _unlisted(self, urls: tuple[str, ...]) -> None:
        """renderfarm.conf was rewritten (and Apache reloaded): the drain delay of each drained
        slave it no longer lists runs from now (never past the grace, unless it was held)."""
        listed = {urlsplit(url).hostname for url in urls}
        for t in self.tracked.values():
            if t.unlist_delay is None or t.address in listed or t.drain_until is None:
                continue
            until = self.now() + t.unlist_delay
            t.drain_until = until if t.held_listed else min(t.drain_until, until)
            t.unlist_delay = None
            self.note(
                "info", f"{self.role}.unlisted", instance_id=t.instance_id, until=t.drain_until
            )

    def next_drain_due(self) -> float:
        """When the next drained instance is due to go (inf when none is). One whose termination
        was tried and failed (or is a dry run) is retried with the next cycle, not before.
        Asked whenever an executor waits: whether any is draining is looked up again only once
        the fleet changed (FleetViews.changes: a phase change is one)."""
        if self._draining[0] != self.changes:
            draining = any(t.phase is Phase.DRAINING for t in self.tracked.values())
            self._draining = (self.changes, draining)
        if not self._draining[1]:
            return math.inf
        return min(
            (
                t.drain_until
                for t in self.tracked.values()
                if t.phase is Phase.DRAINING
                and t.drain_until is not None
                and t.drain_until > self._terminate_tried_at
            ),
            default=math.inf,
        )

    def _hold_listed(self, due: list[Tracked], now: float) -> list[Tracked]:
        """`due` less the drained slaves renderfarm.conf still lists while the writer says it
        cannot write it: they stay draining (outside the band) and are looked at again after
        UNLIST_GRACE; a writer silent that long no longer holds them."""
        failing = self.unlist_failed_at is not None and now - self.unlist_failed_at <= UNLIST_GRACE
        if not failing:
            return due
        held = [t for t in due if t.unlist_delay is not None]
        for t in held:
            t.drain_until = now + UNLIST_GRACE
            if not t.held_listed:
                t.held_listed = True
                self.note(
                    "warning",
                    f"{self.role}.held_listed",
                    instance_id=t.instance_id,
                    address=t.address,
                    why="renderfarm.conf cannot be rewritten without it; kept running, not "
                    "terminated, until it is (see renderfarm.write_failed)",
                )
        return [t for t in due if t.unlist_delay is None]

    def terminate_due(self) -> Plan:
        """Terminate what is due: drains that ended, launches that never became ready within
        request_timeout (abandoned), and terminations EC2 has not carried out (asked again).
        Run at least twice a cycle: one look at the fleet finds nothing due mostly."""
        now = self._terminate_tried_at = self.now()
        due: list[Tracked] = []
        stuck: list[Tracked] = []
        again: list[Tracked] = []
        for t in self.tracked.values():
            phase = t.phase
            if phase is Phase.DRAINING:
                if t.drain_until is not None and t.drain_until <= now:
                    due.append(t)
            elif phase is Phase.BOOTING:
                if now > t.ready_by:
                    stuck.append(t)
            elif phase is Phase.TERMINATING and t.resend:
                again.append(t)
        if not (due or stuck or again):
            return
        due = self._hold_listed(due, now)
        due = self._unanswered(due)  # a scale-in Grid Engine never released is kept
        for t in stuck:
            self.note("warning", "instance.boot_timeout", instance_id=t.instance_id)
            self._cool_down(t.instance_type, t.zone)
            self._move(t, Phase.DRAINING)
            t.down_reason = LostReason.UNREACHABLE  # it never answered the readiness probe
        due += stuck
        for t in again:
            self.note("warning", "instance.terminate_again", instance_id=t.instance_id)
        due += again
        if not due:
            return
        ids = [t.instance_id for t in due]
        result = yield TerminateCall(tuple(ids), dry_run=self.dry_run)
        if self.dry_run:
            self.note(
                "info", "dry_run.would_terminate", instance_ids=ids, check=outcome(result.error)
            )
            return
        if not result.ok:
            assert result.error is not None
            self._provider_error(result.error)
            return
        unknown = set(result.not_found)
        taken = []
        for t in due:
            if t.instance_id in unknown and not t.confirmed and not self._visibility_passed(t):
                # EC2 does not know it yet, so it goes on running: ask again shortly.
                self.note("info", "instance.terminate_not_found_yet", instance_id=t.instance_id)
                t.drain_until = now + NOT_FOUND_RETRY_SECONDS
                continue
            self._move(t, Phase.TERMINATING)
            t.terminate_sent_at, t.resend = now, False
            taken.append(t.instance_id)
        if taken:
            self.note("info", "instances.terminating", instance_ids=taken)

    def _expire_requests(self, view: FleetView) -> Plan:
        """Cancel spot requests left open past request_timeout; their type/zone cools down."""
        now_wall = self.wall_clock()
        timeout = self.config.scaling.request_timeout
        stale = [
            r for r in view.requests if r.state == "open" and now_wall - r.created_at > timeout
        ]
        if not stale:
            return
        for r in stale:
            self._cool_down(r.instance_type, r.zone)
        ids = [r.request_id for r in stale]
        result = yield CancelCall(tuple(ids), dry_run=self.dry_run)
        self.note("warning", "requests.cancelled_unfilled", request_ids=ids, ok=result.ok)
        if result.ok and not self.dry_run:
            self.pending_requests = max(0, self.pending_requests - len(ids))
