"""What `controller teardown` is about to do, read before it does anything.

The plan is one read of the fleet (instances, spot requests, security groups, volumes). It is
also the check that the fleet can be read at all: a teardown that cannot read the fleet cannot
end it, so it must not start with the steps it can do alone (emptying renderfarm.conf would take
the render farm out of GBrowse while the slaves go on billing). Its lines are what --dry-run
prints and what the prompt shows; the read is the only I/O here, the rest is pure.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from controller.cloud.port import (
    Cloud,
    CloudInstance,
    InstanceState,
    ProviderError,
    SecurityGroup,
    SpotRequest,
    Volume,
)
from controller.cloud.teardown import GONE_VOLUME_STATES, OPEN_REQUEST_STATES
from controller.config.schema import Config
from controller.messages import ErrorKind, Role


@dataclass(frozen=True, slots=True, kw_only=True)
class TeardownPlan:
    """The fleet as read, or the error that kept it from being read."""

    fleet: str
    instances: tuple[CloudInstance, ...] = ()  # not terminated
    requests: tuple[SpotRequest, ...] = ()  # open or active
    groups: tuple[SecurityGroup, ...] = ()  # to delete
    kept_groups: tuple[str, ...] = ()  # tagged with the fleet but configured: never deleted
    volumes: tuple[Volume, ...] = ()  # to delete: they do not go with an instance
    error: ProviderError | None = None

    @property
    def nodes(self) -> tuple[CloudInstance, ...]:
        """The batch cluster's nodes, which leave Grid Engine first (with --cluster)."""
        return tuple(i for i in self.instances if i.role is Role.NODE and i.private_ip)


async def read_plan(
    cloud: Cloud,
    fleet: str,
    keep_group_ids: Sequence[str],
    keep_volume_ids: Sequence[str] = (),
) -> TeardownPlan:
    """Read the fleet; a plan with `error` set when any part could not be read. The volumes
    `keep_volume_ids` (the config's own) are never in it."""
    view = await cloud.describe_fleet(fleet)
    if view.error is not None:
        return TeardownPlan(fleet=fleet, error=view.error)
    groups, error = await cloud.fleet_security_groups(fleet)
    if error is not None:
        return TeardownPlan(fleet=fleet, error=error)
    volumes, error = await cloud.fleet_volumes(fleet)
    if error is not None:
        return TeardownPlan(fleet=fleet, error=error)
    return TeardownPlan(
        fleet=fleet,
        instances=tuple(i for i in view.instances if i.state is not InstanceState.TERMINATED),
        requests=tuple(r for r in view.requests if r.state in OPEN_REQUEST_STATES),
        groups=tuple(g for g in groups if g.group_id not in keep_group_ids),
        kept_groups=tuple(g.group_id for g in groups if g.group_id in keep_group_ids),
        volumes=tuple(
            v
            for v in volumes
            if v.state not in GONE_VOLUME_STATES
            and not (v.state == "in-use" and v.goes_with_instance)
            and v.volume_id not in keep_volume_ids
        ),
    )


def read_failure(config: Config, error: ProviderError) -> str:
    """One line: the fleet could not be read, where from, why, and what to do."""
    where = config.aws.endpoint_url or "EC2"
    what = (
        f"cannot read fleet {config.controller.fleet} from {where} (region {config.slave.region})"
    )
    message = " ".join(error.message.split())
    if error.code == "NoCredentials":
        todo = ""  # the message says what to do
    elif error.kind is ErrorKind.AUTH:
        todo = (
            "; these credentials must be allowed to describe and end the fleet "
            "(`controller iam-policy -c CONFIG` prints the policy)"
        )
    elif error.kind in (ErrorKind.UNAVAILABLE, ErrorKind.THROTTLED):
        hint = "[aws] endpoint_url" if config.aws.endpoint_url else "the network"
        todo = f"; check {hint} and run the teardown again"
    else:
        todo = ""
    return f"teardown: {what}: {error.code}: {message}{todo}; nothing was changed"


def plan_lines(
    plan: TeardownPlan, *, renderfarm: str | None, scheduler: Sequence[str] = ()
) -> list[str]:
    """What the teardown will do, in its order: `renderfarm` (its line, None with --cluster),
    `scheduler` (one line per node leaving Grid Engine or Slurm), then EC2's steps."""
    lines = [f"teardown of fleet {plan.fleet}:"]
    if renderfarm is not None:
        lines.append(f"  {renderfarm}")
    lines += [f"  {line}" for line in scheduler]
    if plan.requests:
        lines.append(f"  cancel {len(plan.requests)} spot request(s):")
        lines += [f"    {r.request_id} {r.state} {r.instance_type}".rstrip() for r in plan.requests]
    if plan.instances:
        lines.append(
            f"  terminate {len(plan.instances)} instance(s) and wait for them "
            "(volumes made with DeleteOnTermination go with them):"
        )
        lines += [f"    {_instance(i)}" for i in plan.instances]
    if plan.volumes:
        lines.append(f"  delete {len(plan.volumes)} EBS volume(s) tagged with the fleet:")
        lines += [f"    {_volume(v)}" for v in plan.volumes]
    if plan.groups:
        lines.append(f"  delete {len(plan.groups)} security group(s):")
        lines += [f"    {g.group_id} ({g.name})" for g in plan.groups]
    lines += [
        f"  keep security group {g}: it is the configured security_group" for g in plan.kept_groups
    ]
    if not (plan.requests or plan.instances or plan.groups or plan.volumes):
        lines.append("  nothing of the fleet in EC2")
    return lines


def _volume(volume: Volume) -> str:
    role = f" {volume.role}" if volume.role else ""
    attached = ", ".join(volume.attached_to)
    attached = f" (attached to {attached}: deleted once it comes free)" if attached else ""
    return f"{volume.volume_id} {volume.size_gib} GiB {volume.state}{attached}{role}"


def _instance(instance: CloudInstance) -> str:
    spot = "spot" if instance.spot else "on-demand"
    address = f" {instance.private_ip}" if instance.private_ip else ""
    return (
        f"{instance.instance_id} {instance.instance_type} {instance.state} {spot} "
        f"{instance.role}{address}"
    )
