"""The least-privilege IAM policy for a config: what `controller iam-policy` prints.

One table, RULES, is the single source of truth: each rule is one policy statement, tied to the
feature that needs it, so a config that names its own security group gets no CreateSecurityGroup,
one without data snapshots no snapshot resources, one without an interruption queue no SQS.
tests/test_iam.py checks the table against the AWS API calls the code really makes, so a new call
without a rule (or a rule nobody needs any more) fails the tests.

Where EC2 allows it, a statement is bound to this fleet's tag: RunInstances may only create
instances, volumes and spot requests that carry `controller:fleet=<fleet>`; CreateTags works only
while creating them; TerminateInstances, CancelSpotInstanceRequests, DeleteVolume and the security
group changes apply only to resources carrying the tag. Describe calls cannot be scoped to
resources, so they are scoped to the region; every policy has teardown's (volumes, and the
snapshots and key pairs `sync-data` may have left), which `controller teardown` always makes.
The account id is `*`: the policy is attached to the account's own role or user. iam:PassRole is
never granted (slaves launch without a profile).

The only IAM action is iam:CreateServiceLinkedRole, and only for AWSServiceRoleForEC2Spot: EC2
creates that role as the caller on the first spot launch of an account, and answers
AuthFailure.ServiceLinkedRoleCreationNotPermitted when the caller may not.

KMS statements come from the keys given on the command line (`iam-policy --kms-key ARN`), not
from the config, which cannot know how its images and snapshots are encrypted: launching from an
image or snapshot encrypted with a customer managed key makes EC2 use the key as the caller
(kms_statements).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from controller.cloud.port import FLEET_TAG
from controller.config.schema import Config
from controller.gridengine.node_volumes import node_snapshots


class Feature(enum.StrEnum):
    ALWAYS = "always"
    # [slave] security_group = "", or any [cluster.X]: its nodes' group is always the controller's
    OWN_SECURITY_GROUP = "own-security-group"
    # [slave] data_snapshots = [...], or a cluster's [volume.X] snapshot_id
    DATA_SNAPSHOTS = "data-snapshots"
    INTERRUPTION_QUEUE = "interruption-queue"  # [scaling] interruption_queue = "https://sqs..."
    CLUSTER_NODES = "cluster-nodes"  # [cluster.X]: nodes launch from its image_id and subnet
    # `controller sync-data`: on with [slave] data_snapshots (what it maintains), or asked for
    # (`iam-policy --sync-data`, for the first sync)
    SYNC_DATA = "sync-data"


def features(config: Config) -> set[Feature]:
    """The features a config turns on."""
    on = {Feature.ALWAYS}
    if not config.slave.security_group.strip() or config.clusters:
        on.add(Feature.OWN_SECURITY_GROUP)
    if _snapshots(config):
        on.add(Feature.DATA_SNAPSHOTS)
    if config.scaling.interruption_queue:
        on.add(Feature.INTERRUPTION_QUEUE)
    if config.clusters:
        on.add(Feature.CLUSTER_NODES)
    if config.slave.data_snapshots:
        on.add(Feature.SYNC_DATA)
    return on


def _snapshots(config: Config) -> list[str]:
    """Every snapshot a launch may create a volume from: the slaves' and each cluster's nodes'."""
    found = list(config.slave.data_snapshots)
    for cluster in config.clusters:
        found += [s for s in node_snapshots(config, cluster) if s not in found]
    return found


# API operations authorised under another IAM action (the batch forms of SQS calls).
IAM_ACTION_OF_OPERATION = {"sqs:DeleteMessageBatch": "sqs:DeleteMessage"}
# KMS actions EC2 performs as the caller when it launches from an image or snapshot encrypted with
# a customer managed key (Amazon EBS User Guide, "Requirements for Amazon EBS encryption").
# kms:ReEncrypt* is spelled out: it matches exactly ReEncryptFrom and ReEncryptTo.
KMS_USE_ACTIONS = (
    "kms:Decrypt",
    "kms:DescribeKey",
    "kms:GenerateDataKeyWithoutPlaintext",
    "kms:ReEncryptFrom",
    "kms:ReEncryptTo",
)
KMS_GRANT_ACTION = "kms:CreateGrant"  # the grant that lets the instance use its volume's key
SPOT_SERVICE = "spot.amazonaws.com"
SPOT_ROLE = "AWSServiceRoleForEC2Spot"
# Granted although no code calls them by name: EC2 authorises TagSpecifications of RunInstances
# and CreateSecurityGroup as ec2:CreateTags on the new resources, creates the spot service-linked
# role, and uses KMS keys, each as the caller of RunInstances.
IMPLIED_ACTIONS = {
    "ec2:CreateTags": "tagging on create (TagSpecifications)",
    "iam:CreateServiceLinkedRole": f"the first spot launch of an account creates {SPOT_ROLE}",
    **{action: "launching from encrypted images or snapshots" for action in KMS_USE_ACTIONS},
    KMS_GRANT_ACTION: "launching from encrypted images or snapshots",
}


@dataclass(frozen=True, slots=True)
class Rule:
    sid: str
    feature: Feature
    actions: tuple[str, ...]
    resources: Callable[[Config], list[str]]
    condition: Callable[[Config], dict] = field(default=lambda config: {})

    def statement(self, config: Config) -> dict:
        statement = {
            "Sid": self.sid,
            "Effect": "Allow",
            "Action": sorted(self.actions),
            "Resource": self.resources(config),
        }
        condition = self.condition(config)
        if condition:
            statement["Condition"] = condition
        return statement


def _arn(config: Config, resource: str, *, account: str = "*", service: str = "ec2") -> str:
    region = config.slave.region
    return f"arn:{partition(region)}:{service}:{region}:{account}:{resource}"


def partition(region: str) -> str:
    if region.startswith("cn-"):
        return "aws-cn"
    if region.startswith("us-gov-"):
        return "aws-us-gov"
    return "aws"


def _tagged_on_create(config: Config) -> list[str]:
    return [_arn(config, f"{kind}/*") for kind in ("instance", "volume", "spot-instances-request")]


def _launch_from(config: Config) -> list[str]:
    """What a launch uses but does not create, as narrow as the config allows."""
    slave = config.slave
    image = slave.image_id or "*"
    subnet = slave.subnet or "*"
    group = slave.security_group if slave.security_group.startswith("sg-") else "*"
    key = slave.ssh_key or "*"
    resources = [
        _arn(config, f"image/{image}", account=""),
        _arn(config, f"subnet/{subnet}"),
        _arn(config, "network-interface/*"),
        _arn(config, f"security-group/{group}"),
    ]
    if slave.ssh_key:
        resources.append(_arn(config, f"key-pair/{key}"))
    return resources


def _launch_nodes_from(config: Config) -> list[str]:
    """What a cluster's node launch uses: each cluster's image and subnet (its group below)."""
    resources: list[str] = []
    for cluster in config.clusters:
        for resource in (
            _arn(config, f"image/{cluster.image_id or '*'}", account=""),
            _arn(config, f"subnet/{cluster.subnet or '*'}"),
        ):
            if resource not in resources:
                resources.append(resource)
    return [*resources, _arn(config, "network-interface/*")]


def _fleet_request_tag(config: Config) -> dict:
    return {"StringEquals": {f"aws:RequestTag/{FLEET_TAG}": config.controller.fleet}}


def _fleet_resource_tag(config: Config) -> dict:
    return {"StringEquals": {f"aws:ResourceTag/{FLEET_TAG}": config.controller.fleet}}


def _tag_on_create(config: Config) -> list[str]:
    resources = _tagged_on_create(config)
    if Feature.OWN_SECURITY_GROUP in features(config):
        resources.append(_arn(config, "security-group/*"))
    return resources


def _create_actions(config: Config) -> dict:
    actions = ["RunInstances"]
    if Feature.OWN_SECURITY_GROUP in features(config):
        actions.append("CreateSecurityGroup")
    return {"StringEquals": {"ec2:CreateAction": actions}}


def _spot_role(config: Config) -> list[str]:
    role = f"role/aws-service-role/{SPOT_SERVICE}/{SPOT_ROLE}"
    return [f"arn:{partition(config.slave.region)}:iam::*:{role}"]


def _spot_service(config: Config) -> dict:
    return {"StringEquals": {"iam:AWSServiceName": SPOT_SERVICE}}


def _region_only(config: Config) -> dict:
    return {"StringEquals": {"aws:RequestedRegion": config.slave.region}}


def _every(*kinds: str) -> Callable[[Config], list[str]]:
    """Every resource of these kinds in the region (images and snapshots name no account)."""
    return lambda config: [
        _arn(config, f"{kind}/*", account="" if kind in ("image", "snapshot") else "*")
        for kind in kinds
    ]


def queue_arn(queue_url: str, default_region: str) -> str:
    """arn:aws:sqs:REGION:ACCOUNT:NAME from https://sqs.REGION.amazonaws.com/ACCOUNT/NAME (also
    the legacy https://queue.amazonaws.com/ACCOUNT/NAME and VPC endpoint forms)."""
    found = re.match(r"^https?://([^/]+)/(\d{12})/([A-Za-z0-9_.-]+)/?$", queue_url.strip())
    if not found:
        return f"arn:{partition(default_region)}:sqs:{default_region}:*:*"
    host, account, name = found.groups()
    region_match = re.search(r"(?:^|\.)sqs\.([a-z0-9-]+)\.", host)
    region = region_match.group(1) if region_match else default_region
    return f"arn:{partition(region)}:sqs:{region}:{account}:{name}"


RULES: tuple[Rule, ...] = (
    Rule(
        "ReadFleetAndPrices",
        Feature.ALWAYS,
        (
            "ec2:DescribeInstances",
            "ec2:DescribeSpotInstanceRequests",
            "ec2:DescribeSpotPriceHistory",
            "ec2:DescribeSecurityGroups",
            "ec2:DescribeSubnets",
            "ec2:DescribeVpcs",
            "ec2:DescribeVolumes",  # teardown: the fleet's volumes, and what sync-data left:
            "ec2:DescribeSnapshots",  # controller.cloud.staging_leftovers, which teardown
            "ec2:DescribeKeyPairs",  # always runs
        ),
        lambda config: ["*"],  # Describe calls have no resource-level permissions
        _region_only,
    ),
    Rule(
        "LaunchOnlyFleetTaggedSpotInstances",
        Feature.ALWAYS,
        ("ec2:RunInstances",),
        _tagged_on_create,
        _fleet_request_tag,
    ),
    Rule(
        "LaunchFromConfiguredImageAndNetwork", Feature.ALWAYS, ("ec2:RunInstances",), _launch_from
    ),
    Rule(
        "TagOnlyWhileCreating",
        Feature.ALWAYS,
        ("ec2:CreateTags",),
        _tag_on_create,
        _create_actions,
    ),
    Rule(
        "CreateSpotServiceLinkedRoleOnFirstSpotLaunch",
        Feature.ALWAYS,
        ("iam:CreateServiceLinkedRole",),
        _spot_role,
        _spot_service,
    ),
    Rule(
        "TerminateAndCancelOnlyThisFleet",
        Feature.ALWAYS,
        ("ec2:TerminateInstances", "ec2:CancelSpotInstanceRequests"),
        lambda config: [
            _arn(config, "instance/*"),
            _arn(config, "spot-instances-request/*"),
        ],
        _fleet_resource_tag,
    ),
    Rule(  # teardown: a volume that outlived its instance
        "DeleteOnlyThisFleetsVolumes",
        Feature.ALWAYS,
        ("ec2:DeleteVolume",),
        lambda config: [_arn(config, "volume/*")],
        _fleet_resource_tag,
    ),
    Rule(
        "LaunchClusterNodesFromConfiguredImageAndNetwork",
        Feature.CLUSTER_NODES,
        ("ec2:RunInstances",),
        _launch_nodes_from,
    ),
    Rule(
        "LaunchClusterNodesIntoThisFleetsSecurityGroup",  # controller-<fleet>-nodes, made at start
        Feature.CLUSTER_NODES,
        ("ec2:RunInstances",),
        lambda config: [_arn(config, "security-group/*")],
        _fleet_resource_tag,
    ),
    Rule(
        "LaunchWithDataSnapshots",
        Feature.DATA_SNAPSHOTS,
        ("ec2:RunInstances",),
        lambda config: [
            _arn(config, f"snapshot/{snapshot}", account="") for snapshot in _snapshots(config)
        ],
    ),
    Rule(
        "CreateSecurityGroupInVpc",
        Feature.OWN_SECURITY_GROUP,
        ("ec2:CreateSecurityGroup",),
        lambda config: [_arn(config, "vpc/*")],
    ),
    Rule(
        "CreateOnlyFleetTaggedSecurityGroup",
        Feature.OWN_SECURITY_GROUP,
        ("ec2:CreateSecurityGroup",),
        lambda config: [_arn(config, "security-group/*")],
        _fleet_request_tag,
    ),
    Rule(
        "ManageOnlyThisFleetsSecurityGroup",
        Feature.OWN_SECURITY_GROUP,
        (
            "ec2:AuthorizeSecurityGroupIngress",
            "ec2:RevokeSecurityGroupIngress",
            "ec2:DeleteSecurityGroup",
        ),
        lambda config: [_arn(config, "security-group/*")],
        _fleet_resource_tag,
    ),
    Rule(  # any image (`--image-id` may name a new one), its own group and key pair; the subnet
        "SyncDataLaunchStagingInstance",  # is the slaves' (LaunchFromConfiguredImageAndNetwork)
        Feature.SYNC_DATA,
        ("ec2:RunInstances",),
        _every("image", "security-group", "key-pair"),
    ),
    Rule(
        "SyncDataCreateOnlyFleetTaggedGroupKeyPairAndSnapshot",
        Feature.SYNC_DATA,
        ("ec2:CreateSecurityGroup", "ec2:ImportKeyPair", "ec2:CreateSnapshot"),
        _every("security-group", "key-pair", "snapshot"),
        _fleet_request_tag,
    ),
    Rule(
        "SyncDataCreateGroupInVpc", Feature.SYNC_DATA, ("ec2:CreateSecurityGroup",), _every("vpc")
    ),
    Rule(
        "SyncDataTagOnlyWhileCreating",
        Feature.SYNC_DATA,
        ("ec2:CreateTags",),
        _every("security-group", "key-pair", "snapshot"),
        lambda config: {
            "StringEquals": {
                "ec2:CreateAction": ["CreateSecurityGroup", "CreateSnapshot", "ImportKeyPair"]
            }
        },
    ),
    Rule(
        "SyncDataManageOnlyThisFleetsStagingResources",
        Feature.SYNC_DATA,
        (
            "ec2:AuthorizeSecurityGroupIngress",
            "ec2:DeleteSecurityGroup",
            "ec2:DeleteKeyPair",
            "ec2:GetConsoleOutput",
            "ec2:CreateSnapshot",  # of the staging volume
            "ec2:DeleteSnapshot",
            "ec2:CreateTags",  # a snapshot the config names becomes controller:role=data
        ),
        _every("security-group", "key-pair", "volume", "instance", "snapshot"),
        _fleet_resource_tag,
    ),
    Rule(
        "ReadSpotInterruptionQueue",
        Feature.INTERRUPTION_QUEUE,
        ("sqs:ReceiveMessage", "sqs:DeleteMessage"),
        lambda config: [queue_arn(config.scaling.interruption_queue, config.slave.region)],
    ),
)


def kms_key_arn(key: str, region: str) -> str:
    """The ARN of a KMS key given as its ARN or its bare id (account left as `*`).

    ValueError, one line, for anything else: an alias cannot stand for its key in an IAM policy
    (KMS authorises the key's own ARN).
    """
    key = key.strip()
    if re.fullmatch(r"arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:key/[A-Za-z0-9-]+", key):
        return key
    if re.fullmatch(r"(mrk-)?[0-9a-f]{32}|[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}", key):
        return f"arn:{partition(region)}:kms:{region}:*:key/{key}"
    raise ValueError(
        f"--kms-key {key!r}: not a KMS key ARN (arn:aws:kms:REGION:ACCOUNT:key/ID) or key id: "
        "give the key itself, not an alias (`aws kms describe-key --key-id ALIAS` shows its ARN)"
    )


def kms_statements(config: Config, kms_keys: Sequence[str]) -> list[dict]:
    """What launching from images or snapshots encrypted with these customer managed keys needs.

    EC2 uses the keys as the caller, so each action is bound to EC2 in the config's region
    (kms:ViaService), and the grant to one EC2 makes for its own resources (the volume attached
    to the instance: kms:GrantIsForAWSResource). The key policies must allow this account's IAM
    policies (the default key policy does). No keys, no statements.
    """
    region = config.slave.region
    keys = list(dict.fromkeys(kms_key_arn(key, region) for key in kms_keys))
    if not keys:
        return []
    suffix = "amazonaws.com.cn" if partition(region) == "aws-cn" else "amazonaws.com"
    via_ec2 = {"kms:ViaService": f"ec2.{region}.{suffix}"}
    return [
        {
            "Sid": "UseKmsKeysOfEncryptedImagesAndSnapshotsThroughEc2",
            "Effect": "Allow",
            "Action": sorted(KMS_USE_ACTIONS),
            "Resource": keys,
            "Condition": {"StringEquals": via_ec2},
        },
        {
            "Sid": "LetEc2GrantItsVolumesTheKmsKeys",
            "Effect": "Allow",
            "Action": [KMS_GRANT_ACTION],
            "Resource": keys,
            "Condition": {"Bool": {"kms:GrantIsForAWSResource": "true"}, "StringEquals": via_ec2},
        },
    ]


def iam_policy(config: Config, kms_keys: Sequence[str] = (), *, sync_data: bool = False) -> dict:
    """The IAM policy document (JSON-ready) granting exactly what this config needs, and the use
    of `kms_keys` (ARNs or ids; ValueError for anything else) for encrypted images or snapshots.
    `sync_data`: also what `controller sync-data` needs (on anyway with data snapshots)."""
    on = features(config) | ({Feature.SYNC_DATA} if sync_data else set())
    return {
        "Version": "2012-10-17",
        "Statement": [rule.statement(config) for rule in RULES if rule.feature in on]
        + kms_statements(config, kms_keys),
    }


def granted_actions(config: Config, kms_keys: Sequence[str] = ()) -> set[str]:
    return {
        action
        for statement in iam_policy(config, kms_keys)["Statement"]
        for action in statement["Action"]
    }
