"""FirewallKeeper: owns the security group the slaves launch into, and keeps it closed.

The slaves answer render requests from the master only, so the group the controller makes admits
exactly the master on the slave ports (controller.cloud.firewall_rules has the rules). Its name
comes from the fleet (`controller-<fleet>`), never from the PID, and it carries the fleet tags, so
a restarted controller adopts the group its predecessor made instead of leaking it. Each cycle
re-reads the group and undoes drift: a missing rule is added again and any other rule (someone
opened 0.0.0.0/0) is revoked.

A group named in `[slave] security_group` belongs to the user: it is used as it is, never changed
and never deleted; FirewallKeeper only warns when it does not admit the master on the slave ports.

Node mode (`run --cluster NAME`, `cluster=` given): the group batch nodes launch into admits the
head (the machine the controller and sge_qmaster run on) only, on the cluster's `ssh_port` (the
controller sets nodes up over SSH) and on Grid Engine's ports 6444 (sge_qmaster) and 6445
(sge_execd: the qmaster contacts each node's execd). The other direction, nodes' execd reaching
the qmaster on 6444 (and 6445 back), is ingress to the *head*, whose group the controller does not
own: admit the nodes' subnet (or this group) on tcp 6444-6445 there. A Slurm cluster's group
admits the head on the ssh_port and 6818 (slurmctld contacts each node's slurmd); the head's
group must admit the nodes on 6817 (slurmctld). The group is named
`controller-<fleet>-nodes` and lives in the VPC of the cluster's `subnet`; a cluster has no
user-named group.

SecurityGroupReady (SpotPool launches only after it) is published once per group, and only when
the group admits the master: EC2 is eventually consistent, so AuthorizeSecurityGroupIngress may
answer InvalidGroup.NotFound for a group it has just created; that is retried with backoff for up
to AUTHORIZE_RETRY_SECONDS, and if the rules still cannot be added the actor fails with one line
saying why, rather than letting slaves start in a group that admits nobody.

It starts first and so stops last: by the time stop() runs, SpotPool has terminated the instances
and waited for them, and the owned group can be deleted (with `on_exit = "teardown"`); EC2 refuses
that with DependencyViolation while the instances' network interfaces linger, which the adapter
waits out (DEPENDENCY_TIMEOUT), so the stop's grace is longer than that.
In a dry run nothing is mutated: each change is sent with EC2's DryRun flag, which checks the
permission, and the outcome is logged.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from controller.cloud.ec2_groups import DEPENDENCY_TIMEOUT
from controller.cloud.firewall_rules import (
    NOT_VISIBLE_YET,
    SGE_PORTS,
    SLURM_PORTS,
    authorize_failed_line,
    create_failed_line,
    group_name,
    master_cidr,
    ports_not_admitted,
    rule_drift,
    rule_key,
    show_rules,
    wanted_rules,
)
from controller.cloud.port import Cloud, IngressRule, ProviderError, SecurityGroup, error_seen
from controller.config.schema import ClusterSection, Config
from controller.messages import ErrorKind, Role, SecurityGroupReady
from controller.runtime.actor import Actor, SetupError
from controller.runtime.backoff import backoff_delay
from controller.runtime.bus import Bus

DRY_RUN_GROUP_ID = "sg-dryrun"  # stands for the group a dry run would have created
MIN_RECONCILE_SECONDS = 60.0
# A group EC2 has just made may be unknown to AuthorizeSecurityGroupIngress for a few seconds.
AUTHORIZE_RETRY_SECONDS = 60.0
AUTHORIZE_DELAYS = (1.0, 2.0, 4.0, 8.0, 15.0)


class FirewallError(SetupError):
    """The group cannot be made or found; the controller cannot launch slaves safely."""


class FirewallKeeper(Actor):
    # Deleting the group waits out DependencyViolation while the last instances' network
    # interfaces go (the Ec2Cloud adapter retries for DEPENDENCY_TIMEOUT), plus its last call.
    grace_seconds = DEPENDENCY_TIMEOUT + 60.0

    def __init__(
        self,
        *,
        config: Config,
        bus: Bus,
        cloud: Cloud,
        master_ip: str,
        dry_run: bool = False,
        reconcile_interval: float | None = None,
        clock: Callable[[], float] | None = None,
        cluster: ClusterSection | None = None,
        authorize_delays: Sequence[float] = AUTHORIZE_DELAYS,
        authorize_retry_seconds: float = AUTHORIZE_RETRY_SECONDS,
    ) -> None:
        super().__init__(name="firewall_keeper", bus=bus, clock=clock)
        self.config = config
        self.cloud = cloud
        self.master_ip = master_ip
        self.dry_run = dry_run
        self.reconcile_interval = (
            reconcile_interval
            if reconcile_interval is not None
            else max(MIN_RECONCILE_SECONDS, 2 * config.master.poll_interval)
        )
        self.cluster = cluster
        self.authorize_delays = authorize_delays
        self.authorize_retry_seconds = authorize_retry_seconds
        if cluster is None:
            self.wanted = wanted_rules(
                master_ip, config.slave.ports, ssh=bool(config.slave.ssh_key.strip())
            )
        else:
            ports = SLURM_PORTS if cluster.load_source == "slurm" else SGE_PORTS
            self.wanted = wanted_rules(master_ip, (cluster.ssh_port, *ports))
        self.group_id: str | None = None
        self.owned = False  # created or adopted by fleet tag and name: ours to fix and delete
        self.vpc_id = ""
        self._warned_ports: list[int] | None = None
        self._announced: str | None = None  # the group SecurityGroupReady was published for

    @property
    def name_in_ec2(self) -> str:
        name = group_name(self.config.controller.fleet)
        return name if self.cluster is None else f"{name}-nodes"

    @property
    def subnet(self) -> str:
        return (self.cluster.subnet if self.cluster else self.config.slave.subnet).strip()

    @property
    def subnet_key(self) -> str:
        return f"[cluster.{self.cluster.name}] subnet" if self.cluster else "[slave] subnet"

    # lifecycle

    def reconfigure(self, config: Config) -> None:
        """SIGHUP: on_exit and intervals apply from now; the group's rules do not change."""
        self.config = config

    async def setup(self) -> None:
        """Find, adopt or create the group; announce it once it admits the master.

        FirewallError when the group cannot be had, or was made but its rules cannot be added.
        """
        configured = "" if self.cluster else self.config.slave.security_group.strip()
        if configured:
            group = await self._configured_group(configured)
            self.group_id, self.owned = group.group_id, False
            self.log.info("security_group.configured", group_id=group.group_id, name=group.name)
            self._check_admits_master(group)
            self._announce()
        elif await self._find_or_create():
            # A group just made has no ingress yet; describing it could race EC2's consistency.
            if await self._authorize_new_group():
                self._announce()
        elif self.group_id == DRY_RUN_GROUP_ID:
            self._announce()
        else:
            await self.reconcile()  # adopted: announced once its rules are complete

    async def run(self) -> None:
        while await self.sleep(self.reconcile_interval):
            await self.reconcile()

    async def stop(self) -> None:
        if not self.owned or self.group_id is None:
            if self.group_id is not None:
                self.log.info("security_group.kept", group_id=self.group_id, reason="not ours")
            return
        if self.config.controller.on_exit != "teardown":
            self.log.info("security_group.left", group_id=self.group_id, on_exit="leave")
            return
        if self.group_id == DRY_RUN_GROUP_ID:
            self.log.info("dry_run.would_delete_security_group", name=self.name_in_ec2)
            return
        result = await self.cloud.delete_security_group(self.group_id, dry_run=self.dry_run)
        if self.dry_run:
            self._report_dry_run("delete_security_group", result.error, group_id=self.group_id)
        elif result.error is not None:
            self._provider_error("security_group.delete_failed", result.error)
        else:
            self.log.info("security_group.deleted", group_id=self.group_id)

    # one cycle

    async def reconcile(self) -> None:
        """Read the group and bring it back to what it should be (owned) or warn (the user's)."""
        if self.group_id is None or self.group_id == DRY_RUN_GROUP_ID:
            return
        group = await self.cloud.describe_security_group(self.group_id)
        if group is None:  # gone, or unreadable right now (the adapter logged which)
            await self._group_vanished()
            return
        if not self.owned:
            self._check_admits_master(group)
            return
        await self._repair(group)

    async def _repair(self, group: SecurityGroup) -> None:
        """Undo drift on an owned group; announce it if it was not yet and now admits the master."""
        missing, extra = rule_drift(group.rules, self.wanted)
        complete = not missing or await self._authorize(missing)
        if extra:
            await self._revoke(extra)
        if complete:
            self._announce()

    def _announce(self) -> None:
        """SecurityGroupReady, once per group, and never before its rules are in."""
        if self.group_id is None or self.group_id == self._announced:
            return
        self._announced = self.group_id
        self.publish(SecurityGroupReady(at=self.now(), group_id=self.group_id, created=self.owned))

    async def _authorize(self, rules: list[IngressRule]) -> bool:
        """Add the rules once (the next cycle tries again); True when they are in (or would be,
        in a dry run)."""
        assert self.group_id is not None
        if self.dry_run:
            result = await self.cloud.authorize_ingress(self.group_id, rules, dry_run=True)
            self._report_dry_run("authorize_ingress", result.error, rules=show_rules(rules))
            return True
        result = await self.cloud.authorize_ingress(self.group_id, rules)
        if result.error is not None:
            self._provider_error("security_group.authorize_failed", result.error)
            return False
        self.log.info("security_group.authorized", group_id=self.group_id, rules=show_rules(rules))
        return True

    async def _authorize_new_group(self) -> bool:
        """Add every rule to the group just created, retrying while EC2 does not know it yet.

        True once the rules are in; False if the stop began first. FirewallError when EC2 still
        refuses after `authorize_retry_seconds`, or refuses for another reason.
        """
        assert self.group_id is not None and not self.dry_run
        rules = sorted(self.wanted, key=rule_key)
        started = self.now()
        deadline = started + self.authorize_retry_seconds
        attempt = 0
        while True:
            result = await self.cloud.authorize_ingress(self.group_id, rules)
            error, waited = result.error, self.now() - started
            if error is None:
                self.log.info(
                    "security_group.authorized", group_id=self.group_id, rules=show_rules(rules)
                )
                return True
            delay = backoff_delay(self.authorize_delays, attempt)
            if error.code != NOT_VISIBLE_YET or self.now() + delay > deadline:
                raise FirewallError(
                    authorize_failed_line(self.name_in_ec2, self.group_id, error, waited)
                )
            self.log.info(
                "security_group.not_visible_yet", group_id=self.group_id, retry_in=round(delay, 3)
            )
            if not await self.sleep(delay):
                return False
            attempt += 1

    async def _revoke(self, rules: list[IngressRule]) -> None:
        assert self.group_id is not None
        if self.dry_run:
            result = await self.cloud.revoke_ingress(self.group_id, rules, dry_run=True)
            self._report_dry_run("revoke_ingress", result.error, rules=show_rules(rules))
            return
        self.log.warning("security_group.revoking_foreign_rules", rules=show_rules(rules))
        result = await self.cloud.revoke_ingress(self.group_id, rules)
        if result.error is not None:
            self._provider_error("security_group.revoke_failed", result.error)
        else:
            self.log.info("security_group.revoked", group_id=self.group_id, rules=show_rules(rules))

    async def _group_vanished(self) -> None:
        if not self.owned:
            self.log.error(
                "security_group.missing",
                group_id=self.group_id,
                hint="[slave] security_group names a group that cannot be read: check that it "
                "still exists",
            )
            return
        # Look it up by name before creating: a failed read must not make a second group
        # (EC2 refuses a duplicate name in the VPC anyway, and that refusal is only logged).
        self.log.warning("security_group.vanished", group_id=self.group_id, action="find-or-create")
        try:
            if await self._find_or_create():
                if await self._authorize_new_group():
                    self._announce()
                return
        except FirewallError as exc:
            # Not announced: SpotPool keeps waiting; the next cycle repairs whatever group exists.
            self.log.error("security_group.recreate_failed", error=str(exc))
            return
        assert self.group_id is not None
        adopted = await self.cloud.describe_security_group(self.group_id)
        if adopted is not None:
            await self._repair(adopted)

    # finding the group

    async def _configured_group(self, configured: str) -> SecurityGroup:
        where = f"{self.config.path}: " if self.config.path else ""
        if configured.startswith("sg-"):
            group = await self.cloud.describe_security_group(configured)
        else:
            group = await self.cloud.find_security_group(configured, await self._vpc())
        if group is None:
            raise FirewallError(
                f"{where}[slave] security_group {configured!r}: no such group in region "
                f"{self.config.slave.region}: create it or leave security_group empty"
            )
        return group

    async def _vpc(self) -> str:
        subnet = self.subnet
        vpc_id, error = await self.cloud.find_vpc(subnet)
        if error is not None:  # not an answer about the subnet: EC2 could not be asked
            where = self.config.aws.endpoint_url or f"EC2 in {self.config.slave.region}"
            raise FirewallError(
                f"cannot ask {where} for the VPC of {self.subnet_key} {subnet!r}: "
                f"{error.code}: {error.message}; check [aws] endpoint_url, the network and the "
                "credentials, then start again"
            )
        if vpc_id is None:
            where = f"{self.config.path}: " if self.config.path else ""
            what = f"{self.subnet_key} {subnet!r}: not found" if subnet else "no default VPC"
            raise FirewallError(
                f"{where}{what} in region {self.config.slave.region}: set {self.subnet_key} "
                "to a subnet of the instances' VPC"
            )
        return vpc_id

    async def _find_or_create(self) -> bool:
        """Adopt the fleet's group or create it; True when it was created just now."""
        self.vpc_id = await self._vpc()
        fleet, name = self.config.controller.fleet, self.name_in_ec2
        group = await self.cloud.find_security_group(name, self.vpc_id)
        if group is not None:
            if group.fleet != fleet:
                raise FirewallError(
                    f"security group {name} ({group.group_id}) in {self.vpc_id} exists but is not "
                    f"tagged controller:fleet={fleet}: delete or rename it, or name it in "
                    "[slave] security_group"
                )
            self.group_id, self.owned = group.group_id, True
            self.log.info("security_group.adopted", group_id=group.group_id, name=name)
            return False
        group_id, error = await self.cloud.create_security_group(
            name=name,
            description=f"controller fleet {fleet}: "
            + ("render slaves" if self.cluster is None else "batch nodes")
            + ", ingress from the master only",
            vpc_id=self.vpc_id,
            fleet=fleet,
            role=Role.SLAVE if self.cluster is None else Role.NODE,
            dry_run=self.dry_run,
        )
        if self.dry_run:
            self._report_dry_run("create_security_group", error, name=name, vpc_id=self.vpc_id)
            self.group_id, self.owned = DRY_RUN_GROUP_ID, True
            # No group to check the permission against: say what would follow.
            self.log.info(
                "dry_run.would_authorize_ingress",
                group=name,
                rules=show_rules(sorted(self.wanted, key=rule_key)),
            )
            return False
        if error is not None or group_id is None:
            raise FirewallError(create_failed_line(name, self.vpc_id, error))
        self.group_id, self.owned = group_id, True
        self.log.info("security_group.created", group_id=group_id, name=name, vpc_id=self.vpc_id)
        return True

    def _check_admits_master(self, group: SecurityGroup) -> None:
        """Warn (once per change) when the user's group keeps the master out of the slaves."""
        closed = ports_not_admitted(group.rules, self.master_ip, self.wanted_ports)
        if closed == self._warned_ports:
            return
        self._warned_ports = closed
        if closed:
            self.log.warning(
                "security_group.master_not_admitted",
                group_id=group.group_id,
                master=self.master_ip,
                ports=closed,
                hint=f"add ingress from {master_cidr(self.master_ip)} on these ports to "
                f"{group.group_id}, or leave [slave] security_group empty to let the controller "
                "manage a group",
            )

    @property
    def wanted_ports(self) -> list[int]:
        return sorted({rule.port for rule in self.wanted})

    # reporting

    def _provider_error(self, event: str, error: ProviderError) -> None:
        """Log and publish; the next cycle tries again."""
        self.log.warning(
            event,
            group_id=self.group_id,
            kind=str(error.kind),
            code=error.code,
            message=error.message,
            retry_in=self.reconcile_interval,
        )
        self.publish(error_seen(error, self.now()))

    def _report_dry_run(self, action: str, error: ProviderError | None, **fields: object) -> None:
        if error is None or error.kind is ErrorKind.DRY_RUN_OK:
            self.log.info(f"dry_run.would_{action}", permitted=True, **fields)
        elif error.kind is ErrorKind.AUTH:
            self.log.error(
                f"dry_run.would_{action}",
                permitted=False,
                code=error.code,
                message=error.message,
                hint=f"the credentials lack ec2:{error.operation or action}: grant it",
                **fields,
            )
        else:
            self.log.warning(
                f"dry_run.would_{action}",
                permitted=None,
                kind=str(error.kind),
                code=error.code,
                message=error.message,
                **fields,
            )
