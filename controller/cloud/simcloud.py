"""SimCloud: the Cloud port in memory, on a clock it is given.

The fleet itself (instances, spot requests, reclaims, billing, the scripted faults) is SimFleet's
(controller.cloud.sim_fleet); SimCloud adds the port's async methods over it, security groups and
subnets, EC2's DryRun answers, and the `controller:spec` tag each instance is launched with (what
it boots from: image, data snapshots, user data), as the EC2 adapter tags and reads it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from controller.cloud.port import (
    CloudInstance,
    FleetView,
    IngressRule,
    LaunchResult,
    LaunchSpec,
    OpResult,
    ProviderError,
    SecurityGroup,
    Volume,
    launch_digest,
)
from controller.cloud.sim_fleet import SimFleet
from controller.cloud.sim_records import SimInstance, SimRequest, sim_error
from controller.messages import ErrorKind, InstanceId, RequestId, Role

VPC_ID = "vpc-sim"


@dataclass(slots=True)
class _Group:
    group: SecurityGroup
    rules: set[IngressRule] = field(default_factory=set)


class SimCloud(SimFleet):
    """An in-memory EC2 on an injected clock (loop time or the simulator's virtual time)."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._groups: dict[str, _Group] = {}
        self._specs: dict[str, str] = {}  # instance id -> its controller:spec tag
        # Scripted: False launches without the tag, as a controller from before it did.
        self.tag_specs = True

    def _start(self, spec: LaunchSpec, req: SimRequest, now: float) -> SimInstance:
        inst = super()._start(spec, req, now)
        if self.tag_specs:
            digest = launch_digest(spec.image_id, spec.snapshots, spec.user_data)
            self._specs[inst.instance_id] = digest
        return inst

    def _view(self, inst: SimInstance) -> CloudInstance:
        """SimFleet's view with the instance's tag (kept in its view cache: set once a state)."""
        view = super()._view(inst)
        spec = self._specs.get(inst.instance_id, "")
        if view.spec != spec:
            view = self._views[inst.instance_id] = replace(view, spec=spec)
        return view

    def spec_of(self, instance_id: str) -> str:
        """The controller:spec tag of an instance ("" for none)."""
        return self._specs.get(instance_id, "")

    async def describe_fleet(self, fleet: str, *, with_requests: bool = True) -> FleetView:
        if self.describe_fails:
            err = sim_error(
                ErrorKind.UNAVAILABLE, "Unavailable", "DescribeInstances", "simulated outage"
            )
            return FleetView(instances=(), error=err)
        return self.fleet_view(fleet, with_requests=with_requests)

    async def launch(self, spec: LaunchSpec) -> LaunchResult:
        return self.launch_now(spec)

    async def terminate(self, ids: Sequence[InstanceId], *, dry_run: bool = False) -> OpResult:
        if dry_run:
            return OpResult(
                error=sim_error(ErrorKind.DRY_RUN_OK, "DryRunOperation", "TerminateInstances")
            )
        return self.terminate_now(ids)

    async def cancel_requests(self, ids: Sequence[RequestId], *, dry_run: bool = False) -> OpResult:
        if dry_run:
            return OpResult(
                error=sim_error(
                    ErrorKind.DRY_RUN_OK, "DryRunOperation", "CancelSpotInstanceRequests"
                )
            )
        return self.cancel_now(ids)

    async def wait_terminated(
        self, ids: Sequence[InstanceId], *, timeout: float, poll_interval: float = 5.0
    ) -> tuple[InstanceId, ...]:
        """Termination is immediate here: only ids that were never terminated stay alive."""
        self.advance()
        return tuple(i for i in ids if i in self._live)

    async def spot_price(self, instance_type: str, zone: str) -> float | None:
        return self.price

    async def find_security_group(self, name: str, vpc_id: str) -> SecurityGroup | None:
        for g in self._groups.values():
            if g.group.name == name and g.group.vpc_id == vpc_id:
                return self._group_view(g)
        return None

    async def describe_security_group(self, group_id: str) -> SecurityGroup | None:
        g = self._groups.get(group_id)
        return None if g is None else self._group_view(g)

    async def fleet_security_groups(
        self, fleet: str
    ) -> tuple[tuple[SecurityGroup, ...], ProviderError | None]:
        groups = tuple(self._group_view(g) for g in self._groups.values() if g.group.fleet == fleet)
        return groups, None

    def _group_view(self, g: _Group) -> SecurityGroup:
        return replace(g.group, rules=frozenset(g.rules))

    async def create_security_group(
        self,
        *,
        name: str,
        description: str,
        vpc_id: str,
        fleet: str,
        role: Role = Role.SLAVE,
        dry_run: bool = False,
    ) -> tuple[str | None, ProviderError | None]:
        op = "CreateSecurityGroup"
        if dry_run:
            return None, sim_error(ErrorKind.DRY_RUN_OK, "DryRunOperation", op)
        if await self.find_security_group(name, vpc_id) is not None:
            msg = f"the security group {name!r} already exists in {vpc_id}"
            return None, sim_error(ErrorKind.INVALID, "InvalidGroup.Duplicate", op, msg)
        group_id = self._next_id("sg")
        self._groups[group_id] = _Group(
            SecurityGroup(group_id=group_id, name=name, vpc_id=vpc_id, fleet=fleet)
        )
        return group_id, None

    async def authorize_ingress(
        self, group_id: str, rules: Sequence[IngressRule], *, dry_run: bool = False
    ) -> OpResult:
        return self._edit_rules(group_id, rules, add=True, dry_run=dry_run)

    async def revoke_ingress(
        self, group_id: str, rules: Sequence[IngressRule], *, dry_run: bool = False
    ) -> OpResult:
        return self._edit_rules(group_id, rules, add=False, dry_run=dry_run)

    def _edit_rules(
        self, group_id: str, rules: Sequence[IngressRule], *, add: bool, dry_run: bool
    ) -> OpResult:
        op = "AuthorizeSecurityGroupIngress" if add else "RevokeSecurityGroupIngress"
        g = self._groups.get(group_id)
        if g is None:
            msg = f"the security group {group_id!r} does not exist"
            return OpResult(error=sim_error(ErrorKind.INVALID, "InvalidGroup.NotFound", op, msg))
        if dry_run:
            return OpResult(error=sim_error(ErrorKind.DRY_RUN_OK, "DryRunOperation", op))
        if add:
            dupes = [r for r in rules if r in g.rules]
            if dupes:
                msg = f"the rule {dupes[0].cidr}:{dupes[0].port} already exists"
                return OpResult(
                    error=sim_error(ErrorKind.INVALID, "InvalidPermission.Duplicate", op, msg)
                )
            g.rules.update(rules)
        else:
            g.rules.difference_update(rules)
        return OpResult()

    async def delete_security_group(self, group_id: str, *, dry_run: bool = False) -> OpResult:
        op = "DeleteSecurityGroup"
        if group_id not in self._groups:
            msg = f"the security group {group_id!r} does not exist"
            return OpResult(error=sim_error(ErrorKind.INVALID, "InvalidGroup.NotFound", op, msg))
        if dry_run:
            return OpResult(error=sim_error(ErrorKind.DRY_RUN_OK, "DryRunOperation", op))
        self.advance()
        if any(group_id in i.security_groups for i in self._live.values()):
            msg = f"the security group {group_id} is still used by running instances"
            return OpResult(error=sim_error(ErrorKind.INVALID, "DependencyViolation", op, msg))
        del self._groups[group_id]
        return OpResult()

    async def fleet_volumes(self, fleet: str) -> tuple[tuple[Volume, ...], ProviderError | None]:
        """None: simulated instances have no EBS volumes to outlive them."""
        return (), None

    async def delete_volume(self, volume_id: str, *, dry_run: bool = False) -> OpResult:
        return OpResult()  # no volume here, and one that does not exist counts as deleted

    async def subnet_vpc(self, subnet: str) -> str | None:
        return (await self.find_vpc(subnet))[0]

    async def find_vpc(self, subnet: str) -> tuple[str | None, ProviderError | None]:
        return (VPC_ID if subnet == "" or subnet.startswith("subnet-") else None), None

    async def close(self) -> None:
        return None
