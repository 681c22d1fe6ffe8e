"""InterruptionWatcher against moto's real SQS server, and the pure event parser.

The bodies are EventBridge events exactly as an EventBridge rule delivers them to an SQS target
(the shapes in EC2's user guide that Karpenter's interruption queue receives).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
import structlog.testing
from aiohttp import web

from actors.interruption_watcher import InterruptionWatcher
from controller.cloud.interruption_events import EventError, EventKind, parse_event
from controller.cloud.sqs import queue_region, sqs_client_factory
from controller.config.schema import AwsSection, Config, ScalingSection, SlaveSection
from controller.messages import InterruptionWarning
from controller.runtime.bus import EOI, Bus, Mailbox
from controller.runtime.supervisor import Runtime
from tests.harness.moto_server import MotoEc2

ACCOUNT = "123456789012"


def interruption_event(instance_id: str, action: str = "terminate") -> dict:
    return {
        "version": "0",
        "id": "1e5527d7-bb36-4607-3370-4164db56a40e",
        "detail-type": "EC2 Spot Instance Interruption Warning",
        "source": "aws.ec2",
        "account": ACCOUNT,
        "time": "2024-05-01T12:00:00Z",
        "region": "us-east-1",
        "resources": [f"arn:aws:ec2:us-east-1a:instance/{instance_id}"],
        "detail": {"instance-id": instance_id, "instance-action": action},
    }


def rebalance_event(instance_id: str) -> dict:
    return {
        "version": "0",
        "id": "5cd7fd2e-7ba4-4a54-a29f-7d5e3a3a0d0c",
        "detail-type": "EC2 Instance Rebalance Recommendation",
        "source": "aws.ec2",
        "account": ACCOUNT,
        "time": "2024-05-01T11:58:00Z",
        "region": "us-east-1",
        "resources": [f"arn:aws:ec2:us-east-1b:instance/{instance_id}"],
        "detail": {"instance-id": instance_id},
    }


def state_change_event(instance_id: str, state: str) -> dict:
    return {
        "version": "0",
        "id": "7bf73129-1428-4cd3-a780-95db273d1602",
        "detail-type": "EC2 Instance State-change Notification",
        "source": "aws.ec2",
        "account": ACCOUNT,
        "time": "2024-05-01T12:02:00Z",
        "region": "us-east-1",
        "resources": [f"arn:aws:ec2:us-east-1:{ACCOUNT}:instance/{instance_id}"],
        "detail": {"instance-id": instance_id, "state": state},
    }


# pure parsing


def test_parse_interruption_warning() -> None:
    event = parse_event(json.dumps(interruption_event("i-0abc", "stop")))
    assert event.kind is EventKind.INTERRUPTION
    assert (event.instance_id, event.action) == ("i-0abc", "stop")
    assert event.action_time == "2024-05-01T12:02:00Z"  # two minutes after the warning


def test_parse_rebalance_and_state_change() -> None:
    rebalance = parse_event(json.dumps(rebalance_event("i-0def")))
    assert (rebalance.kind, rebalance.instance_id, rebalance.action_time) == (
        EventKind.REBALANCE,
        "i-0def",
        "",
    )
    change = parse_event(json.dumps(state_change_event("i-0abc", "shutting-down")))
    assert (change.kind, change.state) == (EventKind.STATE_CHANGE, "shutting-down")


def test_parse_unwraps_an_sns_envelope() -> None:
    envelope = {"Type": "Notification", "Message": json.dumps(interruption_event("i-0abc"))}
    assert parse_event(json.dumps(envelope)).instance_id == "i-0abc"


def test_parse_other_detail_type_is_ignorable_not_garbage() -> None:
    event = parse_event(json.dumps({"detail-type": "AWS Health Event", "detail": {}}))
    assert event.kind is EventKind.OTHER


@pytest.mark.parametrize(
    "body",
    [
        "not json",
        "[1, 2]",
        json.dumps({"hello": "world"}),
        json.dumps({"detail-type": "EC2 Spot Instance Interruption Warning"}),
        json.dumps({"detail-type": "EC2 Spot Instance Interruption Warning", "detail": {"x": 1}}),
        json.dumps(
            {"detail-type": "EC2 Instance Rebalance Recommendation", "detail": {"instance-id": 7}}
        ),
    ],
)
def test_parse_garbage_raises(body: str) -> None:
    with pytest.raises(EventError):
        parse_event(body)


def test_queue_region() -> None:
    assert queue_region("https://sqs.eu-west-1.amazonaws.com/123/q") == "eu-west-1"
    assert queue_region("http://127.0.0.1:5000/123456789012/q") == ""


# against moto's SQS


@dataclass
class Running:
    runtime: Runtime
    task: asyncio.Task[int]
    warnings: Mailbox[InterruptionWarning]
    watcher: InterruptionWatcher

    async def next_warning(self, seconds: float = 10.0) -> InterruptionWarning:
        msg = await self.warnings.get(timeout=seconds)
        assert msg is not None, "no InterruptionWarning within the timeout"
        assert msg is not EOI
        return msg

    async def stop(self) -> int:
        self.runtime.request_stop("test")
        return await asyncio.wait_for(self.task, timeout=30)


def watcher_config(moto: MotoEc2, queue_url: str) -> Config:
    return Config(
        scaling=ScalingSection(interruption_queue=queue_url),
        slave=SlaveSection(region=moto.region),
        aws=AwsSection(sqs_endpoint_url=moto.endpoint_url, max_attempts=1, call_timeout=5.0),
    )


@pytest.fixture
async def start_watcher() -> AsyncIterator:
    started: list[Running] = []

    async def start(config: Config, **kwargs) -> Running:
        bus = Bus()
        warnings: Mailbox[InterruptionWarning] = Mailbox()
        bus.subscribe(warnings, InterruptionWarning)
        watcher = InterruptionWatcher(
            config=config, bus=bus, sqs_client_factory=sqs_client_factory(config), **kwargs
        )
        runtime = Runtime([watcher], grace_seconds=5.0)
        task = asyncio.create_task(runtime.run_until_stopped())
        running = Running(runtime, task, warnings, watcher)
        started.append(running)
        return running

    yield start
    for running in started:
        if not running.task.done():
            await running.stop()


def send(moto: MotoEc2, queue_url: str, *bodies: str) -> None:
    sqs = moto.sqs_client()
    for body in bodies:
        sqs.send_message(QueueUrl=queue_url, MessageBody=body)


def queue_depth(moto: MotoEc2, queue_url: str) -> int:
    attributes = moto.sqs_client().get_queue_attributes(
        QueueUrl=queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]) + int(
        attributes["ApproximateNumberOfMessagesNotVisible"]
    )


async def test_warnings_published_and_every_message_deleted(
    moto_ec2: MotoEc2, start_watcher
) -> None:
    queue_url = moto_ec2.sqs_client().create_queue(QueueName="interruptions")["QueueUrl"]
    send(
        moto_ec2,
        queue_url,
        "{not json",
        json.dumps(state_change_event("i-0aaa", "running")),
        json.dumps({"detail-type": "AWS Health Event", "source": "aws.health", "detail": {}}),
        json.dumps(rebalance_event("i-0bbb")),
        json.dumps(interruption_event("i-0ccc")),
    )
    with structlog.testing.capture_logs() as logs:
        running = await start_watcher(watcher_config(moto_ec2, queue_url), wait_seconds=1)
        got = {(await running.next_warning()).instance_id for _ in range(2)}
        assert got == {"i-0bbb", "i-0ccc"}
        # The queue drains: handled, ignored and unreadable messages alike are deleted.
        for _ in range(100):
            if queue_depth(moto_ec2, queue_url) == 0:
                break
            await asyncio.sleep(0.05)
        assert queue_depth(moto_ec2, queue_url) == 0
        assert await running.warnings.get(timeout=0.3) is None  # nothing else was published
        assert await running.stop() == 0

    events = [entry["event"] for entry in logs]
    assert "interruption.unreadable_message" in events
    assert "actor.cancelling" not in events  # the long poll did not hold up the stop


async def test_interruption_message_fields(moto_ec2: MotoEc2, start_watcher) -> None:
    queue_url = moto_ec2.sqs_client().create_queue(QueueName="interruptions")["QueueUrl"]
    send(moto_ec2, queue_url, json.dumps(interruption_event("i-0123456789abcdef0")))
    running = await start_watcher(watcher_config(moto_ec2, queue_url), wait_seconds=1)
    warning = await running.next_warning()
    assert warning.instance_id == "i-0123456789abcdef0"
    assert warning.kind == "interruption"
    assert warning.action_time == "2024-05-01T12:02:00Z"
    assert isinstance(warning.at, float)


async def test_stop_during_a_long_poll_is_prompt(moto_ec2: MotoEc2, start_watcher) -> None:
    queue_url = moto_ec2.sqs_client().create_queue(QueueName="interruptions")["QueueUrl"]
    with structlog.testing.capture_logs() as logs:
        running = await start_watcher(watcher_config(moto_ec2, queue_url), wait_seconds=20)
        await asyncio.sleep(0.5)  # inside the 20 s receive by now
        assert await running.stop() == 0
    events = [entry["event"] for entry in logs]
    assert "actor.cancelling" not in events
    assert "actor.crashed" not in events


async def test_missing_queue_is_logged_and_retried_until_it_exists(
    moto_ec2: MotoEc2, start_watcher
) -> None:
    queue_url = f"{moto_ec2.endpoint_url}/{ACCOUNT}/created-later"
    with structlog.testing.capture_logs() as logs:
        running = await start_watcher(
            watcher_config(moto_ec2, queue_url), wait_seconds=1, backoff=(0.05, 0.1)
        )
        for _ in range(200):
            if sum(e["event"] == "interruption.queue_failed" for e in logs) >= 2:
                break
            await asyncio.sleep(0.05)
        failures = [e for e in logs if e["event"] == "interruption.queue_failed"]
        assert len(failures) >= 2, "the watcher did not retry"
        assert "create it or fix [scaling] interruption_queue" in (failures[0]["hint"] or "")
        assert running.runtime.states()["interruption_watcher"] == ("running", 0)

        sqs = moto_ec2.sqs_client()
        assert sqs.create_queue(QueueName="created-later")["QueueUrl"] == queue_url
        send(moto_ec2, queue_url, json.dumps(rebalance_event("i-0late")))
        warning = await running.next_warning()
        assert (warning.instance_id, warning.kind) == ("i-0late", "rebalance")
        assert await running.stop() == 0


async def test_setup_refuses_an_empty_queue(moto_ec2: MotoEc2) -> None:
    config = watcher_config(moto_ec2, "")
    watcher = InterruptionWatcher(
        config=config, bus=Bus(), sqs_client_factory=sqs_client_factory(config)
    )
    with pytest.raises(ValueError, match=r"\[scaling\] interruption_queue is empty"):
        await watcher.setup()


async def test_seed_credentials_are_the_fallback_for_the_queue_too(
    moto_ec2: MotoEc2, start_watcher, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only GBrowse's EC2_ACCESS_KEY/EC2_SECRET_KEY set: the SQS client uses them, as EC2's does
    (../shared/SPEC.md: the AWS chain, plus those variables as a fallback)."""
    queue_url = moto_ec2.sqs_client().create_queue(QueueName="interruptions")["QueueUrl"]
    send(moto_ec2, queue_url, json.dumps(interruption_event("i-0seedkeys")))
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("EC2_ACCESS_KEY", "AKIASEEDFALLBACK0001")
    monkeypatch.setenv("EC2_SECRET_KEY", "seed-secret-value")
    with structlog.testing.capture_logs() as logs:
        running = await start_watcher(watcher_config(moto_ec2, queue_url), wait_seconds=1)
        warning = await running.next_warning()
        assert warning.instance_id == "i-0seedkeys"
        assert await running.stop() == 0
    assert not [e for e in logs if e["event"] == "interruption.queue_failed"]


# which endpoint the queue is read at


@dataclass
class Ec2Endpoint:
    """A loopback stand-in for `[aws] endpoint_url` set to a VPC endpoint for EC2: it serves no
    SQS, so it answers every request 500, and records it."""

    url: str = ""
    requests: list[str] = field(default_factory=list)


@pytest.fixture
async def ec2_endpoint() -> AsyncIterator[Ec2Endpoint]:
    endpoint = Ec2Endpoint()

    async def refuse(request: web.Request) -> web.Response:
        endpoint.requests.append(f"{request.method} {request.path_qs}")
        return web.Response(status=500, text="an EC2 endpoint serves no SQS")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", refuse)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    endpoint.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield endpoint
    finally:
        await runner.cleanup()


async def test_queue_is_read_at_sqs_endpoint_url_never_at_the_ec2_endpoint(
    moto_ec2: MotoEc2, ec2_endpoint: Ec2Endpoint, start_watcher
) -> None:
    queue_url = moto_ec2.sqs_client().create_queue(QueueName="interruptions")["QueueUrl"]
    send(moto_ec2, queue_url, json.dumps(interruption_event("i-0viasqsendpoint")))
    config = Config(
        scaling=ScalingSection(interruption_queue=queue_url),
        slave=SlaveSection(region=moto_ec2.region),
        aws=AwsSection(
            endpoint_url=ec2_endpoint.url,
            sqs_endpoint_url=moto_ec2.endpoint_url,
            max_attempts=1,
            call_timeout=5.0,
        ),
    )
    with structlog.testing.capture_logs() as logs:
        running = await start_watcher(config, wait_seconds=1, backoff=(0.05,))
        warning = await running.next_warning()
        assert warning.instance_id == "i-0viasqsendpoint"
        assert await running.stop() == 0
    assert queue_depth(moto_ec2, queue_url) == 0  # read and deleted at the SQS endpoint
    assert ec2_endpoint.requests == []
    assert not [e for e in logs if e["event"] == "interruption.queue_failed"]


async def test_without_sqs_endpoint_url_the_queue_regions_sqs_is_used_not_endpoint_url(
    ec2_endpoint: Ec2Endpoint,
) -> None:
    """No request is sent: the client is only opened to see where it would go."""
    config = Config(
        scaling=ScalingSection(
            interruption_queue="https://sqs.eu-west-1.amazonaws.com/123456789012/interruptions"
        ),
        aws=AwsSection(endpoint_url=ec2_endpoint.url),
    )
    async with sqs_client_factory(config)() as sqs:
        assert sqs.meta.region_name == "eu-west-1"
        assert sqs.meta.endpoint_url == "https://sqs.eu-west-1.amazonaws.com"
    assert ec2_endpoint.requests == []


async def test_an_emulators_queue_url_is_its_own_endpoint_without_sqs_endpoint_url(
    moto_ec2: MotoEc2, ec2_endpoint: Ec2Endpoint, start_watcher
) -> None:
    """A config that sets only EC2's endpoint and moto's queue URL reads the queue where it is
    (never AWS's SQS, never the EC2 endpoint)."""
    queue_url = moto_ec2.sqs_client().create_queue(QueueName="interruptions")["QueueUrl"]
    assert queue_url.startswith(moto_ec2.endpoint_url)
    send(moto_ec2, queue_url, json.dumps(interruption_event("i-0atitsownurl")))
    config = Config(
        scaling=ScalingSection(interruption_queue=queue_url),
        slave=SlaveSection(region=moto_ec2.region),
        aws=AwsSection(endpoint_url=ec2_endpoint.url, max_attempts=1, call_timeout=5.0),
    )
    async with sqs_client_factory(config)() as sqs:
        assert sqs.meta.endpoint_url == moto_ec2.endpoint_url
    running = await start_watcher(config, wait_seconds=1, backoff=(0.05,))
    warning = await running.next_warning()
    assert warning.instance_id == "i-0atitsownurl"
    assert await running.stop() == 0
    assert ec2_endpoint.requests == []


async def test_a_dry_run_deletes_nothing_and_publishes_each_warning_once(
    moto_ec2: MotoEc2, start_watcher
) -> None:
    sqs = moto_ec2.sqs_client()
    # A visibility timeout of 0: every receive hands the same message out again.
    queue_url = sqs.create_queue(QueueName="interruptions", Attributes={"VisibilityTimeout": "0"})[
        "QueueUrl"
    ]
    send(moto_ec2, queue_url, json.dumps(interruption_event("i-0dryrun")))
    running = await start_watcher(watcher_config(moto_ec2, queue_url), wait_seconds=1, dry_run=True)
    assert (await running.next_warning()).instance_id == "i-0dryrun"
    assert await running.warnings.get(timeout=1.5) is None  # received again, not published again
    assert await running.stop() == 0
    assert queue_depth(moto_ec2, queue_url) == 1  # still there for the real controller
