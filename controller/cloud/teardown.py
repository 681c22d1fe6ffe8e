"""Ordered teardown of a fleet: cancel its spot requests, terminate and wait, delete its groups.

The order matters on real EC2: an open request cancelled first cannot fill behind our back, and a
security group can be deleted only once no instance uses it. The fleet is found by its tag, as
at adoption, so this works for a fleet whose controller is long gone (`controller teardown`) as
well as at the end of `controller run`. A request that filled between the read and the cancel
shows up on the next read, so the steps repeat (a few rounds) until a read finds nothing alive.

EC2's reads lag its launches: an instance launched moments ago may be missing from the read and
unknown to TerminateInstances (InvalidInstanceID.NotFound) for a while. The caller passes the ids
it launched (`known_ids`); those the read does not show are terminated all the same, and asked
again until EC2 takes them or VISIBILITY_SECONDS pass, and only then is the fleet "clean".

Only groups tagged with this fleet are ever deleted; a group not tagged so (the user's
`security_group`, another fleet's) is never touched, even when named as owned.
Renderfarm.conf is the caller's first step (slaves leave it before they go), not this module's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from controller.cloud.port import (
    VISIBILITY_SECONDS,
    Cloud,
    InstanceState,
    OpResult,
    ProviderError,
    SecurityGroup,
)
from controller.messages import ErrorKind, InstanceId, RequestId
from controller.runtime.backoff import backoff_delay

OPEN_REQUEST_STATES = ("open", "active")
ROUNDS = 3  # reads of the fleet; a second one normally finds nothing left
SHOWN_IDS = 10  # ids named in one progress line
UNSEEN_RETRY_DELAYS = (2.0, 4.0, 8.0, 15.0)  # asking again to end what EC2 does not know yet
TRANSIENT = frozenset({ErrorKind.THROTTLED, ErrorKind.UNAVAILABLE})  # worth asking again
TRANSIENT_RETRY_DELAYS = (1.0, 2.0, 4.0, 8.0, 15.0)


@dataclass(frozen=True, slots=True, kw_only=True)
class TeardownReport:
    """What is left of the fleet after teardown; `clean` when nothing is."""

    instances: tuple[InstanceId, ...] = ()  # not yet terminated
    requests: tuple[RequestId, ...] = ()  # still open
    security_groups: tuple[str, ...] = ()  # the fleet's groups not deleted
    errors: tuple[ProviderError, ...] = ()  # every provider error met on the way
    verified: bool = False  # a read of the fleet confirmed the instances and requests

    @property
    def clean(self) -> bool:
        return self.verified and not (self.instances or self.requests or self.security_groups)

    def __str__(self) -> str:
        if self.clean:
            return "nothing left"
        parts = []
        if not self.verified:
            parts.append("the fleet could not be read")
        if self.instances:
            parts.append(f"{len(self.instances)} instance(s) {_ids(self.instances)}")
        if self.requests:
            parts.append(f"{len(self.requests)} spot request(s) {_ids(self.requests)}")
        if self.security_groups:
            parts.append(f"security group(s) {_ids(self.security_groups)}")
        return "left: " + "; ".join(parts)


async def teardown_fleet(
    cloud: Cloud,
    fleet: str,
    *,
    owned_group_id: str | None = None,
    keep_group_ids: Sequence[str] = (),
    delete_fleet_groups: bool = True,
    progress: Callable[[str], None] = lambda line: None,
    timeout: float = 600.0,
    poll_interval: float = 5.0,
    dry_run: bool = False,
    known_ids: Sequence[InstanceId] = (),
) -> TeardownReport:
    """Tear the fleet down in order and report what is left.

    `owned_group_id`: the group the controller created (deleted if tagged with the fleet).
    `delete_fleet_groups`: also delete every other group tagged with the fleet.
    `keep_group_ids`: never deleted (the user's configured group).
    `timeout` bounds the wait for termination; each step's outcome goes to `progress`.
    `dry_run`: every mutating call carries DryRun=True (a permission check) and nothing waits.
    `known_ids`: instances the caller launched, which EC2 may not show yet (module docstring).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    errors: list[ProviderError] = []
    alive: tuple[InstanceId, ...] = ()
    requests: tuple[RequestId, ...] = ()
    verified = False
    unseen = tuple(dict.fromkeys(known_ids))  # launched, not yet taken by TerminateInstances

    def again(step: Callable[[], Awaitable[Any]]) -> Awaitable[Any]:
        return _retrying(step, deadline, progress)

    for round_number in range(1, ROUNDS + 1):
        view = await again(partial(cloud.describe_fleet, fleet))
        if view.error is not None:
            errors.append(view.error)
            progress(f"cannot read fleet {fleet}: {_error(view.error)}")
            verified = False
            break
        verified = True
        requests = tuple(r.request_id for r in view.requests if r.state in OPEN_REQUEST_STATES)
        alive = tuple(i.instance_id for i in view.instances if i.state != InstanceState.TERMINATED)
        shown = {i.instance_id for i in view.instances}
        unseen = tuple(i for i in unseen if i not in shown)
        alive += unseen
        if not requests and not alive:
            break
        if round_number == ROUNDS:
            progress(f"fleet {fleet} still changing after {ROUNDS} rounds: giving up")
            break
        if requests:
            progress(f"cancelling {len(requests)} spot request(s) {_ids(requests)}")
            cancelled = await again(partial(cloud.cancel_requests, requests, dry_run=dry_run))
            _note(cancelled, errors, progress)
        if alive:
            progress(f"terminating {len(alive)} instance(s) {_ids(alive)}")
            result = await again(partial(cloud.terminate, alive, dry_run=dry_run))
            if not _note(result, errors, progress):
                break  # nothing is going away: waiting would only burn the timeout
            if not dry_run:
                unseen = await _terminate_unseen(
                    cloud, tuple(i for i in result.not_found if i in unseen), progress
                )
                if unseen:
                    alive = unseen
                    break
        if dry_run:
            break
        if alive:
            left = max(0.0, deadline - loop.time())
            progress(f"waiting up to {left:.0f}s for {len(alive)} instance(s) to terminate")
            alive = await cloud.wait_terminated(alive, timeout=left, poll_interval=poll_interval)
            if alive:
                progress(f"still not terminated after the wait: {_ids(alive)}")
                break
            progress("instances terminated")

    candidates = await _groups_to_delete(
        cloud, fleet, owned_group_id, keep_group_ids, delete_fleet_groups, errors, progress
    )
    groups_left: list[str] = []
    if candidates and (alive or not verified):
        progress("security groups kept: instances of the fleet may still use them")
        groups_left = [g.group_id for g in candidates]
    else:
        for group in candidates:
            progress(f"deleting security group {group.group_id} ({group.name})")
            result = await cloud.delete_security_group(group.group_id, dry_run=dry_run)
            if not _note(result, errors, progress) or dry_run:
                groups_left.append(group.group_id)
    report = TeardownReport(
        instances=alive,
        requests=requests,
        security_groups=tuple(groups_left),
        errors=tuple(errors),
        verified=verified,
    )
    progress(f"teardown of fleet {fleet}: {report}")
    return report


async def _groups_to_delete(
    cloud: Cloud,
    fleet: str,
    owned_group_id: str | None,
    keep_group_ids: Sequence[str],
    delete_fleet_groups: bool,
    errors: list[ProviderError],
    progress: Callable[[str], None],
) -> list[SecurityGroup]:
    """The fleet's groups that may go: tagged with the fleet and not kept."""
    found: dict[str, SecurityGroup] = {}
    if delete_fleet_groups:
        groups, error = await cloud.fleet_security_groups(fleet)
        if error is not None:
            errors.append(error)
            progress(f"cannot list the fleet's security groups: {_error(error)}")
        found.update((g.group_id, g) for g in groups)
    if owned_group_id and owned_group_id not in found:
        group = await cloud.describe_security_group(owned_group_id)
        if group is not None and group.fleet == fleet:
            found[group.group_id] = group
        elif group is not None:
            progress(
                f"security group {owned_group_id} kept: it is not tagged controller:fleet={fleet}"
            )
    for group_id in keep_group_ids:
        if found.pop(group_id, None) is not None:
            progress(f"security group {group_id} kept: it is the configured security_group")
    return [g for g in found.values() if g.fleet == fleet]


async def _terminate_unseen(
    cloud: Cloud, ids: tuple[InstanceId, ...], progress: Callable[[str], None]
) -> tuple[InstanceId, ...]:
    """Ask again to terminate launched instances EC2 does not know yet, until it takes them or
    VISIBILITY_SECONDS pass; return those it never took."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + VISIBILITY_SECONDS
    attempt = 0
    while ids:
        delay = backoff_delay(UNSEEN_RETRY_DELAYS, attempt)
        if loop.time() + delay > give_up:
            progress(f"EC2 never knew {_ids(ids)}: check them by hand")
            break
        progress(f"EC2 does not know {_ids(ids)} yet (just launched): asking again in {delay:.0f}s")
        await asyncio.sleep(delay)
        attempt += 1
        result = await cloud.terminate(ids)
        if not result.ok:
            continue  # a throttled or failed call: the same ids, again after the next delay
        ids = tuple(i for i in ids if i in set(result.not_found))
    return ids


async def _retrying(
    step: Callable[[], Awaitable[Any]], deadline: float, progress: Callable[[str], None]
) -> Any:
    """`step()` (a describe, cancel or terminate) until it is not throttled or unavailable, on a
    growing backoff, while the deadline allows: a teardown must not give up on a busy EC2."""
    loop = asyncio.get_running_loop()
    attempt = 0
    while True:
        result = await step()
        error = result.error
        if error is None or error.kind not in TRANSIENT:
            return result
        delay = backoff_delay(TRANSIENT_RETRY_DELAYS, attempt)
        if loop.time() + delay > deadline:
            return result
        progress(f"{error.operation}: {_error(error)}; again in {delay:.0f}s")
        await asyncio.sleep(delay)
        attempt += 1


def _note(result: OpResult, errors: list[ProviderError], progress: Callable[[str], None]) -> bool:
    """Record a step's error; True when the step succeeded (or would, in a dry run)."""
    if result.error is None:
        return True
    errors.append(result.error)
    if result.ok:
        progress(f"dry run: {result.error.operation} would succeed")
    else:
        progress(f"{result.error.operation} failed: {_error(result.error)}")
    return result.ok


def _error(error: ProviderError) -> str:
    return f"{error.code} ({error.kind}): {error.message}"


def _ids(ids: Sequence[str]) -> str:
    shown = ", ".join(ids[:SHOWN_IDS])
    more = f" and {len(ids) - SHOWN_IDS} more" if len(ids) > SHOWN_IDS else ""
    return f"[{shown}{more}]"
