"""Mailboxes and the Bus: how messages travel between actors without anyone waiting.

An actor publishes on the Bus; the Bus copies each message into the Mailbox of every actor that
subscribed to its type (or a base class), and hands it to every listener (Stats counts them all).
Nothing blocks a publisher: mailboxes are unbounded, and a closed one drops what arrives late. A
mailbox ends with EOI, a one-member enum, so a reader can `match` on its union and `assert_never`.
The supervisor (controller.runtime.supervisor) closes each inbox when it stops that actor.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Callable
from typing import Any, Generic, TypeVar, overload

import structlog

T = TypeVar("T")

logger = structlog.get_logger("controller.bus")


class EndOfInbox(enum.Enum):
    """The one value saying that no message will ever follow."""

    EOI = enum.auto()


EOI = EndOfInbox.EOI


class Mailbox(Generic[T]):
    """An unbounded queue of messages that ends with EOI; what is put after close() is dropped."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[T | EndOfInbox] = asyncio.Queue()
        self._closed = False
        self._ended = False

    @property
    def closed(self) -> bool:
        return self._closed

    def __len__(self) -> int:
        return self._queue.qsize()

    def put(self, msg: T) -> None:
        if not self._closed:
            self._queue.put_nowait(msg)

    def close(self) -> None:
        """The reader still gets what is queued, then EOI (idempotent)."""
        if not self._closed:
            self._closed = True
            self._queue.put_nowait(EOI)

    @overload
    async def get(self) -> T | EndOfInbox: ...
    @overload
    async def get(self, timeout: float | None) -> T | EndOfInbox | None: ...

    async def get(self, timeout: float | None = None) -> T | EndOfInbox | None:
        """The next message; EOI forever once the inbox ended; None if `timeout` passed first."""
        if self._ended:
            return EOI
        try:
            async with asyncio.timeout(timeout):
                msg = await self._queue.get()
        except TimeoutError:
            return None
        if msg is EOI:
            self._ended = True
        return msg


class Bus:
    """Copies each published message into the mailboxes subscribed to its type (or a base class)."""

    def __init__(self) -> None:
        self._routes: list[tuple[Mailbox[Any], tuple[Any, ...]]] = []
        self._listeners: list[Callable[[Any], None]] = []

    def subscribe(self, mailbox: Mailbox[Any], *types: Any) -> None:
        """`types` are classes or unions of them, as isinstance() takes them."""
        if not types:
            raise TypeError("subscribe() needs at least one message type")
        self._routes.append((mailbox, types))

    def listen(self, callback: Callable[[Any], None]) -> None:
        """Call `callback(msg)` for every message; it must not block (Stats counts with it)."""
        self._listeners.append(callback)

    def publish(self, msg: Any) -> None:
        for mailbox, types in self._routes:
            if isinstance(msg, types):
                mailbox.put(msg)
        for callback in self._listeners:
            try:
                callback(msg)
            except Exception:
                # A broken listener must not crash the publisher, which is some other actor.
                logger.exception("bus.listener_failed", message=type(msg).__name__)
