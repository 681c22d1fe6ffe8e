"""Run actors under the real Runtime in a test, and read what they publish from a Mailbox."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from controller.runtime.actor import Actor
from controller.runtime.bus import EOI, Bus, Mailbox
from controller.runtime.supervisor import Runtime

T = TypeVar("T")


def listen(bus: Bus, *types: Any) -> Mailbox[Any]:
    """A mailbox that receives every message of `types` published on `bus` from now on."""
    mailbox: Mailbox[Any] = Mailbox()
    bus.subscribe(mailbox, *types)
    return mailbox


async def next_of(mailbox: Mailbox[Any], kind: type[T], within: float = 5.0) -> T:
    """The next message of type `kind` (others are skipped); fails the test after `within` s."""
    try:
        async with asyncio.timeout(within):
            while True:
                msg = await mailbox.get()
                assert msg is not EOI, "the mailbox was closed"
                if isinstance(msg, kind):
                    return msg
    except TimeoutError:
        raise AssertionError(f"no {kind.__name__} within {within}s") from None


async def drain(mailbox: Mailbox[Any], seconds: float) -> list[Any]:
    """Everything that arrives within `seconds` (real or loop time)."""
    got: list[Any] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while (left := deadline - loop.time()) > 0:
        msg = await mailbox.get(timeout=left)
        if msg is None or msg is EOI:
            break
        got.append(msg)
    return got


@asynccontextmanager
async def running(*actors: Actor, grace_seconds: float = 5.0) -> AsyncIterator[Runtime]:
    """Start `actors` in order under a Runtime; on exit stop them (reverse order) and check that
    the runtime ended cleanly (exit code 0, no actor crashed)."""
    runtime = Runtime(list(actors), grace_seconds=grace_seconds, backoff=(0.05,), jitter=0.0)
    task = asyncio.create_task(runtime.run_until_stopped(), name="test:runtime")
    try:
        async with asyncio.timeout(10):
            while not runtime.all_running():
                if task.done():
                    raise AssertionError(f"the runtime ended during start: {runtime.stop_reason}")
                await asyncio.sleep(0.01)
        yield runtime
    finally:
        runtime.request_stop("test over")
        code = await task
    assert code == 0, f"runtime exit code {code}: {runtime.stop_reason}"
    restarted = {name: n for name, (_, n) in runtime.states().items() if n}
    assert not restarted, f"actors crashed and were restarted: {restarted}"
