"""InterruptionWatcher: hears EC2's spot interruption warnings before the instance goes away.

EventBridge puts EC2's events on an SQS queue (`[scaling] interruption_queue`), the way Karpenter
receives them: the two-minute "EC2 Spot Instance Interruption Warning" and the earlier "EC2
Instance Rebalance Recommendation". This actor long-polls the queue, reads each body
(controller.cloud.interruption_events, pure) and publishes an InterruptionWarning, so SpotPool
drains the slave from renderfarm.conf and launches its replacement ahead of the loss.

Every message is deleted once read, whatever it held: a warning is published once, and an
unreadable body is logged and dropped rather than received again forever. The queue should
therefore be this controller's own. A dry run (`run --dry-run`) only reads: it deletes nothing, so
a controller of the same fleet still gets every warning, and a message it receives again (after
SQS's visibility timeout) is recognised by its id and not published twice. Errors (queue missing,
no permission, endpoint down) are logged and retried along a backoff; the watcher never ends the
process.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from controller.cloud.interruption_events import EventError, EventKind, InstanceEvent, parse_event
from controller.cloud.sqs import LONG_POLL_SECONDS, SQS_ERRORS, SqsClientFactory, error_code
from controller.config.schema import Config
from controller.messages import InstanceId, InterruptionWarning
from controller.runtime.actor import Actor
from controller.runtime.backoff import backoff_delay
from controller.runtime.bus import Bus

MAX_MESSAGES = 10  # SQS's maximum per receive
SEEN_IDS = 1000  # message ids a dry run remembers, so a message received again is not re-read
# Codes that a retry will not fix until someone changes the queue, the config or the policy.
HINTS = {
    "AWS.SimpleQueueService.NonExistentQueue": "no such queue: create it or fix "
    "[scaling] interruption_queue",
    "QueueDoesNotExist": "no such queue: create it or fix [scaling] interruption_queue",
    "AccessDenied": "the credentials lack sqs:ReceiveMessage / sqs:DeleteMessage on the queue",
    "AccessDeniedException": "the credentials lack sqs:ReceiveMessage / sqs:DeleteMessage "
    "on the queue",
}


class InterruptionWatcher(Actor):
    def __init__(
        self,
        *,
        config: Config,
        bus: Bus,
        sqs_client_factory: SqsClientFactory,
        wait_seconds: int = LONG_POLL_SECONDS,
        backoff: Sequence[float] = (1, 2, 4, 8, 16, 30),
        dry_run: bool = False,
        clock=None,
    ) -> None:
        super().__init__(name="interruption_watcher", bus=bus, clock=clock)
        self.queue_url = config.scaling.interruption_queue.strip()
        self.sqs_client_factory = sqs_client_factory
        self.wait_seconds = max(0, min(wait_seconds, LONG_POLL_SECONDS))
        self.backoff = tuple(backoff)
        self.failures = 0  # consecutive failed polls, picks the next backoff delay
        self.dry_run = dry_run
        self._seen: OrderedDict[str, None] = OrderedDict()  # dry run: ids already read

    async def setup(self) -> None:
        if not self.queue_url:
            raise ValueError(
                "[scaling] interruption_queue is empty: the interruption watcher has no queue "
                "to read (it is started only when the queue is set)"
            )

    async def run(self) -> None:
        while not self.stopping.is_set():
            try:
                async with self.sqs_client_factory() as sqs:
                    while not self.stopping.is_set():
                        await self.poll(sqs)
                        self.failures = 0
            except SQS_ERRORS as exc:
                delay = backoff_delay(self.backoff, self.failures)
                self.failures += 1
                self._log_failure(exc, delay)
                await self.sleep(delay)

    async def poll(self, sqs: Any) -> int:
        """One long poll: publish what the messages say and delete them; how many were read."""
        messages = await self._receive(sqs)
        if not messages:
            return 0
        for message in messages:
            message_id = message.get("MessageId", "")
            if self.dry_run and self._seen_before(message_id):
                continue
            self._handle(message_id, message.get("Body", ""))
        if not self.dry_run:
            await self._delete(sqs, [m["ReceiptHandle"] for m in messages])
        return len(messages)

    def _seen_before(self, message_id: str) -> bool:
        """Whether a dry run has read this message already (it stays on the queue)."""
        if message_id in self._seen:
            return True
        self._seen[message_id] = None
        if len(self._seen) > SEEN_IDS:
            self._seen.popitem(last=False)
        return False

    async def _receive(self, sqs: Any) -> list[dict[str, Any]]:
        """The next messages, or [] when the stop began first (a long poll must not delay it)."""
        receive = asyncio.ensure_future(
            sqs.receive_message(
                QueueUrl=self.queue_url,
                WaitTimeSeconds=self.wait_seconds,
                MaxNumberOfMessages=MAX_MESSAGES,
            )
        )
        stop = asyncio.ensure_future(self.stopping.wait())
        try:
            await asyncio.wait({receive, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            if not receive.done():
                # Messages SQS handed out meanwhile come back after their visibility timeout.
                receive.cancel()
                await asyncio.wait({receive})
        if receive.cancelled():
            return []
        return receive.result().get("Messages", [])

    def _handle(self, message_id: str, body: str) -> None:
        try:
            event = parse_event(body)
        except EventError as exc:
            self.log.warning(
                "interruption.unreadable_message",
                message_id=message_id,
                reason=str(exc),
                action="deleted",
            )
            return
        if event.kind in (EventKind.INTERRUPTION, EventKind.REBALANCE):
            self._warn(event)
        elif event.kind is EventKind.STATE_CHANGE:
            self.log.debug(
                "interruption.state_change", instance_id=event.instance_id, state=event.state
            )
        else:
            self.log.info("interruption.ignored_event", detail_type=event.detail_type)

    def _warn(self, event: InstanceEvent) -> None:
        self.log.warning(
            f"interruption.{event.kind}",
            instance_id=event.instance_id,
            action=event.action or None,
            action_time=event.action_time or None,
            event_id=event.event_id,
        )
        self.publish(
            InterruptionWarning(
                at=self.now(),
                instance_id=InstanceId(event.instance_id),
                kind=str(event.kind),
                action_time=event.action_time,
            )
        )

    async def _delete(self, sqs: Any, receipt_handles: list[str]) -> None:
        entries = [{"Id": str(i), "ReceiptHandle": h} for i, h in enumerate(receipt_handles)]
        response = await sqs.delete_message_batch(QueueUrl=self.queue_url, Entries=entries)
        for failed in response.get("Failed", []):
            self.log.warning(
                "interruption.delete_failed",
                code=failed.get("Code"),
                message=failed.get("Message"),
                hint="the message will be received again",
            )

    def _log_failure(self, exc: BaseException, delay: float) -> None:
        code = error_code(exc)
        self.log.warning(
            "interruption.queue_failed",
            queue=self.queue_url,
            error=str(exc) or type(exc).__name__,
            code=code or type(exc).__name__,
            hint=HINTS.get(code),
            retry_in=round(delay, 1),
        )
