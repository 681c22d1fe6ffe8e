"""SQS behind the cloud port: the clients that read the spot interruption queue.

The queue's region comes from its URL; the endpoint is `[aws] sqs_endpoint_url` when set, never
`[aws] endpoint_url` (EC2's, often a VPC endpoint for EC2, which serves no SQS). Credentials are
EC2's (controller.cloud.credentials).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import aiobotocore.session
import aiohttp
from aiobotocore.config import AioConfig
from botocore.exceptions import BotoCoreError, ClientError

from controller.cloud.credentials import seed_credentials
from controller.config.schema import Config

LONG_POLL_SECONDS = 20  # SQS's maximum WaitTimeSeconds
SQS_ERRORS: tuple[type[BaseException], ...] = (
    ClientError,
    BotoCoreError,
    aiohttp.ClientError,
    OSError,
    TimeoutError,
)
SqsClientFactory = Callable[[], AbstractAsyncContextManager[Any]]


def error_code(exc: BaseException) -> str:
    """The AWS error code of a failed SQS call ("" when it failed before SQS answered)."""
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return ""


def queue_region(queue_url: str) -> str:
    """The region in an AWS queue URL (https://sqs.REGION.amazonaws.com/...), "" if none."""
    found = re.match(r"^https?://sqs\.([a-z0-9-]+)\.amazonaws\.com", queue_url)
    return found.group(1) if found else ""


def sqs_client_factory(config: Config) -> SqsClientFactory:
    """Aiobotocore SQS clients for the queue's region, at `[aws] sqs_endpoint_url` when set.

    Never at `[aws] endpoint_url`: that one is EC2's (often a VPC endpoint for EC2), which serves
    no SQS."""
    session = aiobotocore.session.get_session()
    aio_config = AioConfig(
        retries={"mode": config.aws.retry_mode, "total_max_attempts": config.aws.max_attempts},
        connect_timeout=config.aws.call_timeout,
        # A long poll holds the connection open for up to LONG_POLL_SECONDS before answering.
        read_timeout=config.aws.call_timeout + LONG_POLL_SECONDS,
    )
    region = queue_region(config.scaling.interruption_queue) or config.slave.region

    @contextlib.asynccontextmanager
    async def create() -> AsyncIterator[Any]:
        # The seed's EC2_ACCESS_KEY/EC2_SECRET_KEY when the AWS chain has nothing, as for EC2.
        fallback = await seed_credentials(session)
        async with session.create_client(
            "sqs",
            region_name=region,
            endpoint_url=config.aws.sqs_endpoint_url or None,
            config=aio_config,
            **fallback,
        ) as client:
            yield client

    return create
