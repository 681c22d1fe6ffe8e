"""EventBridge's EC2 events, as an SQS message body carries them, turned into plain values.

An EventBridge rule (source `aws.ec2`) targets an SQS queue, the way Karpenter sets it up; each
message body is the event JSON itself:

    {"version": "0", "id": "...", "detail-type": "EC2 Spot Instance Interruption Warning",
     "source": "aws.ec2", "time": "2024-05-01T12:00:00Z", "region": "us-east-1",
     "resources": ["arn:aws:ec2:...:instance/i-..."],
     "detail": {"instance-id": "i-...", "instance-action": "terminate"}}

A rebalance recommendation has detail-type "EC2 Instance Rebalance Recommendation" and only
`detail.instance-id`; a state-change notification carries `detail.state`. A body delivered
through an SNS topic (an envelope whose `Message` is the event) is unwrapped first.

Pure code: no I/O, no clock. Whatever cannot be read raises `EventError`, so the caller can log
it and delete the message instead of receiving it again forever.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from datetime import datetime, timedelta

INTERRUPTION_DETAIL_TYPE = "EC2 Spot Instance Interruption Warning"
REBALANCE_DETAIL_TYPE = "EC2 Instance Rebalance Recommendation"
STATE_CHANGE_DETAIL_TYPE = "EC2 Instance State-change Notification"
# EC2 emits the interruption warning two minutes before it acts on the instance.
INTERRUPTION_NOTICE = timedelta(minutes=2)


class EventKind(enum.StrEnum):
    INTERRUPTION = "interruption"
    REBALANCE = "rebalance"
    STATE_CHANGE = "state-change"
    OTHER = "other"  # a well-formed event this controller has no use for


_KINDS = {
    INTERRUPTION_DETAIL_TYPE: EventKind.INTERRUPTION,
    REBALANCE_DETAIL_TYPE: EventKind.REBALANCE,
    STATE_CHANGE_DETAIL_TYPE: EventKind.STATE_CHANGE,
}


class EventError(ValueError):
    """The body is not an EventBridge event we can read."""


@dataclass(frozen=True, slots=True, kw_only=True)
class InstanceEvent:
    kind: EventKind
    detail_type: str
    event_id: str = ""
    instance_id: str = ""
    action: str = ""  # instance-action of an interruption: terminate | stop | hibernate
    action_time: str = ""  # ISO 8601 time EC2 acts (interruptions only), "" when unknown
    state: str = ""  # the new state of a state-change notification


def parse_event(body: str) -> InstanceEvent:
    """Read one SQS message body; raise EventError when it is not a readable EventBridge event."""
    event = _unwrap_sns(_load_object(body))
    detail_type = event.get("detail-type")
    if not isinstance(detail_type, str) or not detail_type:
        raise EventError("no detail-type: not an EventBridge event")
    event_id = _text(event.get("id"))
    kind = _KINDS.get(detail_type, EventKind.OTHER)
    if kind is EventKind.OTHER:
        return InstanceEvent(kind=kind, detail_type=detail_type, event_id=event_id)
    detail = _detail(event)
    interruption = kind is EventKind.INTERRUPTION
    return InstanceEvent(
        kind=kind,
        detail_type=detail_type,
        event_id=event_id,
        instance_id=_instance_id(detail),
        action=_text(detail.get("instance-action")),
        action_time=_action_time(_text(event.get("time"))) if interruption else "",
        state=_text(detail.get("state")),
    )


def _load_object(body: str) -> dict:
    try:
        value = json.loads(body)
    except (TypeError, ValueError) as exc:
        raise EventError(f"not JSON: {exc}") from None
    except RecursionError:  # json recurses into nested arrays and objects
        raise EventError("not JSON we read: arrays or objects nested too deeply") from None
    if not isinstance(value, dict):
        raise EventError(f"not a JSON object but {type(value).__name__}")
    return value


def _unwrap_sns(value: dict) -> dict:
    if value.get("Type") == "Notification" and isinstance(value.get("Message"), str):
        return _load_object(value["Message"])
    return value


def _detail(event: dict) -> dict:
    detail = event.get("detail")
    if not isinstance(detail, dict):
        raise EventError(f"{event['detail-type']!r} event without a detail object")
    return detail


def _instance_id(detail: dict) -> str:
    instance_id = detail.get("instance-id")
    if not isinstance(instance_id, str) or not instance_id.startswith("i-"):
        raise EventError(f"detail.instance-id is not an instance id: {instance_id!r}")
    return instance_id


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _action_time(event_time: str) -> str:
    """The warning's time plus EC2's two-minute notice, in the event's own ISO 8601 form."""
    if not event_time:
        return ""
    try:
        acts = datetime.fromisoformat(event_time.replace("Z", "+00:00")) + INTERRUPTION_NOTICE
    except (ValueError, OverflowError):  # not a time, or past year 9999
        return ""
    return acts.isoformat().replace("+00:00", "Z")
