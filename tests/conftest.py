"""Test-wide setup: dummy AWS credentials, no metadata service, and the real-server fixtures.

The environment is fixed at import time, before any boto client exists, so no test can reach
real AWS credentials or the instance metadata address.
"""

import asyncio
import os

import pytest

# Grid Engine, started once a session when a test first asks for it; `ge`: with no job left over
from tests.harness.gridengine import ge, grid_engine  # noqa: F401 - fixtures for every module

for _name in (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_EC2",
    "AWS_ENDPOINT_URL_SQS",
):
    os.environ.pop(_name, None)
os.environ["AWS_ACCESS_KEY_ID"] = "testing"
os.environ["AWS_SECRET_ACCESS_KEY"] = "testing"
os.environ["AWS_DEFAULT_REGION"] = "us-east-1"
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
# Keep botocore away from ~/.aws of whoever runs the tests.
os.environ["AWS_CONFIG_FILE"] = os.devnull
os.environ["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull

# looptime asks the policy for a loop before every test, sync ones too; on the first test that
# would create a main-thread loop nobody closes, whose ResourceWarning then fails a later test.
# Marking the loop as explicitly unset makes that lookup raise (looptime ignores it) instead.
asyncio.set_event_loop(None)


@pytest.fixture(scope="session", autouse=True)
def private_lock_dir(tmp_path_factory: pytest.TempPathFactory) -> None:
    """`controller run` locks its fleet by name machine-wide: this session's controllers (fleet
    "e2e" and the like) must neither block nor be blocked by another session's."""
    os.environ["CONTROLLER_LOCK_DIR"] = str(tmp_path_factory.mktemp("fleet-locks"))


pytest_plugins = [
    "tests.harness.moto_server",
    "tests.harness.fault_proxy",
    "tests.harness.apache",
    "tests.harness.sshd",
    "tests.harness.fake_slave",
    "tests.harness.e2e",
    "tests.harness.slurm",
    "tests.harness.imds",
]
