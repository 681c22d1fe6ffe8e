"""The harness's servers really start and behave as the other tests assume."""

import time
import urllib.error
import urllib.request

import aiobotocore.session
import aiohttp
import asyncssh
import pytest
from aiobotocore.config import AioConfig
from botocore.exceptions import ClientError, ConnectionClosedError, EndpointConnectionError

from tests.harness.apache import Apache
from tests.harness.fault_proxy import FaultProxy
from tests.harness.moto_server import MotoEc2
from tests.harness.sshd import Sshd


def test_moto_instance_in_loopback_subnet_gets_127_address(moto_ec2: MotoEc2) -> None:
    ec2 = moto_ec2.client()
    reservation = ec2.run_instances(
        ImageId="ami-12345678",
        InstanceType="t3.micro",
        MinCount=1,
        MaxCount=1,
        SubnetId=moto_ec2.subnet_id,
    )
    ip = reservation["Instances"][0]["PrivateIpAddress"]
    assert ip.startswith("127.0.20."), ip
    described = ec2.describe_instances()["Reservations"]
    assert [i["PrivateIpAddress"] for r in described for i in r["Instances"]] == [ip]


def test_moto_ec2_is_reset_between_tests(moto_ec2: MotoEc2) -> None:
    ec2 = moto_ec2.client()
    assert ec2.describe_instances()["Reservations"] == []
    vpcs = ec2.describe_vpcs(Filters=[{"Name": "cidr", "Values": ["127.0.0.0/16"]}])["Vpcs"]
    assert [v["VpcId"] for v in vpcs] == [moto_ec2.vpc_id]
    assert moto_ec2.sqs_client().list_queues().get("QueueUrls", []) == []


def test_fault_proxy_fails_chosen_action_and_passes_others(
    moto_ec2: MotoEc2, fault_proxy: FaultProxy
) -> None:
    ec2 = moto_ec2.client(endpoint_url=fault_proxy.endpoint_url)
    fault_proxy.fail("RunInstances", "InsufficientInstanceCapacity", "no capacity", times=1)

    with pytest.raises(ClientError) as caught:
        ec2.run_instances(ImageId="ami-12345678", MinCount=1, MaxCount=1)
    assert caught.value.response["Error"]["Code"] == "InsufficientInstanceCapacity"
    assert caught.value.response["Error"]["Message"] == "no capacity"

    assert ec2.describe_instances()["Reservations"] == []  # passed through to moto
    launched = ec2.run_instances(
        ImageId="ami-12345678", MinCount=1, MaxCount=1, SubnetId=moto_ec2.subnet_id
    )  # `times=1` was spent
    assert launched["Instances"][0]["PrivateIpAddress"].startswith("127.0.20.")
    assert fault_proxy.calls == ["RunInstances", "DescribeInstances", "RunInstances"]


def test_fault_proxy_down_and_up(moto_ec2: MotoEc2, fault_proxy: FaultProxy) -> None:
    ec2 = moto_ec2.client(endpoint_url=fault_proxy.endpoint_url)
    ec2.describe_instances()  # opens a keep-alive connection that `down` must also cut
    fault_proxy.down()
    with pytest.raises((EndpointConnectionError, ConnectionClosedError)):
        ec2.describe_instances()
    with pytest.raises(EndpointConnectionError):
        ec2.describe_instances()
    fault_proxy.up()
    assert ec2.describe_instances()["Reservations"] == []

    fault_proxy.down(status=503)
    with pytest.raises(ClientError) as caught:
        ec2.describe_instances()
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
    fault_proxy.clear()
    assert ec2.describe_instances()["Reservations"] == []
    assert fault_proxy.calls == ["DescribeInstances"]


async def test_fault_proxy_from_async_code(moto_ec2: MotoEc2, fault_proxy: FaultProxy) -> None:
    fault_proxy.fail("DescribeInstances", "RequestLimitExceeded", status=503)
    session = aiobotocore.session.get_session()
    async with session.create_client(
        "ec2",
        region_name=moto_ec2.region,
        endpoint_url=fault_proxy.endpoint_url,
        config=AioConfig(retries={"total_max_attempts": 1}),
    ) as ec2:
        with pytest.raises(ClientError) as caught:
            await ec2.describe_instances()
        assert caught.value.response["Error"]["Code"] == "RequestLimitExceeded"
        fault_proxy.clear()
        assert (await ec2.describe_instances())["Reservations"] == []


def test_apache_total_accesses_rise_under_ab(apache: Apache) -> None:
    with urllib.request.urlopen(apache.base_url + "/", timeout=10) as page:
        assert b"test page" in page.read()  # the tree is readable by the workers
    before = apache.total_accesses()
    apache.drive_load(requests=200, concurrency=4)
    after = apache.total_accesses()
    assert after - before >= 200
    assert apache.status().splitlines()[0] == "127.0.0.1"  # first line: bare server name


def test_apache_restarts_on_same_port_and_background_load_stops(apache: Apache) -> None:
    apache.stop()
    with pytest.raises(OSError):
        apache.total_accesses()
    apache.start()
    load = apache.drive_load_background(concurrency=2)
    first = apache.total_accesses()
    deadline = time.monotonic() + 10
    while apache.total_accesses() < first + 50 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert load.running()
    load.stop()
    assert not load.running()
    assert apache.total_accesses() >= first + 50


async def test_asyncssh_runs_a_command_through_sshd_with_pinned_host_key(sshd: Sshd) -> None:
    async with asyncssh.connect(
        sshd.host,
        sshd.port,
        username=sshd.username,
        client_keys=[str(sshd.client_key_path)],
        known_hosts=sshd.known_hosts(),
    ) as conn:
        result = await conn.run("echo hello", check=True)
    assert result.stdout == "hello\n"


async def test_sshd_on_instance_address_refuses_a_wrong_host_key(sshd_factory) -> None:
    server = sshd_factory("127.0.20.5")
    other = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode()
    with pytest.raises(asyncssh.HostKeyNotVerifiable):
        await asyncssh.connect(
            "127.0.20.5",
            server.port,
            username=server.username,
            client_keys=[str(server.client_key_path)],
            known_hosts=asyncssh.import_known_hosts(f"[127.0.20.5]:{server.port} {other}"),
        )


async def test_fake_slave_answers_403_on_an_instance_address(fake_slave_factory) -> None:
    slave = await fake_slave_factory("127.0.20.7")
    async with aiohttp.ClientSession() as http:
        async with http.get(slave.url) as response:
            assert response.status == 403
        slave.set_status(200)
        async with http.get(slave.url + "render") as response:
            assert response.status == 200
        await slave.stop()
        with pytest.raises(aiohttp.ClientConnectionError):
            await http.get(slave.url)
        await slave.start()
        async with http.get(slave.url) as response:
            assert response.status == 200
    assert slave.hits == 3


def test_fake_slave_from_sync_code(fake_slave_factory_sync) -> None:
    slave = fake_slave_factory_sync("127.0.20.8", status=500)
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(slave.url, timeout=10)
    caught.value.close()
    assert caught.value.code == 500
    assert slave.hits == 1
