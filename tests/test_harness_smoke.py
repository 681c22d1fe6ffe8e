"""The harness's servers really start and behave as the other tests assume."""

from tests.harness.moto_server import MotoEc2


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
