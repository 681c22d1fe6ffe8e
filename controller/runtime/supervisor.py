"""The supervisor: starts actors in order, restarts crashed ones, and stops them all in reverse.

The Runtime starts the actors in order, and an actor starts only after the previous one's setup()
has finished, so it may rely on what earlier ones prepared (the security group exists before
SpotPool launches into it). Each run() then lives under a supervisor that restarts it after a
crash, or after it returned (an eternal task that returns is a bug), waiting along a configured
backoff sequence; too many crashes within a window stop the whole process with exit code 1.

A stop is only ever requested (signals set a flag) and carried out in one place, in escalating
steps: every actor's `stopping` is set; then, in reverse start order, the actor's inbox is closed
with EOI, its run() gets a grace period to end, is cancelled and gets another, is abandoned loudly
if it still lives, and finally its stop() cleans up, also bounded by the grace. The teardown runs in
its own task and survives the cancellation of its caller, so that cleanup (drain, terminate, delete
the security group) is not cut short by a second Ctrl-C.
"""

from __future__ import annotations

import asyncio
import random
import signal
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from controller.messages import ActorStateChanged
from controller.runtime.actor import Actor, Clock, SetupError, loop_clock
from controller.runtime.backoff import FailureWindow, backoff_delay
from controller.runtime.bus import Bus

logger = structlog.get_logger("controller.runtime")


@dataclass(eq=False)
class _Slot:
    """The runtime's record of one actor."""

    actor: Actor
    failures: FailureWindow
    state: str = "pending"
    restarts: int = 0
    started: bool = False  # setup() completed, so stop() is owed
    task: asyncio.Task[None] | None = None  # the current run()
    supervisor: asyncio.Task[None] | None = None


class Runtime:
    """Starts actors in order, restarts crashed ones, and stops them all in reverse order."""

    def __init__(
        self,
        actors: Sequence[Actor],
        *,
        grace_seconds: float = 10.0,
        backoff: Sequence[float] = (1, 2, 4, 8, 16, 30),
        max_restarts: int = 5,
        restart_window_seconds: float = 300.0,
        on_state: Callable[[ActorStateChanged], None] | None = None,
        bus: Bus | None = None,
        heartbeat_seconds: float = 10.0,
        on_heartbeat: Callable[[], None] | None = None,
        on_ready: Callable[[], None] | None = None,
        clock: Clock | None = None,
        jitter: float = 0.1,
        rand: Callable[[], float] = random.random,
    ) -> None:
        names = [actor.name for actor in actors]
        if len(set(names)) != len(names):
            raise ValueError(f"actor names must be unique, got {names}")
        if not backoff:
            raise ValueError("backoff needs at least one delay")
        self._slots = [_Slot(a, FailureWindow(restart_window_seconds)) for a in actors]
        self.grace_seconds = grace_seconds
        self.backoff = tuple(backoff)
        self.max_restarts = max_restarts
        self.restart_window_seconds = restart_window_seconds
        self.on_state = on_state
        self.bus = bus if bus is not None else _shared_bus(actors)
        self.heartbeat_seconds = heartbeat_seconds
        self.on_heartbeat = on_heartbeat
        self.on_ready = on_ready
        self.clock: Clock = clock or loop_clock
        self.jitter = jitter
        self.rand = rand
        self.stop_reason: str | None = None
        self.exit_code = 0
        # Names of tasks that outlived cancellation: asyncio.run() would wait for them forever at
        # exit, so a caller that finds any should leave with os._exit(exit_code).
        self.abandoned: list[str] = []
        self._stop_requested = asyncio.Event()
        self._interrupted_setup: tuple[_Slot, asyncio.Task[None]] | None = None
        self._signals: list[signal.Signals] = []

    def states(self) -> dict[str, tuple[str, int]]:
        """Each actor's state (pending, starting, running, restarting, failed, stopping, stopped)
        and how many times its run() was restarted."""
        return {slot.actor.name: (slot.state, slot.restarts) for slot in self._slots}

    def all_running(self) -> bool:
        return not self._stop_requested.is_set() and all(s.state == "running" for s in self._slots)

    def request_stop(self, reason: str = "signal", exit_code: int = 0) -> None:
        """Ask for the ordered stop. Only sets a flag, so a signal handler may call it; idempotent
        (the first reason stays, the highest exit code wins)."""
        self.exit_code = max(self.exit_code, exit_code)
        if self._stop_requested.is_set():
            return
        self.stop_reason = reason
        logger.info("runtime.stop_requested", reason=reason, exit_code=self.exit_code)
        self._stop_requested.set()

    def install_signal_handlers(self) -> None:
        """SIGTERM and SIGINT request the stop; removed again when run_until_stopped() ends."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)
            self._signals.append(sig)

    def _on_signal(self, sig: signal.Signals) -> None:
        if self._stop_requested.is_set():
            logger.warning(
                "runtime.already_stopping",
                signal=sig.name,
                reason=self.stop_reason,
                hint="the ordered teardown continues; SIGKILL would skip the cleanup",
            )
        else:
            self.request_stop(sig.name)

    async def run_until_stopped(self) -> int:
        """Start, supervise until a stop is requested or an actor fails, tear down; the exit code.

        If the calling task is cancelled, the teardown still completes, then CancelledError rises.
        """
        logger.info("runtime.starting", actors=[slot.actor.name for slot in self._slots])
        try:
            # The TaskGroup holds only the supervisors, which never raise and end when cancelled;
            # run() tasks live outside it, so one that refuses to die can be abandoned.
            async with asyncio.TaskGroup() as supervisors:
                try:
                    await self._start(supervisors)
                    if self.on_ready is not None and self.all_running():
                        self.on_ready()  # e.g. systemd READY=1: every actor has set up
                    await self._watch()
                finally:
                    await _shielded(self._teardown(), name="runtime:teardown")
        finally:
            loop = asyncio.get_running_loop()
            while self._signals:
                loop.remove_signal_handler(self._signals.pop())
        return self.exit_code

    async def _start(self, supervisors: asyncio.TaskGroup) -> None:
        for slot in self._slots:
            if self._stop_requested.is_set() or not await self._setup(slot):
                return
            slot.started = True
            slot.task = self._spawn(slot)
            self._set_state(slot, "running")
            slot.supervisor = supervisors.create_task(
                self._supervise(slot), name=f"supervisor:{slot.actor.name}"
            )

    async def _setup(self, slot: _Slot) -> bool:
        """Run setup() until it completes or a stop is requested: a slow cloud must not hold up
        SIGTERM. True when the actor is ready."""
        actor, log = slot.actor, logger.bind(actor=slot.actor.name)
        self._set_state(slot, "starting")
        log.info("actor.setup")
        setup = asyncio.create_task(actor.setup(), name=f"setup:{actor.name}")
        stop = asyncio.create_task(self._stop_requested.wait(), name="runtime:stop-wait")
        try:
            await asyncio.wait({setup, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            if not setup.done():
                setup.cancel()
                self._interrupted_setup = (slot, setup)  # the teardown waits for it, bounded
        if not setup.done():
            log.info("actor.setup_interrupted", reason=self.stop_reason)
            return False
        error = "setup() was cancelled" if setup.cancelled() else setup.exception()
        if isinstance(error, SetupError):  # the user's to fix: the line says what, no traceback
            log.error(
                "actor.setup_failed",
                error=str(error),
                hint="fix it and start again; the actors started so far are being stopped",
            )
            self._set_state(slot, "failed", str(error))
            self.request_stop(f"setup of {actor.name} failed", exit_code=1)
            return False
        if error is not None:
            log.error(
                "actor.setup_failed",
                error=repr(error),
                exc_info=error if isinstance(error, BaseException) else None,
                hint="fix the cause and start again; the actors started so far are being stopped",
            )
            self._set_state(slot, "failed", repr(error))
            self.request_stop(f"setup of {actor.name} failed", exit_code=1)
            return False
        log.info("actor.ready")
        return True

    def _spawn(self, slot: _Slot) -> asyncio.Task[None]:
        return asyncio.create_task(slot.actor.run(), name=f"actor:{slot.actor.name}")

    async def _supervise(self, slot: _Slot) -> None:
        """Restart run() after it crashed or returned, with backoff, until the stop or failure."""
        log = logger.bind(actor=slot.actor.name)
        try:
            while slot.task is not None:
                await asyncio.wait({slot.task})  # unlike `await task`, never cancels the run()
                if self._stop_requested.is_set():
                    return  # the teardown owns the run() from here
                error = _describe_end(slot.task, log)
                crashes = slot.failures.record(self.clock())
                if crashes > self.max_restarts:
                    window = self.restart_window_seconds
                    log.error("actor.failed", crashes=crashes, window_seconds=window, error=error)
                    self._set_state(slot, "failed", error)
                    self.request_stop(
                        f"{slot.actor.name} crashed {crashes} times in {window:g}s", exit_code=1
                    )
                    return
                delay = backoff_delay(self.backoff, crashes - 1, jitter=self.jitter, rand=self.rand)
                self._set_state(slot, "restarting", error)
                log.warning("actor.restarting", delay_seconds=round(delay, 3), crashes=crashes)
                if await self._stop_within(delay):
                    return
                slot.restarts += 1
                slot.task = self._spawn(slot)
                self._set_state(slot, "running")
        except Exception:
            log.exception("runtime.supervisor_failed")
            self.request_stop(f"supervisor of {slot.actor.name} failed", exit_code=1)

    async def _watch(self) -> None:
        """Wait for the stop request; meanwhile beat the heart while every actor runs."""
        while not self._stop_requested.is_set():
            if self.on_heartbeat is not None and self.all_running():
                try:
                    self.on_heartbeat()
                except Exception:
                    logger.exception("runtime.heartbeat_failed")
            await self._stop_within(self.heartbeat_seconds)

    async def _stop_within(self, seconds: float) -> bool:
        """Wait up to `seconds` for the stop request; True if it came."""
        try:
            async with asyncio.timeout(seconds):
                await self._stop_requested.wait()
        except TimeoutError:
            return False
        return True

    async def _teardown(self) -> None:
        if not self._stop_requested.is_set():
            self.request_stop("cancelled")
        logger.info("runtime.stopping", reason=self.stop_reason)
        # Supervisors first, so that no run() is restarted while we stop it.
        supervisors = [slot.supervisor for slot in self._slots if slot.supervisor is not None]
        for task in supervisors:
            task.cancel()
        if supervisors:
            await asyncio.wait(supervisors)
        if self._interrupted_setup is not None:
            slot, setup = self._interrupted_setup
            await self._finish(setup, logger.bind(actor=slot.actor.name), polite=False)
            self._set_state(slot, "stopped")
        # Every loop may wind down at once; the cleanups below still go one by one, in reverse.
        for slot in self._slots:
            slot.actor.stopping.set()
        for slot in reversed(self._slots):
            if slot.started:
                await self._stop_actor(slot)
        logger.info("runtime.stopped", reason=self.stop_reason, exit_code=self.exit_code)

    async def _stop_actor(self, slot: _Slot) -> None:
        actor, log = slot.actor, logger.bind(actor=slot.actor.name)
        grace = actor.grace_seconds if actor.grace_seconds is not None else self.grace_seconds
        log.info("actor.stopping", grace_seconds=grace)
        self._set_state(slot, "stopping")
        actor.inbox.close()
        if slot.task is not None:
            await self._finish(slot.task, log, grace=grace)
        try:
            async with asyncio.timeout(grace) as deadline:
                await actor.stop()
        except Exception as exc:
            self.exit_code = max(self.exit_code, 1)  # its cleanup may be partial: say so
            if isinstance(exc, TimeoutError) and deadline.expired():
                log.error("actor.stop_timeout", grace_seconds=grace, hint="cleanup may be partial")
            else:
                log.error("actor.stop_failed", error=repr(exc), exc_info=exc)
        # an actor whose stop left something behind (a fleet not torn down) fails the exit
        self.exit_code = max(self.exit_code, getattr(actor, "stop_exit_code", 0))
        self._set_state(slot, "stopped")
        log.info("actor.stopped")

    async def _finish(
        self, task: asyncio.Task[None], log: Any, *, grace: float | None = None, polite: bool = True
    ) -> None:
        """Let the task end within the grace; else cancel it and allow another grace; else
        abandon it, loudly."""
        grace = self.grace_seconds if grace is None else grace
        if task.done():
            return  # ended before the stop: the supervisor has reported how
        if polite:
            await asyncio.wait({task}, timeout=grace)
        if not task.done():
            log.warning("actor.cancelling", task=task.get_name(), grace_seconds=grace)
            task.cancel()
            await asyncio.wait({task}, timeout=grace)
            if not task.done():
                self.abandoned.append(task.get_name())
                log.error(
                    "actor.abandoned",
                    task=task.get_name(),
                    hint="it ignores cancellation; the process goes on without it",
                )
                return
            if task.cancelled():
                log.warning("actor.cancelled", task=task.get_name())
        if not task.cancelled() and task.exception() is not None:
            log.error("actor.crashed", error=repr(task.exception()), exc_info=task.exception())

    def _set_state(self, slot: _Slot, state: str, error: str | None = None) -> None:
        slot.state = state
        msg = ActorStateChanged(
            at=self.clock(), actor=slot.actor.name, state=state, restarts=slot.restarts, error=error
        )
        for deliver in (self.on_state, self.bus.publish if self.bus else None):
            if deliver is not None:
                try:
                    deliver(msg)
                except Exception:
                    logger.exception("runtime.on_state_failed", actor=slot.actor.name)


def _describe_end(task: asyncio.Task[None], log: Any) -> str:
    """Log why a run() ended while no stop was requested; return it in a few words."""
    if task.cancelled():
        log.error("actor.crashed", error="run() was cancelled")
        return "run() was cancelled"
    exc = task.exception()
    if exc is None:
        log.error("actor.returned", error="eternal task returned")
        return "eternal task returned"
    log.error("actor.crashed", error=repr(exc), exc_info=exc)
    return repr(exc)


def _shared_bus(actors: Sequence[Actor]) -> Bus | None:
    buses = {id(actor.bus): actor.bus for actor in actors}
    return next(iter(buses.values())) if len(buses) == 1 else None


async def _shielded(coro: Coroutine[Any, Any, None], *, name: str) -> None:
    """Run `coro` to its end even if the caller is cancelled, once or many times; then re-raise
    the cancellation."""
    task = asyncio.create_task(coro, name=name)
    cancellation: asyncio.CancelledError | None = None
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError as exc:
            if task.done():
                break
            cancellation = cancellation or exc
            logger.warning("runtime.already_stopping", hint="the teardown continues; wait for it")
    if cancellation is not None:
        if not task.cancelled() and task.exception() is not None:
            logger.error("runtime.teardown_failed", exc_info=task.exception())
        raise cancellation
    task.result()
