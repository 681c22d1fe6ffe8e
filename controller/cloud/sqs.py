"""SQS behind the cloud port: the clients that read the spot interruption queue.

The queue's region comes from its URL. The endpoint is `[aws] sqs_endpoint_url` when set; else,
for a queue URL that is not AWS's (`https://sqs.REGION.amazonaws.com/...`: an emulator's, such as
moto's `http://127.0.0.1:5000/123456789012/q`), the URL's own scheme, host and port, since the
queue lives there; else AWS's SQS endpoint for the region. Never `[aws] endpoint_url` (EC2's, often
a VPC endpoint for EC2, which serves no SQS). Credentials are EC2's (controller.cloud.credentials).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any
from urllib.parse import urlsplit

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


def queue_endpoint(config: Config) -> str | None:
    """Where SQS calls go (module docstring); None = AWS's endpoint for the queue's region."""
    if config.aws.sqs_endpoint_url:
        return config.aws.sqs_endpoint_url
    queue_url = config.scaling.interruption_queue.strip()
    if queue_region(queue_url):
        return None
    parts = urlsplit(queue_url)
    if parts.scheme in ("http", "https") and parts.netloc:
        return f"{parts.scheme}://{parts.netloc}"
    return None


def sqs_client_factory(config: Config) -> SqsClientFactory:
    """Aiobotocore SQS clients for the queue's region, at `queue_endpoint(config)`."""
    session = aiobotocore.session.get_session()
    aio_config = AioConfig(
        retries={"mode": config.aws.retry_mode, "total_max_attempts": config.aws.max_attempts},
        connect_timeout=config.aws.call_timeout,
        # A long poll holds the connection open for up to LONG_POLL_SECONDS before answering.
        read_timeout=config.aws.call_timeout + LONG_POLL_SECONDS,
    )
    region = queue_region(config.scaling.interruption_queue) or config.slave.region
    endpoint = queue_endpoint(config)

    @contextlib.asynccontextmanager
    async def create() -> AsyncIterator[Any]:
        # The seed's EC2_ACCESS_KEY/EC2_SECRET_KEY when the AWS chain has nothing, as for EC2.
        fallback = await seed_credentials(session)
        async with session.create_client(
            "sqs",
            region_name=region,
            endpoint_url=endpoint,
            config=aio_config,
            **fallback,
        ) as client:
            yield client

    return create
