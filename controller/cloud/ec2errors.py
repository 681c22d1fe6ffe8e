"""EC2 failures as data: every exception an EC2 call can raise becomes a `ProviderError`.

The kind is what the next decision reads (SpotPool tries the next instance type on CAPACITY, waits
on PRICE, holds on UNAVAILABLE, stops and says so on AUTH or INVALID), so the table below is the
whole policy of "what does this EC2 error code mean to us". Codes come from EC2's error reference;
an unknown code falls back on its HTTP status: 5xx is the service's problem, 4xx is ours.
"""

from __future__ import annotations

import asyncio

import aiohttp
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
)
from botocore.exceptions import (
    ConnectionError as BotoConnectionError,
)

from controller.cloud.port import ProviderError
from controller.messages import ErrorKind

DRY_RUN_CODE = "DryRunOperation"

# What an EC2 call may raise that is the provider's answer rather than a bug of ours.
EC2_ERRORS: tuple[type[BaseException], ...] = (
    ClientError,
    BotoCoreError,
    aiohttp.ClientError,
    OSError,
    asyncio.TimeoutError,
)

# Exact EC2 error codes.
CODE_KINDS: dict[str, ErrorKind] = {
    DRY_RUN_CODE: ErrorKind.DRY_RUN_OK,
    # No room for this type in this zone right now: try another type or zone.
    "InsufficientInstanceCapacity": ErrorKind.CAPACITY,
    "InsufficientCapacity": ErrorKind.CAPACITY,
    "InsufficientHostCapacity": ErrorKind.CAPACITY,
    "InsufficientReservedInstanceCapacity": ErrorKind.CAPACITY,
    "InsufficientFreeAddressesInSubnet": ErrorKind.CAPACITY,
    "Unsupported": ErrorKind.CAPACITY,  # the type is not offered in this zone
    "SpotMaxPriceTooLow": ErrorKind.PRICE,
    # Account quotas: more attempts will not help until the quota changes.
    "MaxSpotInstanceCountExceeded": ErrorKind.LIMIT,
    "MaxSpotFleetRequestCountExceeded": ErrorKind.LIMIT,
    "VcpuLimitExceeded": ErrorKind.LIMIT,
    "InstanceLimitExceeded": ErrorKind.LIMIT,
    "SecurityGroupLimitExceeded": ErrorKind.LIMIT,
    "RulesPerSecurityGroupLimitExceeded": ErrorKind.LIMIT,
    "VolumeLimitExceeded": ErrorKind.LIMIT,
    "ResourceLimitExceeded": ErrorKind.LIMIT,
    # Still throttled after botocore's own retries.
    "RequestLimitExceeded": ErrorKind.THROTTLED,
    "Throttling": ErrorKind.THROTTLED,
    "ThrottlingException": ErrorKind.THROTTLED,
    "RequestThrottled": ErrorKind.THROTTLED,
    "RequestThrottledException": ErrorKind.THROTTLED,
    "TooManyRequestsException": ErrorKind.THROTTLED,
    "SlowDown": ErrorKind.THROTTLED,
    # Credentials or permissions.
    "UnauthorizedOperation": ErrorKind.AUTH,
    "AuthFailure": ErrorKind.AUTH,
    "InvalidClientTokenId": ErrorKind.AUTH,
    "SignatureDoesNotMatch": ErrorKind.AUTH,
    "ExpiredToken": ErrorKind.AUTH,
    "RequestExpired": ErrorKind.AUTH,
    "AccessDenied": ErrorKind.AUTH,
    "AccessDeniedException": ErrorKind.AUTH,
    "OptInRequired": ErrorKind.AUTH,
    "Blocked": ErrorKind.AUTH,
    "PendingVerification": ErrorKind.AUTH,
    # The service's side.
    "InternalError": ErrorKind.UNAVAILABLE,
    "InternalFailure": ErrorKind.UNAVAILABLE,
    "ServiceUnavailable": ErrorKind.UNAVAILABLE,
    "Unavailable": ErrorKind.UNAVAILABLE,
    "RequestTimeout": ErrorKind.UNAVAILABLE,
    "RequestTimeoutException": ErrorKind.UNAVAILABLE,
    # A bad request that the same parameters will never fix.
    "InvalidGroup.NotFound": ErrorKind.INVALID,
    "MissingParameter": ErrorKind.INVALID,
    "IdempotentParameterMismatch": ErrorKind.INVALID,
    "IncorrectInstanceState": ErrorKind.INVALID,
    "IncorrectState": ErrorKind.INVALID,
    "DependencyViolation": ErrorKind.INVALID,  # the group is still used by an instance
    "UnknownParameter": ErrorKind.INVALID,
    "ValidationError": ErrorKind.INVALID,
}

# Code families, matched by prefix when the exact code is not listed
# (InvalidAMIID.NotFound, InvalidAMIID.Malformed, InvalidSubnetID.NotFound, InvalidKeyPair...).
# A permission refused is AUTH whatever follows the dot: AuthFailure.ServiceLinkedRoleCreation-
# NotPermitted (no iam:CreateServiceLinkedRole on the first spot launch of an account) must stop
# the launches and say what to grant, not pass for a bad parameter.
PREFIX_KINDS: tuple[tuple[str, ErrorKind], ...] = (
    ("AuthFailure", ErrorKind.AUTH),
    ("UnauthorizedOperation", ErrorKind.AUTH),
    ("Insufficient", ErrorKind.CAPACITY),
    ("Invalid", ErrorKind.INVALID),
)

SPOT_ROLE_CODE = "AuthFailure.ServiceLinkedRoleCreationNotPermitted"
# What to do, added to EC2's own message where EC2's says only what went wrong.
CODE_HINTS: dict[str, str] = {
    SPOT_ROLE_CODE: "the account has no AWSServiceRoleForEC2Spot yet and these credentials may "
    "not create it: grant iam:CreateServiceLinkedRole for spot.amazonaws.com (the policy "
    "`controller iam-policy` prints has it), or create the role once with `aws iam "
    "create-service-linked-role --aws-service-name spot.amazonaws.com`",
}


def kind_of(code: str, status: int | None = None) -> ErrorKind:
    """The kind of an EC2 error code; an unknown code is judged by its HTTP status."""
    if code in CODE_KINDS:
        return CODE_KINDS[code]
    for prefix, kind in PREFIX_KINDS:
        if code.startswith(prefix):
            return kind
    if status is not None and status >= 500:
        return ErrorKind.UNAVAILABLE
    return ErrorKind.INVALID


def classify(
    exc: BaseException, operation: str, *, instance_type: str = "", zone: str = ""
) -> ProviderError:
    """The ProviderError for an exception raised by an EC2 call (botocore, aiohttp, timeouts)."""
    where = {"operation": operation, "instance_type": instance_type, "zone": zone}
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code") or "Unknown")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        message = str(error.get("Message") or exc)
        if code in CODE_HINTS:
            message = f"{message} ({CODE_HINTS[code]})"
        return ProviderError(kind=kind_of(code, status), code=code, message=message, **where)
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return ProviderError(
            kind=ErrorKind.AUTH,
            code="NoCredentials",
            message="no AWS credentials found: configure the AWS credential chain "
            "(environment, profile, SSO, instance role) or set EC2_ACCESS_KEY and EC2_SECRET_KEY",
            **where,
        )
    if isinstance(exc, NoRegionError):
        return ProviderError(
            kind=ErrorKind.INVALID,
            code="NoRegion",
            message="no AWS region: set [slave] region",
            **where,
        )
    if isinstance(exc, BotoConnectionError | TimeoutError | asyncio.TimeoutError | OSError):
        return ProviderError(
            kind=ErrorKind.UNAVAILABLE,
            code=type(exc).__name__,
            message=str(exc) or type(exc).__name__,
            **where,
        )
    if isinstance(exc, BotoCoreError):
        return ProviderError(
            kind=ErrorKind.UNAVAILABLE, code=type(exc).__name__, message=str(exc), **where
        )
    # aiohttp's ClientError and anything else the transport raises.
    return ProviderError(
        kind=ErrorKind.UNAVAILABLE,
        code=type(exc).__name__,
        message=str(exc) or type(exc).__name__,
        **where,
    )
