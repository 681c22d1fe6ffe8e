"""AWS credentials: the standard chain first, then GBrowse's EC2_ACCESS_KEY/EC2_SECRET_KEY.

They are handed to botocore only, never logged.
"""

from __future__ import annotations

import os
from typing import Any


async def seed_credentials(session: Any) -> dict[str, str]:
    """create_client() arguments for GBrowse's EC2_ACCESS_KEY/EC2_SECRET_KEY, used only when the
    standard AWS chain of `session` (an aiobotocore session) finds nothing; {} otherwise. Every
    AWS client the controller makes (EC2, and SQS for the interruption queue) takes them."""
    if await session.get_credentials() is not None:
        return {}
    key = os.environ.get("EC2_ACCESS_KEY", "")
    secret = os.environ.get("EC2_SECRET_KEY", "")
    if key and secret:
        return {"aws_access_key_id": key, "aws_secret_access_key": secret}
    return {}
