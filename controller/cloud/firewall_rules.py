"""The ingress of the security group the instances launch into, as pure functions.

An owned group admits exactly `<master address>/32` (or /128) on each slave port, and 22 when
`[slave] ssh_key` is set; a batch cluster's nodes' group the head on its `ssh_port` and Grid
Engine's ports. FirewallKeeper (actors.firewall_keeper) reads the group and applies the drift;
when a group cannot be made or opened, the lines here say why and what to do.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Iterable

from controller.cloud.port import IngressRule, ProviderError
from controller.messages import ErrorKind

SSH_PORT = 22
SGE_PORTS = (6444, 6445)  # sge_qmaster, sge_execd
SLURM_PORTS = (6818,)  # slurmd: slurmctld on the head contacts each node's slurmd
# What AuthorizeSecurityGroupIngress answers for a group EC2 has just made and does not know yet.
NOT_VISIBLE_YET = "InvalidGroup.NotFound"


def group_name(fleet: str) -> str:
    """The owned group's name: derived from the fleet, so every restart finds the same group."""
    return f"controller-{fleet}"


def master_cidr(master_ip: str) -> str:
    """The master alone: /32 for IPv4, /128 for IPv6."""
    address = ipaddress.ip_address(master_ip)
    return f"{address}/{address.max_prefixlen}"


def wanted_rules(
    master_ip: str, ports: Iterable[int], *, ssh: bool = False
) -> frozenset[IngressRule]:
    """Pure: the whole ingress of an owned group."""
    cidr = master_cidr(master_ip)
    all_ports = {*ports, SSH_PORT} if ssh else set(ports)
    return frozenset(IngressRule(cidr=cidr, port=port) for port in all_ports)


def rule_drift(
    actual: Collection[IngressRule], wanted: Collection[IngressRule]
) -> tuple[list[IngressRule], list[IngressRule]]:
    """Pure: (rules to add, rules to revoke), each sorted so logs read the same every time."""
    missing = sorted(set(wanted) - set(actual), key=rule_key)
    extra = sorted(set(actual) - set(wanted), key=rule_key)
    return missing, extra


def ports_not_admitted(
    rules: Iterable[IngressRule], master_ip: str, ports: Iterable[int]
) -> list[int]:
    """Pure: the ports on which no rule lets the master in (for a group the user owns)."""
    master = ipaddress.ip_address(master_ip)
    open_ports: set[int] = set()
    everything = False
    for rule in rules:
        try:
            network = ipaddress.ip_network(rule.cidr, strict=False)
        except ValueError:
            continue
        if master.version != network.version or master not in network:
            continue
        protocol, _, span = rule.protocol.partition(":")  # "tcp:1000-2000" is a port range
        if protocol in ("-1", "all"):
            everything = True
        elif protocol in ("tcp", "6") and span:
            low, _, high = span.partition("-")
            open_ports.update(p for p in ports if int(low) <= p <= int(high or low))
        elif protocol in ("tcp", "6"):
            open_ports.add(rule.port)
    return [] if everything else sorted(set(ports) - open_ports)


def rule_key(rule: IngressRule) -> tuple[str, int, str]:
    return (rule.cidr, rule.port, rule.protocol)


def show_rules(rules: Iterable[IngressRule]) -> list[str]:
    return [f"{rule.protocol}/{rule.port} from {rule.cidr}" for rule in rules]


def authorize_failed_line(name: str, group_id: str, error: ProviderError, waited: float) -> str:
    line = (
        f"security group {name} ({group_id}) was created but admits nobody: adding its ingress "
        f"failed: {error.code}: {error.message}"
    )
    if error.code == NOT_VISIBLE_YET:
        return (
            f"{line} (EC2 still did not know the group after {waited:.0f} s; it is kept, and "
            "the next attempt adopts it and adds the rules)"
        )
    if error.kind is ErrorKind.AUTH:
        return (
            f"{line} (grant ec2:AuthorizeSecurityGroupIngress, as `controller iam-policy` prints)"
        )
    return f"{line} (it is kept, and the next attempt adopts it and adds the rules)"


def create_failed_line(name: str, vpc_id: str, error: ProviderError | None) -> str:
    line = f"cannot create security group {name} in {vpc_id}"
    if error is None:
        return f"{line}: EC2 returned no group id"
    line += f": {error.code}: {error.message}"
    if error.kind is ErrorKind.AUTH:
        line += (
            " (grant ec2:CreateSecurityGroup, or name an existing group in [slave] security_group)"
        )
    return line
