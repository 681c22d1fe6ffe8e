"""moto's EC2 emulator on loopback, with a test VPC whose instances get 127.0.20.x addresses.

The server runs in-process (`ThreadedMotoServer`) rather than as a `moto_server` subprocess:
it starts faster, needs no port polling, and tests may reach moto's backend objects (for
example to mark an instance `Server.SpotInstanceTermination`, which the HTTP API cannot do).
moto is pinned in constraints.txt because that backend API is private.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

import boto3
import pytest
from botocore.config import Config

REGION = "us-east-1"
ZONE = "us-east-1a"
VPC_CIDR = "127.0.0.0/16"
SUBNET_CIDR = "127.0.20.0/24"
# Tests must see the first error, not botocore's retry of it.
NO_RETRY = Config(retries={"total_max_attempts": 1, "mode": "standard"})


@dataclass(frozen=True)
class MotoServer:
    endpoint_url: str

    def reset(self) -> None:
        """Empty every moto backend (POST /moto-api/reset)."""
        request = urllib.request.Request(f"{self.endpoint_url}/moto-api/reset", method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()


@dataclass(frozen=True)
class MotoEc2:
    """A freshly reset moto with one VPC (127.0.0.0/16) and one subnet (127.0.20.0/24)."""

    endpoint_url: str
    region: str
    vpc_id: str
    subnet_id: str
    zone: str = ZONE

    def client(self, endpoint_url: str | None = None, config: Config = NO_RETRY):
        """A sync boto3 EC2 client for assertions (no retries, so errors surface)."""
        return boto3.client(
            "ec2",
            region_name=self.region,
            endpoint_url=endpoint_url or self.endpoint_url,
            config=config,
        )

    def sqs_client(self, endpoint_url: str | None = None, config: Config = NO_RETRY):
        return boto3.client(
            "sqs",
            region_name=self.region,
            endpoint_url=endpoint_url or self.endpoint_url,
            config=config,
        )


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield MotoServer(endpoint_url=f"http://{host}:{port}")
    finally:
        server.stop()


@pytest.fixture
def moto_ec2(moto_server: MotoServer) -> MotoEc2:
    moto_server.reset()
    ec2 = boto3.client(
        "ec2", region_name=REGION, endpoint_url=moto_server.endpoint_url, config=NO_RETRY
    )
    vpc_id = ec2.create_vpc(CidrBlock=VPC_CIDR)["Vpc"]["VpcId"]
    subnet_id = ec2.create_subnet(VpcId=vpc_id, CidrBlock=SUBNET_CIDR, AvailabilityZone=ZONE)[
        "Subnet"
    ]["SubnetId"]
    return MotoEc2(
        endpoint_url=moto_server.endpoint_url,
        region=REGION,
        vpc_id=vpc_id,
        subnet_id=subnet_id,
    )
