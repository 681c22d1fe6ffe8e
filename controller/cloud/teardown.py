"""Ordered teardown of a fleet: cancel its spot requests, terminate and wait, delete its volumes
and groups.

The order matters on real EC2: an open request cancelled first cannot fill behind our back, and a
security group can be deleted only once no instance uses it. The fleet is found by its tag, as
at adoption, so this works for a fleet whose controller is long gone (`controller teardown`) as
well as at the end of `controller run`. A request that filled between the read and the cancel
shows up on the next read, so the steps repeat (a few rounds) until a read finds nothing alive.

EC2's reads lag its launches: an instance launched moments ago may be missing from the read and
unknown to TerminateInstances (InvalidInstanceID.NotFound) for a while. The caller passes the ids
it launched (`known_ids`); those the read does not show are terminated all the same, and asked
again until EC2 takes them or VISIBILITY_SECONDS pass, and only then is the fleet "clean".

Only groups and volumes tagged with this fleet are ever deleted; one not tagged so (the user's
`security_group`, another fleet's) is never touched, even when named as owned.

Volumes made at launch go with their instance (DeleteOnTermination); one that outlived it (an
instance ended without it, a volume made by hand or by an older version) is deleted once the
instances are gone. One still attached to an ended instance of the fleet comes free moments later
(VolumeInUse until then), so the volumes are read again, on a backoff, until none is left
attached or VOLUME_WAIT (within the teardown's timeout) passes. One attached to an instance that
is not the fleet's is left and named. Staging volumes (`controller:role=staging`) are the staging
sweep's (controller.cloud.staging_leftovers), which `controller teardown` runs next.
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
    Volume,
)
from controller.config.schema import Config
from controller.messages import ErrorKind, InstanceId, RequestId, Role
from controller.runtime.backoff import backoff_delay

OPEN_REQUEST_STATES = ("open", "active")
ROUNDS = 3  # reads of the fleet; a second one normally finds nothing left
SHOWN_IDS = 10  # ids named in one progress line
UNSEEN_RETRY_DELAYS = (2.0, 4.0, 8.0, 15.0)  # asking again to end what EC2 does not know yet
TRANSIENT = frozenset({ErrorKind.THROTTLED, ErrorKind.UNAVAILABLE})  # worth asking again
TRANSIENT_RETRY_DELAYS = (1.0, 2.0, 4.0, 8.0, 15.0)
VOLUME_DELAYS = (1.0, 2.0, 4.0, 8.0, 15.0)  # reading again for volumes still attached
VOLUME_WAIT = 300.0  # EC2 detaches an ended instance's volumes within seconds to minutes
GONE_VOLUME_STATES = ("deleting", "deleted")


@dataclass(frozen=True, slots=True, kw_only=True)
class TeardownReport:
    """What is left of the fleet after teardown; `clean` when nothing is."""

    instances: tuple[InstanceId, ...] = ()  # not yet terminated
    requests: tuple[RequestId, ...] = ()  # still open
    security_groups: tuple[str, ...] = ()  # the fleet's groups not deleted
    volumes: tuple[str, ...] = ()  # the fleet's volumes not deleted
    unread: tuple[str, ...] = ()  # what could not be listed, e.g. "volumes"
    errors: tuple[ProviderError, ...] = ()  # every provider error met on the way
    verified: bool = False  # a read of the fleet confirmed the instances and requests

    @property
    def clean(self) -> bool:
        left = self.instances or self.requests or self.security_groups or self.volumes
        return self.verified and not (left or self.unread)

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
        if self.volumes:
            parts.append(f"{len(self.volumes)} volume(s) {_ids(self.volumes)}")
        parts += [f"the fleet's {what} could not be listed" for what in self.unread]
        return "left: " + "; ".join(parts)


async def teardown_fleet(
    cloud: Cloud,
    fleet: str,
    *,
    owned_group_id: str | None = None,
    keep_group_ids: Sequence[str] = (),
    keep_volume_ids: Sequence[str] = (),
    delete_fleet_groups: bool = True,
    progress: Callable[[str], None] = lambda line: None,
    timeout: float = 600.0,
    poll_interval: float = 5.0,
    dry_run: bool = False,
    known_ids: Sequence[InstanceId] = (),
) -> TeardownReport:
    """Tear the fleet down in order and report what is left (module docstring: the volumes).

    `owned_group_id`: the group the controller created (deleted if tagged with the fleet).
    `delete_fleet_groups`: also delete every other group tagged with the fleet.
    `keep_group_ids`: never deleted (the user's configured group).
    `keep_volume_ids`: never deleted, tagged or not (a cluster's `volume_id`, the user's data).
    `timeout` bounds the wait for termination and for volumes to come free (at most VOLUME_WAIT
    of it); each step's outcome goes to `progress`.
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
    ours = set(unseen)  # every instance of the fleet seen: volumes attached to them come free

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
        ours |= shown
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

    unread: list[str] = []
    volumes_left: tuple[str, ...] = ()
    if verified and not alive:
        volumes_left, read = await _delete_volumes(
            cloud,
            fleet,
            frozenset(ours),
            min(deadline, loop.time() + VOLUME_WAIT),
            keep=frozenset(keep_volume_ids),
            dry_run=dry_run,
            errors=errors,
            progress=progress,
        )
        unread += [] if read else ["volumes"]
    candidates, read = await _groups_to_delete(
        cloud, fleet, owned_group_id, keep_group_ids, delete_fleet_groups, errors, progress
    )
    unread += [] if read else ["security groups"]
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
        volumes=volumes_left,
        unread=tuple(unread),
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
) -> tuple[list[SecurityGroup], bool]:
    """The fleet's groups that may go (tagged with the fleet and not kept), and False when the
    fleet's groups could not be listed."""
    found: dict[str, SecurityGroup] = {}
    read = True
    if delete_fleet_groups:
        groups, error = await cloud.fleet_security_groups(fleet)
        if error is not None:
            errors.append(error)
            progress(f"cannot list the fleet's security groups: {_error(error)}")
            read = False
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
    return [g for g in found.values() if g.fleet == fleet], read


def configured_volume_ids(config: Config) -> tuple[str, ...]:
    """The volumes the config names (`[volume.X] volume_id`): the user's, never torn down."""
    return tuple(v.volume_id for v in config.volumes if v.volume_id)


@dataclass(frozen=True, slots=True)
class VolumeSort:
    """The fleet's volumes by what teardown does with them (sort_volumes)."""

    free: tuple[Volume, ...] = ()  # to delete now
    waiting: tuple[str, ...] = ()  # still attached to an ended instance of the fleet, or creating
    foreign: tuple[Volume, ...] = ()  # attached to an instance not of the fleet: left


def sort_volumes(
    volumes: Sequence[Volume], ours: frozenset[str], keep: frozenset[str] = frozenset()
) -> VolumeSort:
    """Sort what fleet_volumes read, once the fleet's instances (`ours`) have ended. Staging
    volumes are the staging sweep's; those in `keep` (volumes the config names) are the user's;
    one attached with DeleteOnTermination goes with its instance; deleting and deleted ones are
    gone."""
    free: list[Volume] = []
    waiting: list[str] = []
    foreign: list[Volume] = []
    for volume in volumes:
        if volume.role == Role.STAGING or volume.state in GONE_VOLUME_STATES:
            continue
        if volume.volume_id in keep:
            continue
        if volume.state == "in-use" and not set(volume.attached_to) <= ours:
            foreign.append(volume)
        elif volume.state == "in-use" and volume.goes_with_instance:
            continue
        elif volume.state in ("in-use", "creating"):
            waiting.append(volume.volume_id)
        else:  # available, error
            free.append(volume)
    return VolumeSort(tuple(free), tuple(waiting), tuple(foreign))


async def _delete_volumes(
    cloud: Cloud,
    fleet: str,
    ours: frozenset[str],
    give_up: float,
    *,
    keep: frozenset[str] = frozenset(),
    dry_run: bool,
    errors: list[ProviderError],
    progress: Callable[[str], None],
) -> tuple[tuple[str, ...], bool]:
    """Delete the fleet's volumes once its instances (`ours`) have ended, reading again while one
    is still attached to them until `give_up` (loop time); the ids left, and False when the
    volumes could not be listed."""
    loop = asyncio.get_running_loop()
    refused: set[str] = set()
    attempt = 0
    while True:
        volumes, error = await _retrying(
            partial(cloud.fleet_volumes, fleet), give_up, progress, error_of=lambda read: read[1]
        )
        if error is not None:
            errors.append(error)
            progress(f"cannot list the fleet's volumes: {_error(error)}")
            return (), False
        todo = sort_volumes(volumes, ours, keep)
        busy = list(todo.waiting)
        for volume in (v for v in todo.free if v.volume_id not in refused):
            progress(f"deleting volume {volume.volume_id} ({volume.size_gib} GiB, {volume.state})")
            result = await cloud.delete_volume(volume.volume_id, dry_run=dry_run)
            error = result.error
            if not dry_run and error and (error.code == "VolumeInUse" or error.kind in TRANSIENT):
                busy.append(volume.volume_id)  # attached again, or EC2 busy: the next round
            elif not _note(result, errors, progress) or dry_run:
                refused.add(volume.volume_id)
        delay = backoff_delay(VOLUME_DELAYS, attempt)
        if busy and not dry_run and loop.time() + delay <= give_up:
            progress(f"waiting {delay:.0f}s for volume(s) {_ids(busy)}: still attached")
            await asyncio.sleep(delay)
            attempt += 1
            continue
        if busy and not dry_run:
            progress(
                f"volume(s) {_ids(busy)} still attached: run the teardown again later, or "
                "delete them by hand once detached"
            )
        for volume in todo.foreign:
            progress(
                f"volume {volume.volume_id} kept: attached to {_ids(volume.attached_to)}, not "
                f"an instance of fleet {fleet}; detach it, then run the teardown again"
            )
        present = {v.volume_id for v in volumes}
        left = [*(v for v in refused if v in present), *busy, *(v.volume_id for v in todo.foreign)]
        return tuple(dict.fromkeys(left)), True


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
    step: Callable[[], Awaitable[Any]],
    deadline: float,
    progress: Callable[[str], None],
    error_of: Callable[[Any], ProviderError | None] = lambda result: result.error,
) -> Any:
    """`step()` (a describe, cancel or terminate) until it is not throttled or unavailable, on a
    growing backoff, while the deadline allows: a teardown must not give up on a busy EC2."""
    loop = asyncio.get_running_loop()
    attempt = 0
    while True:
        result = await step()
        error = error_of(result)
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
    todo = (
        "; `controller iam-policy -c CONFIG` prints what it needs"
        if error.kind is ErrorKind.AUTH
        else ""
    )
    return f"{error.code} ({error.kind}): {error.message}{todo}"


def _ids(ids: Sequence[str]) -> str:
    shown = ", ".join(ids[:SHOWN_IDS])
    more = f" and {len(ids) - SHOWN_IDS} more" if len(ids) > SHOWN_IDS else ""
    return f"[{shown}{more}]"
