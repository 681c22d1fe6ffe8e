"""The runtime's promises, checked in fake loop time (looptime) with exact times.

Start order and reverse stop order, the escalating stop of a hung actor, restarts along the backoff,
giving up after too many crashes, a teardown that survives cancellation, real signals, the bus, the
interruptible sleep, a failing setup, and the heartbeat. Every actor here is a real Actor subclass
driven by the real Runtime; nothing of ours is mocked.
"""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any

import pytest
from structlog.testing import capture_logs

from controller.messages import ActorStateChanged, InstanceUp, LoadSample, SensorLost
from controller.runtime.actor import Actor, SetupError
from controller.runtime.backoff import FailureWindow, backoff_delay
from controller.runtime.bus import EOI, Bus, Mailbox
from controller.runtime.supervisor import Runtime

# A safety net: a broken runtime fails the test at fake t=1000 instead of hanging it.
pytestmark = [pytest.mark.timeout(30)]
looptime = pytest.mark.looptime(end=1000)

Events = list[tuple[str, str, float]]


def now() -> float:
    return asyncio.get_running_loop().time()


class Recorder(Actor):
    """Writes down setup/run/stop with the loop time; runs until EOI like a good actor."""

    def __init__(
        self, name: str, bus: Bus, events: Events, *, setup_seconds: float = 0, stop_seconds=0.0
    ) -> None:
        super().__init__(name=name, bus=bus)
        self.events = events
        self.setup_seconds = setup_seconds
        self.stop_seconds = stop_seconds

    def note(self, what: str) -> None:
        self.events.append((what, self.name, self.now()))

    async def setup(self) -> None:
        self.note("setup")
        await asyncio.sleep(self.setup_seconds)
        self.note("ready")

    async def run(self) -> None:
        self.note("run")
        while await self.inbox.get() is not EOI:
            pass
        self.note("run-ended")

    async def stop(self) -> None:
        self.note("stop")
        await asyncio.sleep(self.stop_seconds)


class Hung(Recorder):
    """Ignores `stopping` and EOI; dies only when cancelled."""

    async def run(self) -> None:
        self.note("run")
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.note("cancelled")
            raise


class Stubborn(Recorder):
    """Swallows cancellation until the test releases it: the runtime must abandon it."""

    release: asyncio.Event

    async def run(self) -> None:
        self.release = asyncio.Event()
        self.note("run")
        while not self.release.is_set():
            try:
                await self.release.wait()
            except asyncio.CancelledError:
                self.note("ignored-cancel")


class Crasher(Recorder):
    """Each run() does the next thing of `plan`: raise, return, or run normally ('ok')."""

    def __init__(self, *args: Any, plan: list[str], crash_after: float = 0, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.plan = plan
        self.crash_after = crash_after

    async def run(self) -> None:
        self.note("run")
        step = self.plan.pop(0) if self.plan else "ok"
        await asyncio.sleep(self.crash_after if step != "ok" else 0)
        if step == "raise":
            raise RuntimeError("boom")
        if step == "return":
            return
        while await self.inbox.get() is not EOI:
            pass


class Ticker(Recorder):
    """Ticks every second through Actor.sleep, to prove it keeps going while others crash."""

    async def run(self) -> None:
        while await self.sleep(1):
            self.note("tick")


def stops(events: Events) -> list[str]:
    return [name for what, name, _ in events if what == "stop"]


def when(events: Events, what: str, name: str) -> list[float]:
    return [t for w, n, t in events if (w, n) == (what, name)]


def log_events(logs: list[dict[str, Any]], actor: str | None = None) -> list[str]:
    return [e["event"] for e in logs if actor is None or e.get("actor") == actor]


def stop_at(runtime: Runtime, t: float) -> None:
    asyncio.get_running_loop().call_at(t, runtime.request_stop, "test")


@looptime
async def test_ordered_start_each_after_the_previous_setup_and_reverse_stop() -> None:
    bus, events, changes = Bus(), [], []
    bus.listen(lambda msg: changes.append(msg) if isinstance(msg, ActorStateChanged) else None)
    names = ["firewall", "pool", "writer"]
    actors = [Recorder(n, bus, events, setup_seconds=2) for n in names]
    runtime = Runtime(actors, grace_seconds=3)
    stop_at(runtime, 10)

    assert await runtime.run_until_stopped() == 0

    # Readiness handshake: each setup begins when the previous one is ready (2 s apart).
    assert [(n, t) for w, n, t in events if w == "setup"] == [
        (n, 2 * i) for i, n in enumerate(names)
    ]
    assert when(events, "run", "firewall") == [2]
    assert stops(events) == ["writer", "pool", "firewall"]
    for name in names:  # each run() ended (on EOI) before its actor's stop()
        assert when(events, "run-ended", name)[0] <= when(events, "stop", name)[0] == 10
    assert now() == 10  # well-behaved actors stop without using any grace
    assert runtime.states() == {n: ("stopped", 0) for n in names}
    assert [c.state for c in changes if c.actor == "pool"] == [
        "starting",
        "running",
        "stopping",
        "stopped",
    ]
    assert runtime.stop_reason == "test"


@looptime
async def test_a_hung_actor_is_cancelled_after_the_grace_and_the_others_still_stop() -> None:
    bus, events = Bus(), []
    actors = [Recorder("a", bus, events), Hung("b", bus, events), Recorder("c", bus, events)]
    runtime = Runtime(actors, grace_seconds=3)
    stop_at(runtime, 5)

    with capture_logs() as logs:
        assert await runtime.run_until_stopped() == 0

    assert stops(events) == ["c", "b", "a"]
    assert when(events, "cancelled", "b") == [8]  # 5 + one grace
    assert when(events, "stop", "a") == [8]
    assert now() == 8
    assert log_events(logs, "b") == [
        "actor.setup",
        "actor.ready",
        "actor.stopping",
        "actor.cancelling",
        "actor.cancelled",
        "actor.stopped",
    ]


@looptime
async def test_an_actor_that_survives_cancellation_is_abandoned_and_a_slow_stop_is_cut() -> None:
    bus, events = Bus(), []
    stubborn = Stubborn("stubborn", bus, events)
    slow_stop = Recorder("slow", bus, events, stop_seconds=100)
    first = Recorder("first", bus, events)
    runtime = Runtime([first, stubborn, slow_stop], grace_seconds=3)
    stop_at(runtime, 5)

    with capture_logs() as logs:
        # a stop cut short may have left something behind: the exit code says so
        assert await runtime.run_until_stopped() == 1

    # slow: stop() cut at 5+3; stubborn: grace, cancel, grace, abandon at 8+3+3; first: at once.
    assert stops(events) == ["slow", "stubborn", "first"]
    assert when(events, "stop", "stubborn") == [14]
    assert now() == 14
    assert "actor.stop_timeout" in log_events(logs, "slow")
    assert "actor.abandoned" in log_events(logs, "stubborn")
    assert runtime.abandoned == ["actor:stubborn"]
    assert when(events, "ignored-cancel", "stubborn") == [11]
    stubborn.release.set()  # let it end so that the test leaves no pending task
    await asyncio.sleep(0)


@looptime
async def test_a_crashing_actor_restarts_along_the_backoff_while_others_keep_running() -> None:
    bus, events = Bus(), []
    crasher = Crasher("crasher", bus, events, plan=["raise", "return", "raise", "ok"])
    ticker = Ticker("ticker", bus, events)
    runtime = Runtime([ticker, crasher], backoff=(1, 2, 4), rand=lambda: 0.5)
    stop_at(runtime, 20.5)

    with capture_logs() as logs:
        assert await runtime.run_until_stopped() == 0

    assert when(events, "run", "crasher") == [0, 1, 3, 7]
    assert when(events, "tick", "ticker") == list(range(1, 21))
    assert runtime.states()["crasher"] == ("stopped", 3)
    crasher_logs = log_events(logs, "crasher")
    assert crasher_logs.count("actor.crashed") == 2
    assert crasher_logs.count("actor.returned") == 1  # an eternal task that returned
    assert crasher_logs.count("actor.restarting") == 3


@looptime
async def test_the_backoff_resets_when_crashes_are_spread_beyond_the_window() -> None:
    bus, events = Bus(), []
    crasher = Crasher("crasher", bus, events, plan=["raise"] * 4, crash_after=10)
    runtime = Runtime(
        [crasher], backoff=(1, 2, 4), max_restarts=1, restart_window_seconds=5, rand=lambda: 0.5
    )
    stop_at(runtime, 50)

    assert await runtime.run_until_stopped() == 0

    assert when(events, "run", "crasher") == [0, 11, 22, 33, 44]  # always the first delay


@looptime
async def test_too_many_crashes_in_the_window_stop_everything_with_exit_code_1() -> None:
    bus, events, changes = Bus(), [], []
    crasher = Crasher("crasher", bus, events, plan=["raise"] * 10)
    actors = [Recorder("a", bus, events), crasher, Recorder("c", bus, events)]
    runtime = Runtime(
        actors, backoff=(1, 2, 4), max_restarts=2, rand=lambda: 0.5, on_state=changes.append
    )

    assert await runtime.run_until_stopped() == 1

    assert when(events, "run", "crasher") == [0, 1, 3]  # the third crash is one too many
    assert now() == 3
    assert stops(events) == ["c", "crasher", "a"]
    failed = [c for c in changes if c.state == "failed"]
    assert [(c.actor, c.restarts, c.at) for c in failed] == [("crasher", 2, 3)]
    assert failed[0].error == "RuntimeError('boom')"
    assert runtime.stop_reason == "crasher crashed 3 times in 300s"


@looptime
async def test_the_teardown_completes_when_the_runner_is_cancelled_twice() -> None:
    bus, events = Bus(), []
    actors = [Recorder(n, bus, events, stop_seconds=2) for n in ("a", "b", "c")]
    runtime = Runtime(actors, grace_seconds=3)
    task = asyncio.create_task(runtime.run_until_stopped())
    await asyncio.sleep(5)
    task.cancel()
    await asyncio.sleep(1)
    task.cancel()  # a second Ctrl-C, in the middle of c's stop()

    with pytest.raises(asyncio.CancelledError):
        await task

    assert [(n, t) for w, n, t in events if w == "stop"] == [("c", 5), ("b", 7), ("a", 9)]
    assert now() == 11
    assert runtime.states() == {n: ("stopped", 0) for n in ("a", "b", "c")}


@looptime
async def test_cancelling_during_a_slow_setup_stops_only_what_started() -> None:
    bus, events = Bus(), []
    actors = [Recorder("a", bus, events), Recorder("b", bus, events, setup_seconds=1e6)]
    runtime = Runtime(actors, grace_seconds=3)
    task = asyncio.create_task(runtime.run_until_stopped())
    await asyncio.sleep(5)
    task.cancel()

    with pytest.raises(asyncio.CancelledError):
        await task

    assert stops(events) == ["a"]  # b never became ready, so no stop() is owed to it
    assert now() == 5


@looptime
async def test_a_stop_request_during_a_slow_setup_does_not_wait_for_it() -> None:
    bus, events = Bus(), []
    actors = [Recorder("a", bus, events), Recorder("b", bus, events, setup_seconds=1e6)]
    runtime = Runtime(actors, grace_seconds=3)
    stop_at(runtime, 5)

    assert await runtime.run_until_stopped() == 0

    assert stops(events) == ["a"]
    assert runtime.states() == {"a": ("stopped", 0), "b": ("stopped", 0)}
    assert now() == 5


@looptime
async def test_a_stop_requested_before_the_start_starts_nothing() -> None:
    bus, events = Bus(), []
    runtime = Runtime([Recorder("a", bus, events)])
    runtime.request_stop("early")
    runtime.request_stop("again", exit_code=3)  # idempotent: the first reason stays

    assert await runtime.run_until_stopped() == 3

    assert events == []
    assert runtime.stop_reason == "early"
    assert runtime.states() == {"a": ("pending", 0)}


@looptime
async def test_a_failing_setup_stops_the_started_actors_in_reverse_and_returns_1() -> None:
    class BadSetup(Recorder):
        async def setup(self) -> None:
            await asyncio.sleep(1)
            raise RuntimeError("the security group cannot be created")

    bus, events = Bus(), []
    actors = [
        Recorder("a", bus, events),
        Recorder("b", bus, events),
        BadSetup("c", bus, events),
        Recorder("d", bus, events),
    ]
    runtime = Runtime(actors)

    with capture_logs() as logs:
        assert await runtime.run_until_stopped() == 1

    assert stops(events) == ["b", "a"]
    assert when(events, "setup", "d") == []
    assert runtime.states() == {
        "a": ("stopped", 0),
        "b": ("stopped", 0),
        "c": ("failed", 0),
        "d": ("pending", 0),
    }
    (failure,) = [e for e in logs if e["event"] == "actor.setup_failed"]
    assert failure["actor"] == "c"
    assert "the security group cannot be created" in failure["error"]
    assert now() == 1


@looptime
async def test_a_setup_error_the_user_can_fix_is_one_line_without_a_traceback() -> None:
    class BadSubnet(Recorder):
        async def setup(self) -> None:
            raise SetupError("config.toml: [slave] subnet 'subnet-0x': not found in us-east-1")

    bus, events = Bus(), []
    runtime = Runtime([Recorder("a", bus, events), BadSubnet("b", bus, events)])
    with capture_logs() as logs:
        assert await runtime.run_until_stopped() == 1
    (failure,) = [e for e in logs if e["event"] == "actor.setup_failed"]
    assert failure["error"] == "config.toml: [slave] subnet 'subnet-0x': not found in us-east-1"
    assert "exc_info" not in failure
    assert runtime.states()["b"] == ("failed", 0)
    assert stops(events) == ["a"]


@looptime
async def test_the_heartbeat_beats_only_while_every_actor_runs() -> None:
    bus, events, beats, ready = Bus(), [], [], []
    crasher = Crasher("crasher", bus, events, plan=["raise"], crash_after=5)
    runtime = Runtime(
        [crasher],
        backoff=(22,),
        rand=lambda: 0.5,
        heartbeat_seconds=10,
        on_heartbeat=lambda: beats.append(now()),
        on_ready=lambda: ready.append(now()),
    )
    stop_at(runtime, 45)

    assert await runtime.run_until_stopped() == 0

    # Crash at 5, back at 27: no beat at 10 and 20.
    assert beats == [0, 30, 40]
    assert ready == [0]


async def test_sigterm_requests_the_stop_and_a_second_signal_does_not_break_the_teardown() -> None:
    class SlowStop(Recorder):
        async def stop(self) -> None:
            self.note("stop")
            self.stop_started.set()
            await self.release.wait()

    bus, events = Bus(), []
    slow = SlowStop("slow", bus, events)
    slow.stop_started, slow.release = asyncio.Event(), asyncio.Event()
    runtime = Runtime([Recorder("a", bus, events), slow], grace_seconds=5)
    runtime.install_signal_handlers()

    with capture_logs() as logs:
        task = asyncio.create_task(runtime.run_until_stopped())
        for _ in range(500):
            if runtime.all_running():
                break
            await asyncio.sleep(0.001)
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.wait_for(slow.stop_started.wait(), 5)
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(500):
            if "runtime.already_stopping" in log_events(logs):
                break
            await asyncio.sleep(0.001)
        slow.release.set()
        assert await asyncio.wait_for(task, 5) == 0

    assert runtime.stop_reason == "SIGTERM"
    assert stops(events) == ["slow", "a"]
    (second,) = [e for e in logs if e["event"] == "runtime.already_stopping"]
    assert second["signal"] == "SIGINT"
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # handlers removed at the end


@looptime
async def test_the_bus_delivers_by_type_to_subscribers_and_everything_to_listeners() -> None:
    bus = Bus()
    loads: Mailbox[LoadSample | SensorLost] = Mailbox()
    fleet: Mailbox[InstanceUp] = Mailbox()
    everything: Mailbox[object] = Mailbox()
    heard: list[object] = []
    bus.subscribe(loads, LoadSample | SensorLost)
    bus.subscribe(fleet, InstanceUp)
    bus.subscribe(everything, object)
    bus.listen(heard.append)
    bus.listen(lambda msg: 1 / 0)  # a broken listener must not hurt the publisher

    sample = LoadSample(at=0, rps=1.0, window_rps=1.0)
    lost = SensorLost(at=1, since=1, reason="refused")
    with capture_logs() as logs:
        bus.publish(sample)
        bus.publish(lost)

    assert heard == [sample, lost]
    assert "bus.listener_failed" in log_events(logs)
    assert [len(loads), len(fleet), len(everything)] == [2, 0, 2]
    assert await loads.get() is sample
    assert await loads.get(timeout=1) is lost
    assert await fleet.get(timeout=2) is None
    assert now() == 2
    with pytest.raises(TypeError):
        bus.subscribe(fleet)


@looptime
async def test_a_closed_mailbox_drains_then_says_eoi_forever_and_drops_late_messages() -> None:
    box: Mailbox[int] = Mailbox()
    box.put(1)
    box.close()
    box.put(2)
    box.close()
    assert [await box.get(), await box.get(), await box.get(timeout=5)] == [1, EOI, EOI]
    assert now() == 0


@looptime
async def test_actor_sleep_wakes_early_when_the_stop_begins() -> None:
    class Idle(Actor):
        async def run(self) -> None:
            pass

    actor = Idle(name="idle", bus=Bus())
    assert await actor.sleep(2) is True
    assert now() == 2
    asyncio.get_running_loop().call_later(3, actor.stopping.set)
    assert await actor.sleep(100) is False
    assert now() == 5
    assert await actor.sleep(100) is False  # already stopping: no wait at all
    assert now() == 5
    assert actor.now() == 5
    with capture_logs() as logs:
        actor.log.info("hello")
    assert logs == [{"event": "hello", "actor": "idle", "log_level": "info"}]


def test_backoff_delays_repeat_the_last_value_and_jitter_stays_within_ten_percent() -> None:
    delays = (1, 2, 4)
    exact = [backoff_delay(delays, i, rand=lambda: 0.5) for i in range(5)]
    assert exact == [1, 2, 4, 4, 4]
    assert backoff_delay(delays, 1, rand=lambda: 0.0) == pytest.approx(1.8)
    assert backoff_delay(delays, 1, rand=lambda: 1.0) == pytest.approx(2.2)


def test_the_failure_window_forgets_old_failures() -> None:
    window = FailureWindow(10)
    assert [window.record(t) for t in (0, 1, 5)] == [1, 2, 3]
    assert window.record(11) == 2  # 0 and 1 fell out; 5 and 11 remain
    assert window.count(30) == 0


def test_actor_names_must_be_unique() -> None:
    class Idle(Actor):
        async def run(self) -> None:
            pass

    bus = Bus()
    with pytest.raises(ValueError, match="unique"):
        Runtime([Idle(name="x", bus=bus), Idle(name="x", bus=bus)])
