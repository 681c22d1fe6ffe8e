"""EC2's API shapes: the request parameters the controller sends, and the responses it reads back
into the Cloud port's values (controller.cloud.port). Pure: no client, no I/O."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

from controller.cloud.port import (
    FLEET_TAG,
    ROLE_TAG,
    SPEC_TAG,
    CloudInstance,
    IngressRule,
    InstanceState,
    LaunchSpec,
    SecurityGroup,
    SpotRequest,
    Volume,
    launch_digest,
)
from controller.messages import InstanceId, RequestId, Role

# EC2's recommended device names for EBS data volumes on Linux.
DATA_DEVICES = tuple(f"/dev/sd{letter}" for letter in "fghijklmnopqrstuvwxyz")


def fleet_tags(
    fleet: str, role: Role, name: str, extra: Iterable[tuple[str, str]] = ()
) -> list[dict[str, str]]:
    tags = {FLEET_TAG: fleet, ROLE_TAG: str(role), "Name": name, **dict(extra)}
    return [{"Key": key, "Value": value} for key, value in tags.items()]


def launch_params(spec: LaunchSpec) -> dict[str, Any]:
    """The RunInstances parameters for a spot launch (one-time, terminate on interruption)."""
    spot_options: dict[str, str] = {
        "SpotInstanceType": "one-time",
        "InstanceInterruptionBehavior": "terminate",
    }
    if spec.max_price is not None:
        spot_options["MaxPrice"] = str(spec.max_price)
    # what it boots from, so a later reload that changes it can tell it from the new ones
    digest = launch_digest(spec.image_id, spec.snapshots, spec.user_data)
    extra = ((SPEC_TAG, digest), *spec.extra_tags)
    tags = fleet_tags(spec.fleet, spec.role, f"{spec.fleet}-{spec.role}", extra)
    params: dict[str, Any] = {
        "ImageId": spec.image_id,
        "InstanceType": spec.instance_type,
        "MinCount": 1,
        "MaxCount": spec.count,
        "InstanceMarketOptions": {"MarketType": "spot", "SpotOptions": spot_options},
        "TagSpecifications": [
            {"ResourceType": kind, "Tags": tags}
            for kind in ("instance", "volume", "spot-instances-request")
        ],
        "DryRun": spec.dry_run,
    }
    if spec.client_token:
        params["ClientToken"] = spec.client_token
    if spec.subnet:
        params["SubnetId"] = spec.subnet
    if spec.zone:
        params["Placement"] = {"AvailabilityZone": spec.zone}
    if spec.security_group_ids:
        params["SecurityGroupIds"] = list(spec.security_group_ids)
    if spec.key_name:
        params["KeyName"] = spec.key_name
    if spec.user_data:
        params["UserData"] = spec.user_data  # botocore base64-encodes it
    if spec.snapshots:
        params["BlockDeviceMappings"] = [
            {"DeviceName": device, "Ebs": {"SnapshotId": snapshot, "DeleteOnTermination": True}}
            for device, snapshot in zip(DATA_DEVICES, spec.snapshots, strict=False)
        ]
    return params


def _tags(item: dict[str, Any]) -> dict[str, str]:
    return {tag["Key"]: tag.get("Value", "") for tag in item.get("Tags") or ()}


def _role(value: str | None, default: Role) -> Role:
    try:
        return Role(value) if value else default
    except ValueError:
        return default


def _epoch(value: Any) -> float:
    return value.timestamp() if isinstance(value, datetime) else 0.0


def parse_instance(item: dict[str, Any], role: Role = Role.SLAVE, spec: str = "") -> CloudInstance:
    """An instance as described; `role` and `spec` stand in for tags the item does not carry
    (RunInstances' answer need not show the tags it was asked to set)."""
    tags = _tags(item)
    return CloudInstance(
        instance_id=InstanceId(item["InstanceId"]),
        state=InstanceState(item.get("State", {}).get("Name", "pending")),
        private_ip=item.get("PrivateIpAddress") or None,
        public_ip=item.get("PublicIpAddress") or None,
        instance_type=item.get("InstanceType", ""),
        zone=item.get("Placement", {}).get("AvailabilityZone", ""),
        launched_at=_epoch(item.get("LaunchTime")),
        role=_role(tags.get(ROLE_TAG), role),
        spot=item.get("InstanceLifecycle") == "spot",
        spot_request_id=RequestId(item["SpotInstanceRequestId"])
        if item.get("SpotInstanceRequestId")
        else None,
        state_reason=(item.get("StateReason") or {}).get("Code") or None,
        spec=tags.get(SPEC_TAG, spec),
    )


def parse_spot_request(item: dict[str, Any]) -> SpotRequest:
    spec = item.get("LaunchSpecification") or {}
    return SpotRequest(
        request_id=RequestId(item["SpotInstanceRequestId"]),
        state=item.get("State", ""),
        status_code=(item.get("Status") or {}).get("Code", ""),
        instance_id=InstanceId(item["InstanceId"]) if item.get("InstanceId") else None,
        created_at=_epoch(item.get("CreateTime")),
        instance_type=spec.get("InstanceType", ""),
        zone=item.get("LaunchedAvailabilityZone")
        or (spec.get("Placement") or {}).get("AvailabilityZone", ""),
    )


def parse_group(item: dict[str, Any]) -> SecurityGroup:
    rules = frozenset(rule for perm in item.get("IpPermissions") or () for rule in _rules(perm))
    return SecurityGroup(
        group_id=item["GroupId"],
        name=item.get("GroupName", ""),
        vpc_id=item.get("VpcId", ""),
        rules=rules,
        fleet=_tags(item).get(FLEET_TAG, ""),
    )


def parse_volume(item: dict[str, Any]) -> Volume:
    """A volume as DescribeVolumes shows it; it goes with its instance when every attachment
    says DeleteOnTermination (an answer that does not say counts as not)."""
    attachments = [a for a in item.get("Attachments") or () if a.get("InstanceId")]
    return Volume(
        volume_id=item["VolumeId"],
        state=item.get("State", ""),
        size_gib=int(item.get("Size") or 0),
        role=_tags(item).get(ROLE_TAG, ""),
        attached_to=tuple(InstanceId(a["InstanceId"]) for a in attachments),
        goes_with_instance=bool(attachments)
        and all(a.get("DeleteOnTermination") for a in attachments),
    )


def _rules(perm: dict[str, Any]) -> Iterator[IngressRule]:
    """The CIDR rules of one IpPermission (rules naming another group are not CIDR rules).

    A single port is `IngressRule(port=P)`; all traffic is protocol "-1", port -1; a range is
    kept whole as protocol "tcp:FROM-TO", port FROM, so it can be revoked exactly.
    """
    protocol = perm.get("IpProtocol", "-1")
    low, high = perm.get("FromPort"), perm.get("ToPort")
    if protocol == "-1" or low is None:
        port, protocol = -1, "-1" if protocol == "-1" else protocol
    elif low == high:
        port = low
    else:
        port, protocol = low, f"{protocol}:{low}-{high}"
    cidrs = [r["CidrIp"] for r in perm.get("IpRanges") or ()]
    cidrs += [r["CidrIpv6"] for r in perm.get("Ipv6Ranges") or ()]
    for cidr in cidrs:
        yield IngressRule(cidr=cidr, port=port, protocol=protocol)


def ip_permission(rule: IngressRule) -> dict[str, Any]:
    """The IpPermission for one rule (the inverse of `_rules`)."""
    ranges = (
        {"Ipv6Ranges": [{"CidrIpv6": rule.cidr}]}
        if ":" in rule.cidr
        else {"IpRanges": [{"CidrIp": rule.cidr}]}
    )
    if rule.protocol == "-1":
        return {"IpProtocol": "-1", **ranges}
    protocol, _, span = rule.protocol.partition(":")
    low, _, high = span.partition("-")
    from_port = int(low) if span else rule.port
    to_port = int(high) if span else rule.port
    return {"IpProtocol": protocol, "FromPort": from_port, "ToPort": to_port, **ranges}
