"""Actor: the base of every actor (an inbox, the bus, a clock, a logger and the stop flag).

An actor owns one outside thing and talks to the others only through typed messages on the Bus
(controller.runtime.bus). The supervisor (controller.runtime.supervisor) calls setup(), runs run()
and restarts it after a crash, and calls stop() once at the end.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import structlog

from controller.runtime.bus import Bus, Mailbox

Clock = Callable[[], float]


class SetupError(Exception):
    """setup() cannot go on for a cause the user can fix (a port taken, a subnet or group that is
    not there): its message is that one line, logged without a traceback."""


def loop_clock() -> float:
    return asyncio.get_running_loop().time()


class Actor(abc.ABC):
    """The base of every actor: an inbox, the bus, a clock, a logger and the stop flag."""

    grace_seconds: float | None = None  # a subclass may need longer than the Runtime's grace

    def __init__(self, *, name: str, bus: Bus, clock: Clock | None = None) -> None:
        self.name = name
        self.bus = bus
        self.clock: Clock = clock or loop_clock
        self.inbox: Mailbox[Any] = Mailbox()
        self.stopping = asyncio.Event()
        self.log = structlog.get_logger("controller.actors").bind(actor=name)

    def now(self) -> float:
        return self.clock()

    def publish(self, msg: Any) -> None:
        self.bus.publish(msg)

    async def setup(self) -> None:  # noqa: B027 - optional hook
        """Prepare before dependents start; raising fails startup. Undo partial work on failure:
        stop() is called only for actors whose setup() completed."""

    @abc.abstractmethod
    async def run(self) -> None:
        """The eternal loop; end it on EOI or when `stopping` is set. Returning early is a bug."""

    async def stop(self) -> None:  # noqa: B027 - optional hook
        """Ordered cleanup, called once after run() ended or was abandoned; bounded by grace."""

    async def sleep(self, seconds: float) -> bool:
        """Sleep, ending early when the stop begins: True if the full time passed."""
        if self.stopping.is_set():
            return False
        try:
            async with asyncio.timeout(seconds):
                await self.stopping.wait()
        except TimeoutError:
            return True
        return False

    async def poll_forever(
        self, poll_once: Callable[[], Coroutine[Any, Any, float]], failing: Callable[[], bool]
    ) -> None:
        """Run `poll_once` (which returns the delay to the next poll) until the stop begins.

        A steady cadence while healthy; after a failure or a poll slower than its delay, the
        delay counts from now, so a backoff is never swallowed by catching up.
        """
        next_poll = self.clock()
        while True:
            delay = await poll_once()
            next_poll += delay
            if failing() or next_poll <= self.clock():
                next_poll = self.clock() + delay
            if not await self.sleep(max(0.0, next_poll - self.clock())):
                return
