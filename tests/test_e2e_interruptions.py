"""Spot interruptions end to end: the reclaimed slave leaves renderfarm.conf and is replaced.

moto cannot interrupt a spot instance, so the test plays EC2: it terminates the instance with the
state reason `Server.SpotInstanceTermination` on moto's backend (the in-process server makes that
reachable), and, for the two-minute warning, sends EventBridge's event to the SQS queue named by
`interruption_queue`, as AWS would.
"""

from __future__ import annotations

import json
import time

from tests.harness.e2e import (
    Controller,
    assert_fleet_gone,
    fleet_instances,
    listed,
    urls,
    wait_until,
    write_config,
)
from tests.harness.render_farm import SteadyLoad

ACCOUNT = "123456789012"


def interrupt_in_moto(region: str, instance_id: str) -> None:
    """What EC2 does when it reclaims a spot instance (moto's private backend API, pinned)."""
    from moto.ec2.models import ec2_backends
    from moto.ec2.models.instances import StateReason

    backend = ec2_backends[ACCOUNT][region]
    instance = backend.get_instance(instance_id)
    backend.terminate_instances([instance_id])
    instance.state_reason = StateReason(
        "Server.SpotInstanceTermination: Spot instance termination",
        "Server.SpotInstanceTermination",
    )


def warning_event(instance_id: str, region: str) -> str:
    """EventBridge's 'EC2 Spot Instance Interruption Warning', as delivered to SQS."""
    return json.dumps(
        {
            "version": "0",
            "id": "1e5527d7-bb36-4607-3370-4164db56a40e",
            "detail-type": "EC2 Spot Instance Interruption Warning",
            "source": "aws.ec2",
            "account": ACCOUNT,
            "time": "2026-11-22T00:00:00Z",
            "region": region,
            "resources": [f"arn:aws:ec2:{region}a:instance/{instance_id}"],
            "detail": {"instance-id": instance_id, "instance-action": "terminate"},
        }
    )


def test_reclaimed_slave_is_unlisted_and_replaced(tmp_path, moto_ec2, apache, render_farm):
    farm = write_config(tmp_path, moto_ec2, apache, render_farm, "[[2.0, 2, 2]]")
    ec2 = moto_ec2.client()
    load = SteadyLoad("127.0.0.1", apache.port, rps=10)
    ctl = Controller(farm)
    try:
        wait_until("two slaves listed", lambda: len(listed(farm)) == 2, 60, ctl)
        victim = fleet_instances(ec2)[0]
        interrupt_in_moto(moto_ec2.region, victim["InstanceId"])
        victim_url = f"http://{victim['PrivateIpAddress']}:{farm.port}"
        wait_until("the reclaimed slave unlisted", lambda: victim_url not in listed(farm), 20, ctl)

        def replaced():
            now = fleet_instances(ec2)
            return len(now) == 2 and listed(farm) == urls(farm, now)

        wait_until("a replacement listed", replaced, 40, ctl)
        assert "interrupted" in farm.log.read_text(errors="replace")
        load.stop()
        assert ctl.terminate() == 0, ctl.log_text()
        assert_fleet_gone(ec2, farm)
    finally:
        load.stop()
        ctl.ensure_dead()


def test_two_minute_warning_drains_and_replaces_ahead_of_the_loss(
    tmp_path, moto_ec2, apache, render_farm
):
    sqs = moto_ec2.sqs_client()
    queue_url = sqs.create_queue(QueueName="spot-interruptions")["QueueUrl"]
    farm = write_config(
        tmp_path,
        moto_ec2,
        apache,
        render_farm,
        "[[2.0, 2, 2]]",
        scaling_extra=f'interruption_queue = "{queue_url}"',
    )
    ec2 = moto_ec2.client()
    load = SteadyLoad("127.0.0.1", apache.port, rps=10)
    ctl = Controller(farm)
    try:
        wait_until("two slaves listed", lambda: len(listed(farm)) == 2, 60, ctl)
        victim = fleet_instances(ec2)[0]
        victim_url = f"http://{victim['PrivateIpAddress']}:{farm.port}"
        sqs.send_message(
            QueueUrl=queue_url, MessageBody=warning_event(victim["InstanceId"], moto_ec2.region)
        )
        # The warning alone (EC2 has not reclaimed anything yet) takes it out of the file...
        wait_until("the warned slave unlisted", lambda: victim_url not in listed(farm), 30, ctl)

        # ...and a replacement is listed while we, not EC2, end the warned instance.
        def replaced():
            now = fleet_instances(ec2)
            ids = {i["InstanceId"] for i in now}
            return victim["InstanceId"] not in ids and len(now) == 2 and len(listed(farm)) == 2

        wait_until("a replacement ahead of the loss", replaced, 40, ctl)
        # The queue was drained: the warning was handled once.
        attrs = sqs.get_queue_attributes(
            QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages"]
        )
        assert attrs["Attributes"]["ApproximateNumberOfMessages"] == "0"
        load.stop()
        assert ctl.terminate() == 0, ctl.log_text()
        assert_fleet_gone(ec2, farm)
    finally:
        load.stop()
        ctl.ensure_dead()
        time.sleep(0)
