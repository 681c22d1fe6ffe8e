"""What differs between the two pools SpotPool runs: GBrowse render slaves or batch-cluster nodes.

SpotPool (actors.spot_pool) owns the generic part: adopt by tag, reconcile each poll, launch with
type fallback and capacity cooldowns, drain, terminate, tear down. A profile supplies the rest:

                  slave (render farm)                node (`run --cluster NAME`)
  role tag        controller:role=slave              controller:role=node
  launch          [slave] keys, render-slave         [cluster.NAME] keys; snapshot volumes as
                  user data, data_snapshots          block devices /dev/sdf, /dev/sdg, ... in the
                                                     cluster's volume order; user data that
                                                     installs the head's public key (from
                                                     ssh_key_file) for the login user
  demand          LoadSample -> controller.policy    QueueSample -> controller.policy.queue_policy
  ready when      SlaveReady (HTTP 403 probe)        NodeReady (set up over SSH, registered)
  lost when       SlaveLost                          NodeSetupFailed
  scale-in        DrainSlave, terminate after        InstanceDown (the node leaves Grid Engine
                  [scaling] drain_seconds            first), terminate at once: it is idle

Everything here is pure: the public key is read by the caller.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from controller.config.schema import ClusterSection, Config
from controller.gbrowse.userdata import render_slave_user_data
from controller.gridengine.node_volumes import node_snapshots
from controller.gridengine.sge import ec2_hostname
from controller.messages import (
    DrainSlave,
    InstanceDown,
    LoadSample,
    NodeReady,
    NodeSetupFailed,
    QueueSample,
    Role,
    SlaveLost,
    SlaveReady,
)
from controller.policy.band import Member, PolicyInput
from controller.policy.queue_policy import Node, QueueInput


@dataclass(frozen=True, slots=True, kw_only=True)
class PoolMember:
    """SpotPool's view of one instance, as a profile turns it into its policy's input."""

    instance_id: str
    address: str
    hostname: str  # NodeReady's name; "" for slaves
    launched_at: float
    ready: bool
    draining: bool
    interrupted: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class LaunchSettings:
    """The launch settings a profile reads from its config section."""

    instance_types: tuple[str, ...]
    image_id: str
    image_key: str  # how the user finds the image setting: "[slave] image_id"
    availability_zone: str
    subnet: str
    key_name: str
    spot_bid: float | None
    snapshots: tuple[str, ...]
    user_data: str


class SlaveProfile:
    """The GBrowse render farm: exactly what SpotPool always did."""

    role = Role.SLAVE
    actor_name = "spot_pool"
    sample_types: tuple[type, ...] = (LoadSample,)
    ready_type: type = SlaveReady
    lost_type: type = SlaveLost
    drain_type: type = DrainSlave
    sensor_source: str | None = None  # every SensorLost holds the farm
    down_before_teardown = False
    # a drained slave's drain_seconds run from the RenderfarmWritten that no longer lists it
    drain_after_unlisting = True
    # InstanceUp as soon as a launch gives the address: SlaveHealth probes it until it answers
    announce_at_launch = True

    def __init__(self, config: Config) -> None:
        self.config = config
        # the last pool view turned into members, and those members: a steady pool hands the
        # same tuple in at every poll (a replay's quarter of a million)
        self._last_members: tuple[Sequence[PoolMember], tuple[Member, ...]] | None = None

    def drain_seconds(self) -> float:
        return self.config.scaling.drain_seconds

    def security_group(self) -> str:
        """The user's group to launch into; "" = FirewallKeeper's (SecurityGroupReady)."""
        return self.config.slave.security_group

    def launch_settings(self) -> LaunchSettings:
        s = self.config.slave
        return LaunchSettings(
            instance_types=s.instance_types,
            image_id=s.image_id,
            image_key="[slave] image_id",
            availability_zone=s.availability_zone,
            subnet=s.subnet,
            key_name=s.ssh_key,
            spot_bid=s.spot_bid,
            snapshots=s.data_snapshots,
            user_data=render_slave_user_data(s.ports, s.user_data),
        )

    def load_of(self, sample: Any) -> tuple[float | None, float | None]:
        """(rate, window rate) for the Decision message and /status."""
        if sample is None:
            return None, None
        return sample.rps, sample.window_rps

    def policy_input(
        self,
        *,
        now: float,
        sample: Any,
        members: Sequence[PoolMember],
        pending_requests: int,
        cost_per_hour: float,
        price_per_instance: float,
    ) -> PolicyInput:
        load, window = self.load_of(sample)
        return PolicyInput(
            now=now,
            load_rps=load,
            window_rps=window,
            members=self._members(members),
            pending_requests=pending_requests,
            cost_per_hour=cost_per_hour,
            price_per_instance=price_per_instance,
        )

    def _members(self, members: Sequence[PoolMember]) -> tuple[Member, ...]:
        """The policy's members; the last ones again when the caller passes the same tuple (a
        tuple of frozen members: the same object holds the same members)."""
        last = self._last_members
        if last is not None and last[0] is members and isinstance(members, tuple):
            return last[1]
        turned = tuple(
            Member(
                instance_id=m.instance_id,
                launched_at=m.launched_at,
                ready=m.ready,
                draining=m.draining,
                interrupted=m.interrupted,
            )
            for m in members
        )
        self._last_members = (members, turned)
        return turned


class NodeProfile:
    """A batch cluster's exec nodes, driven by its Grid Engine queue."""

    role = Role.NODE
    actor_name = "node_pool"
    sample_types: tuple[type, ...] = (QueueSample,)
    ready_type: type = NodeReady
    lost_type: type = NodeSetupFailed
    drain_type: type = InstanceDown  # ClusterNodeSetup takes it out of Grid Engine
    sensor_source: str | None = "sge"
    down_before_teardown = True  # deregister from Grid Engine while the nodes still exist
    drain_after_unlisting = False  # a node's drain runs from the drain itself
    announce_at_launch = False  # ClusterNodeSetup logs in once EC2 says it runs

    def __init__(
        self,
        config: Config,
        cluster: ClusterSection,
        *,
        head_public_key: str = "",
        login_user: str = "root",
    ) -> None:
        self.config = config
        self.cluster = cluster
        self.head_public_key = head_public_key
        self.login_user = login_user
        self.sensor_source = cluster.load_source  # "sge" or "slurm": its loss holds the cluster

    def reconfigured(self, config: Config, cluster: ClusterSection) -> NodeProfile:
        """After a reload: the new section, the same head key (ssh_key_file needs a restart)."""
        return NodeProfile(
            config, cluster, head_public_key=self.head_public_key, login_user=self.login_user
        )

    def drain_seconds(self) -> float:
        return 0.0  # only idle nodes are chosen, and they left Grid Engine at the drain

    def security_group(self) -> str:
        return ""  # always FirewallKeeper's node group

    def launch_settings(self) -> LaunchSettings:
        c = self.cluster
        return LaunchSettings(
            instance_types=c.node_instance_types,
            image_id=c.image_id,
            image_key=f"[cluster.{c.name}] image_id",
            availability_zone=c.availability_zone,
            subnet=c.subnet,
            key_name="",
            spot_bid=c.spot_bid,
            snapshots=node_snapshots(self.config, c),
            user_data=node_user_data(self.head_public_key, self.login_user),
        )

    def load_of(self, sample: Any) -> tuple[float | None, float | None]:
        """The queue's pending slots stand in for the load in Decision and /status."""
        if sample is None:
            return None, None
        return float(sample.pending_slots), float(sample.pending_slots)

    def policy_input(
        self,
        *,
        now: float,
        sample: Any,
        members: Sequence[PoolMember],
        pending_requests: int,
        cost_per_hour: float,
        price_per_instance: float,
    ) -> QueueInput:
        return QueueInput(
            now=now,
            sample=sample,
            nodes=tuple(
                Node(
                    instance_id=m.instance_id,
                    hostname=m.hostname or node_hostname(m.address),
                    launched_at=m.launched_at,
                    ready=m.ready,
                    draining=m.draining,
                    interrupted=m.interrupted,
                )
                for m in members
            ),
            pending_requests=pending_requests,
            cost_per_hour=cost_per_hour,
            price_per_instance=price_per_instance,
        )


PoolProfile = SlaveProfile | NodeProfile


def node_hostname(address: str) -> str:
    try:
        return ec2_hostname(address)
    except ValueError:
        return ""


NODE_USER_DATA = """\
#!/bin/sh
# Written by the spot controller: let the head log in as {user} to set this node up.
set -e
home=$(getent passwd {user} | cut -d: -f6)
[ -n "$home" ] || home={default_home}
mkdir -p "$home/.ssh"
chmod 700 "$home/.ssh"
touch "$home/.ssh/authorized_keys"
grep -qxF {key} "$home/.ssh/authorized_keys" || printf '%s\\n' {key} >> "$home/.ssh/authorized_keys"
chmod 600 "$home/.ssh/authorized_keys"
chown -R {user} "$home/.ssh"
"""


def node_user_data(public_key: str, user: str = "root") -> str:
    """EC2 user data installing the head's public key for `user`; "" without a key (the image
    must then already accept it)."""
    key = public_key.strip()
    if not key:
        return ""
    if "\n" in key:
        raise ValueError("expected one OpenSSH public key line")
    default_home = "/root" if user == "root" else f"/home/{user}"
    return NODE_USER_DATA.format(
        user=shlex.quote(user), key=shlex.quote(key), default_home=shlex.quote(default_home)
    )
