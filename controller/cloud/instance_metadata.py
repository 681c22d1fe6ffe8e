"""The master's EC2 instance metadata, asked the way botocore asks it (IMDSv2).

A session token from PUT /latest/api/token, then GETs carrying it. botocore's own settings hold:
AWS_EC2_METADATA_DISABLED=true means nothing asks, AWS_EC2_METADATA_SERVICE_ENDPOINT moves the
service. A token request that fails or is refused means "not on EC2" (MetadataUnreachable), which
callers turn into a line saying what to set; a failure after it is a MetadataError. Used for the
master's address (master_address) and for the [slave] keys left blank (master_defaults).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import aiohttp

IMDS_URL = "http://169.254.169.254"
TOKEN_TTL_SECONDS = 60  # the token is used for a handful of GETs right away
REQUEST_SECONDS = 1.0  # per request: off EC2 the address may swallow packets, so stay short

Get = Callable[[str], Awaitable[str]]


class MetadataUnreachable(Exception):
    """The metadata service did not answer the token request: not on EC2 (or it is blocked)."""


class MetadataError(Exception):
    """The metadata service answered the token but an item failed (one line, names it)."""


def metadata_disabled() -> bool:
    """botocore's own switch: when set, nothing may ask the metadata service."""
    return os.environ.get("AWS_EC2_METADATA_DISABLED", "").strip().lower() == "true"


def metadata_url() -> str:
    """botocore's own setting for where the metadata service is, else EC2's address."""
    return os.environ.get("AWS_EC2_METADATA_SERVICE_ENDPOINT", "").strip() or IMDS_URL


@asynccontextmanager
async def metadata_session(
    imds_url: str, request_seconds: float = REQUEST_SECONDS
) -> AsyncIterator[Get]:
    """`get(path)`: one item of /latest/meta-data/, "" when the instance has none (404)."""
    base = imds_url.rstrip("/")
    client_timeout = aiohttp.ClientTimeout(total=request_seconds)
    # trust_env stays off: a proxy from the environment must never see metadata requests.
    async with aiohttp.ClientSession(timeout=client_timeout) as session:
        try:
            async with session.put(
                f"{base}/latest/api/token",
                headers={"X-aws-ec2-metadata-token-ttl-seconds": str(TOKEN_TTL_SECONDS)},
            ) as response:
                if response.status != 200:
                    raise MetadataUnreachable(f"token request answered {response.status}")
                token = (await response.text()).strip()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise MetadataUnreachable(str(exc) or type(exc).__name__) from None

        async def get(path: str) -> str:
            try:
                async with session.get(
                    f"{base}/latest/meta-data/{path}",
                    headers={"X-aws-ec2-metadata-token": token},
                ) as response:
                    if response.status == 404:
                        return ""
                    if response.status != 200:
                        raise MetadataError(
                            f"instance metadata at {imds_url}: {path} answered {response.status}"
                        )
                    return (await response.text()).strip()
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise MetadataError(
                    f"instance metadata at {imds_url}: {path} failed: {exc or type(exc).__name__}"
                ) from None

        yield get
