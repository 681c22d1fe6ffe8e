"""The IAM policy: least privilege per feature, and checked against the AWS calls the code makes.

The call scan reads controller/ and actors/ for aiobotocore client calls (`.run_instances(`,
bound methods like `.revoke_security_group_ingress`, paginators named "describe_instances") of
the services the controller uses, and maps them to IAM actions with botocore's operation names.
It is generic on purpose: a new call anywhere without a rule in controller.cloud.iam.RULES fails
here, and so does a rule that no code needs.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import boto3
import botocore.session
import pytest
from botocore import xform_name

from controller.cloud.iam import (
    IAM_ACTION_OF_OPERATION,
    IMPLIED_ACTIONS,
    RULES,
    Feature,
    granted_actions,
    iam_policy,
    kms_key_arn,
    kms_statements,
    queue_arn,
)
from controller.config.schema import (
    ClusterSection,
    Config,
    ControllerSection,
    ScalingSection,
    SlaveSection,
    VolumeSection,
)
from tests.harness.moto_server import MotoServer

ROOT = Path(__file__).resolve().parents[1]
SERVICES = {"ec2": "ec2", "sqs": "sqs"}  # botocore service name -> IAM prefix
QUEUE = "https://sqs.eu-west-1.amazonaws.com/123456789012/spot-interruptions"
KEY = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"

FULL = Config(
    controller=ControllerSection(fleet="gbrowse"),
    slave=SlaveSection(
        image_id="ami-0abc",
        subnet="subnet-0def",
        security_group="",
        data_snapshots=("snap-1", "snap-2"),
        availability_zone="us-east-1a",
        ssh_key="gbrowse-admin",
    ),
    scaling=ScalingSection(interruption_queue=QUEUE),
)
MINIMAL = replace(
    FULL,
    slave=replace(FULL.slave, security_group="sg-0123", data_snapshots=()),
    scaling=ScalingSection(interruption_queue=""),
)

# a cluster config: the render farm's own group is given, but the nodes' group is always made
CLUSTER = replace(
    MINIMAL,
    clusters=(
        ClusterSection(
            name="small",
            image_id="ami-0node",
            subnet="subnet-0nodes",
            volumes=("data", "build"),
        ),
        ClusterSection(name="big", extends="small", image_id="ami-0big", volumes=("data",)),
    ),
    volumes=(
        VolumeSection(name="data", snapshot_id="snap-0data", mount_path="/segway-data"),
        VolumeSection(name="build", volume_id="vol-0shared", mount_path="/segway-build"),
    ),
)


def called_actions() -> dict[str, list[str]]:
    """IAM action -> files calling it, from the source of controller/ and actors/."""
    session = botocore.session.get_session()
    operations: dict[str, str] = {}
    for service, prefix in SERVICES.items():
        for name in session.get_service_model(service).operation_names:
            operations[xform_name(name)] = f"{prefix}:{name}"
    # `.run_instances(`, `.authorize_security_group_ingress` handed on as a callable, and
    # operation names in quotes (get_paginator("describe_instances")).
    pattern = re.compile(r"""\.([a-z][a-z0-9_]+)\b|["']([a-z][a-z0-9_]+)["']""")
    found: dict[str, list[str]] = {}
    for path in sorted([*ROOT.glob("controller/**/*.py"), *ROOT.glob("actors/**/*.py")]):
        for match in pattern.finditer(path.read_text()):
            name = match.group(1) or match.group(2)
            if name in operations:
                action = operations[name]
                action = IAM_ACTION_OF_OPERATION.get(action, action)
                found.setdefault(action, []).append(str(path.relative_to(ROOT)))
    return found


def statements(config: Config) -> dict[str, dict]:
    return {s["Sid"]: s for s in iam_policy(config)["Statement"]}


def test_every_call_the_code_makes_is_granted_by_the_full_policy():
    called = called_actions()
    assert "ec2:RunInstances" in called and "ec2:DescribeInstances" in called  # the scan works
    missing = {a: files for a, files in called.items() if a not in granted_actions(FULL)}
    assert not missing, f"add these to controller.cloud.iam.RULES: {missing}"


def test_no_granted_action_is_unused():
    unused = granted_actions(FULL) - set(called_actions()) - set(IMPLIED_ACTIONS)
    assert not unused, f"nothing calls these, remove them from controller.cloud.iam.RULES: {unused}"


def test_no_wildcard_actions_and_no_iam_but_the_spot_role():
    for statement in iam_policy(FULL, [KEY])["Statement"]:
        for action in statement["Action"]:
            assert "*" not in action
            if action.startswith("iam:"):
                assert statement["Sid"] == "CreateSpotServiceLinkedRoleOnFirstSpotLaunch"
    assert {a for a in granted_actions(FULL, [KEY]) if a.startswith("iam:")} == {
        "iam:CreateServiceLinkedRole"
    }


@pytest.mark.parametrize("config", [FULL, MINIMAL, CLUSTER])
def test_every_config_may_create_the_spot_service_linked_role_and_only_it(config):
    """EC2 creates AWSServiceRoleForEC2Spot as the caller on an account's first spot launch;
    without this RunInstances answers AuthFailure.ServiceLinkedRoleCreationNotPermitted."""
    assert statements(config)["CreateSpotServiceLinkedRoleOnFirstSpotLaunch"] == {
        "Sid": "CreateSpotServiceLinkedRoleOnFirstSpotLaunch",
        "Effect": "Allow",
        "Action": ["iam:CreateServiceLinkedRole"],
        "Resource": [
            "arn:aws:iam::*:role/aws-service-role/spot.amazonaws.com/AWSServiceRoleForEC2Spot"
        ],
        "Condition": {"StringEquals": {"iam:AWSServiceName": "spot.amazonaws.com"}},
    }


def test_kms_keys_add_exactly_the_ebs_encryption_statements():
    other = "arn:aws:kms:us-east-1:123456789012:key/mrk-0123456789abcdef0123456789abcdef"
    without = iam_policy(FULL)["Statement"]
    added = iam_policy(FULL, [KEY, other, KEY])["Statement"]
    assert added[: len(without)] == without
    via_ec2 = {"kms:ViaService": "ec2.us-east-1.amazonaws.com"}
    assert added[len(without) :] == [
        {
            "Sid": "UseKmsKeysOfEncryptedImagesAndSnapshotsThroughEc2",
            "Effect": "Allow",
            "Action": [
                "kms:Decrypt",
                "kms:DescribeKey",
                "kms:GenerateDataKeyWithoutPlaintext",
                "kms:ReEncryptFrom",
                "kms:ReEncryptTo",
            ],
            "Resource": [KEY, other],
            "Condition": {"StringEquals": via_ec2},
        },
        {
            "Sid": "LetEc2GrantItsVolumesTheKmsKeys",
            "Effect": "Allow",
            "Action": ["kms:CreateGrant"],
            "Resource": [KEY, other],
            "Condition": {
                "Bool": {"kms:GrantIsForAWSResource": "true"},
                "StringEquals": via_ec2,
            },
        },
    ]
    assert "kms:" not in json.dumps(without)
    assert not granted_actions(FULL, [KEY]) - set(called_actions()) - set(IMPLIED_ACTIONS)


def test_kms_key_ids_become_arns_and_aliases_are_refused():
    key_id = "1234abcd-12ab-34cd-56ef-1234567890ab"
    assert kms_key_arn(key_id, "eu-west-1") == f"arn:aws:kms:eu-west-1:*:key/{key_id}"
    assert kms_key_arn(KEY, "eu-west-1") == KEY
    china = replace(FULL, slave=replace(FULL.slave, region="cn-north-1"))
    [use, _] = kms_statements(china, [key_id])
    assert use["Resource"] == [f"arn:aws-cn:kms:cn-north-1:*:key/{key_id}"]
    assert use["Condition"] == {
        "StringEquals": {"kms:ViaService": "ec2.cn-north-1.amazonaws.com.cn"}
    }
    for bad in ("alias/ebs", "arn:aws:kms:us-east-1:123456789012:alias/ebs", "key"):
        with pytest.raises(ValueError, match="not a KMS key ARN") as caught:
            iam_policy(FULL, [bad])
        assert "\n" not in str(caught.value)


def test_own_security_group_feature():
    full, minimal = granted_actions(FULL), granted_actions(MINIMAL)
    group_actions = {
        "ec2:CreateSecurityGroup",
        "ec2:DeleteSecurityGroup",
        "ec2:AuthorizeSecurityGroupIngress",
        "ec2:RevokeSecurityGroupIngress",
    }
    assert group_actions <= full
    assert not group_actions & minimal
    tag = statements(MINIMAL)["TagOnlyWhileCreating"]
    assert tag["Condition"] == {"StringEquals": {"ec2:CreateAction": ["RunInstances"]}}
    assert (
        "arn:aws:ec2:us-east-1:*:security-group/sg-0123"
        in statements(MINIMAL)["LaunchFromConfiguredImageAndNetwork"]["Resource"]
    )
    manage = statements(FULL)["ManageOnlyThisFleetsSecurityGroup"]
    assert manage["Condition"] == {"StringEquals": {"aws:ResourceTag/controller:fleet": "gbrowse"}}


def test_clusters_launch_from_their_images_subnets_snapshots_and_own_group():
    """`run --cluster NAME` must work under the printed policy: each cluster's image and
    subnet, its nodes' snapshot volumes (not the shared volume_id, which goes over NFS), and
    the nodes' security group the controller creates even when [slave] names one."""
    s = statements(CLUSTER)
    nodes = s["LaunchClusterNodesFromConfiguredImageAndNetwork"]["Resource"]
    assert nodes == [
        "arn:aws:ec2:us-east-1::image/ami-0node",
        "arn:aws:ec2:us-east-1:*:subnet/subnet-0nodes",
        "arn:aws:ec2:us-east-1::image/ami-0big",
        "arn:aws:ec2:us-east-1:*:subnet/*",
        "arn:aws:ec2:us-east-1:*:network-interface/*",
    ]
    group = s["LaunchClusterNodesIntoThisFleetsSecurityGroup"]
    assert group["Resource"] == ["arn:aws:ec2:us-east-1:*:security-group/*"]
    assert group["Condition"] == {"StringEquals": {"aws:ResourceTag/controller:fleet": "gbrowse"}}
    assert s["LaunchWithDataSnapshots"]["Resource"] == [
        "arn:aws:ec2:us-east-1::snapshot/snap-0data"
    ]
    assert {"ec2:CreateSecurityGroup", "ec2:DeleteSecurityGroup"} <= granted_actions(CLUSTER)
    assert "ManageOnlyThisFleetsSecurityGroup" in s
    assert "LaunchClusterNodesFromConfiguredImageAndNetwork" not in statements(MINIMAL)


def test_snapshots_only_with_data_snapshots():
    assert statements(FULL)["LaunchWithDataSnapshots"]["Resource"] == [
        "arn:aws:ec2:us-east-1::snapshot/snap-1",
        "arn:aws:ec2:us-east-1::snapshot/snap-2",
    ]
    # no snapshot resource; DescribeSnapshots only, for teardown's look for sync-data's leftovers
    resources = json.dumps([s["Resource"] for s in iam_policy(MINIMAL)["Statement"]])
    assert "snapshot" not in resources.lower()
    assert {a for a in granted_actions(MINIMAL) if "Snapshot" in a} == {"ec2:DescribeSnapshots"}


def test_sqs_only_with_the_queue_and_only_on_it():
    assert not any(a.startswith("sqs:") for a in granted_actions(MINIMAL))
    sqs = statements(FULL)["ReadSpotInterruptionQueue"]
    assert sqs["Action"] == ["sqs:DeleteMessage", "sqs:ReceiveMessage"]
    assert sqs["Resource"] == ["arn:aws:sqs:eu-west-1:123456789012:spot-interruptions"]


def test_terminate_cancel_and_launch_are_bound_to_the_fleet_tag():
    s = statements(FULL)
    fleet = {"StringEquals": {"aws:ResourceTag/controller:fleet": "gbrowse"}}
    assert s["TerminateAndCancelOnlyThisFleet"]["Condition"] == fleet
    launch = s["LaunchOnlyFleetTaggedSpotInstances"]
    assert launch["Condition"] == {"StringEquals": {"aws:RequestTag/controller:fleet": "gbrowse"}}
    assert "arn:aws:ec2:us-east-1:*:instance/*" in launch["Resource"]
    assert s["ReadFleetAndPrices"]["Condition"] == {
        "StringEquals": {"aws:RequestedRegion": "us-east-1"}
    }
    network = s["LaunchFromConfiguredImageAndNetwork"]["Resource"]
    assert "arn:aws:ec2:us-east-1::image/ami-0abc" in network
    assert "arn:aws:ec2:us-east-1:*:subnet/subnet-0def" in network
    assert "arn:aws:ec2:us-east-1:*:key-pair/gbrowse-admin" in network


def test_every_rule_has_a_unique_sid():
    sids = [rule.sid for rule in RULES]
    assert len(sids) == len(set(sids)) and all(re.fullmatch(r"[A-Za-z0-9]+", s) for s in sids)
    assert {rule.feature for rule in RULES} == set(Feature)


@pytest.mark.parametrize(
    ("url", "arn"),
    [
        (QUEUE, "arn:aws:sqs:eu-west-1:123456789012:spot-interruptions"),
        ("https://queue.amazonaws.com/123456789012/q", "arn:aws:sqs:us-east-1:123456789012:q"),
        (
            "https://sqs.cn-north-1.amazonaws.com.cn/123456789012/q.fifo",
            "arn:aws-cn:sqs:cn-north-1:123456789012:q.fifo",
        ),
        ("http://127.0.0.1:5000/123456789012/q", "arn:aws:sqs:us-east-1:123456789012:q"),
    ],
)
def test_queue_arn_from_url(url, arn):
    assert queue_arn(url, "us-east-1") == arn


def test_policy_documents_are_accepted_by_an_iam_server(moto_server: MotoServer):
    """moto's IAM validates policy grammar (Version, Effect, Action, ARNs, Condition)."""
    iam = boto3.client("iam", region_name="us-east-1", endpoint_url=moto_server.endpoint_url)
    for n, (config, keys) in enumerate(((FULL, [KEY]), (MINIMAL, []), (CLUSTER, []))):
        document = json.dumps(iam_policy(config, keys))
        created = iam.create_policy(PolicyName=f"controller-{n}", PolicyDocument=document)
        assert created["Policy"]["Arn"].endswith(f"controller-{n}")


def test_command_prints_json(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text(
        '[controller]\nfleet = "farm"\n[slave]\nsecurity_group = "sg-0123"\nimage_id = "ami-1"\n'
    )
    result = subprocess.run(
        [sys.executable, "-m", "controller.cli", "iam-policy", "-c", str(config)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    policy = json.loads(result.stdout)
    assert policy["Version"] == "2012-10-17"
    assert "ec2:CreateSecurityGroup" not in result.stdout and '"farm"' in result.stdout


def test_command_kms_keys(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text('[controller]\nfleet = "farm"\n[slave]\nsecurity_group = "sg-0123"\n')
    command = [sys.executable, "-m", "controller.cli", "iam-policy", "-c", str(config)]
    run = {"capture_output": True, "text": True, "cwd": ROOT, "timeout": 60}

    result = subprocess.run([*command, "--kms-key", KEY, "--kms-key", KEY], **run)
    assert result.returncode == 0, result.stderr
    kms = [s for s in json.loads(result.stdout)["Statement"] if s["Action"][0].startswith("kms:")]
    assert [s["Resource"] for s in kms] == [[KEY], [KEY]]

    result = subprocess.run([*command, "--kms-key", "alias/ebs"], **run)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("--kms-key 'alias/ebs': not a KMS key ARN")


def test_command_bad_config(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text("[slave]\nno_such_key = 1\n")
    result = subprocess.run(
        [sys.executable, "-m", "controller.cli", "iam-policy", "-c", str(config)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert result.returncode == 2 and result.stdout == ""
    assert "no_such_key" in result.stderr
