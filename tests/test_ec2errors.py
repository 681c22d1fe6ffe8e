"""Permission failures are AUTH, whatever EC2 appends to the code.

The first spot launch of an account makes EC2 create the AWSServiceRoleForEC2Spot service-linked
role as the caller; credentials without iam:CreateServiceLinkedRole get
AuthFailure.ServiceLinkedRoleCreationNotPermitted (HTTP 403). That is a missing permission, to be
reported with what to grant, not a bad parameter. The end-to-end case goes through the real
client against moto behind the fault proxy, so botocore parses the error as it would EC2's.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from botocore.exceptions import ClientError

from controller.cloud.ec2cloud import Ec2Cloud
from controller.cloud.ec2errors import classify, kind_of
from controller.cloud.port import LaunchSpec
from controller.messages import ErrorKind, Role
from tests.harness.fault_proxy import FaultProxy
from tests.harness.moto_server import MotoEc2

SPOT_ROLE = "AuthFailure.ServiceLinkedRoleCreationNotPermitted"
EC2_MESSAGE = (
    "The provided credentials do not have permission to create the service-linked role for "
    "EC2 Spot Instances."
)


@pytest.mark.parametrize(
    ("code", "status"),
    [
        (SPOT_ROLE, 403),
        (SPOT_ROLE, 400),  # the family decides, not the status
        ("AuthFailure.SomethingNew", 401),
        ("UnauthorizedOperation.SomethingNew", 403),
        ("AuthFailure", 401),
        ("UnauthorizedOperation", 403),
    ],
)
def test_permission_families_are_auth(code: str, status: int) -> None:
    assert kind_of(code, status) is ErrorKind.AUTH


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        ("InvalidAMIID.NotFound", ErrorKind.INVALID),  # the other families are unchanged
        ("InsufficientInstanceCapacity", ErrorKind.CAPACITY),
        ("SomethingNew", ErrorKind.INVALID),
    ],
)
def test_other_families_keep_their_kinds(code: str, kind: ErrorKind) -> None:
    assert kind_of(code, 400) is kind


def test_spot_role_refusal_says_what_to_grant() -> None:
    exc = ClientError(
        {
            "Error": {"Code": SPOT_ROLE, "Message": EC2_MESSAGE},
            "ResponseMetadata": {"HTTPStatusCode": 403},
        },
        "RunInstances",
    )

    error = classify(exc, "RunInstances")

    assert (error.kind, error.code) == (ErrorKind.AUTH, SPOT_ROLE)
    assert error.message.startswith(EC2_MESSAGE)
    assert "iam:CreateServiceLinkedRole" in error.message
    assert "aws iam create-service-linked-role --aws-service-name spot.amazonaws.com" in (
        error.message
    )
    assert "\n" not in error.message


@pytest.fixture
async def proxied(moto_ec2: MotoEc2, fault_proxy: FaultProxy) -> AsyncIterator[Ec2Cloud]:
    async with Ec2Cloud(
        moto_ec2.region, endpoint_url=fault_proxy.endpoint_url, max_attempts=1, call_timeout=5
    ) as cloud:
        yield cloud


async def test_first_spot_launch_without_the_role_permission_is_auth(
    proxied: Ec2Cloud, moto_ec2: MotoEc2, fault_proxy: FaultProxy
) -> None:
    fault_proxy.fail("RunInstances", SPOT_ROLE, EC2_MESSAGE, status=403)

    result = await proxied.launch(
        LaunchSpec(
            fleet="farm",
            role=Role.SLAVE,
            image_id="ami-12345678",
            instance_type="m5.large",
            count=1,
            client_token="token-1",
            subnet=moto_ec2.subnet_id,
        )
    )

    assert result.instances == ()
    error = result.error
    assert error is not None
    assert (error.kind, error.code, error.operation) == (ErrorKind.AUTH, SPOT_ROLE, "RunInstances")
    assert "iam:CreateServiceLinkedRole" in error.message
    assert fault_proxy.count("RunInstances") == 1
