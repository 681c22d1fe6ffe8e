"""SlaveHealth against real HTTP servers on 127.0.20.x (the addresses moto gives instances).

The actor runs its own loop under the Runtime in fake loop time (looptime): the fake slaves are
served on the same loop, so a probe takes no loop time unless it waits for a timeout, and every
assertion can name a time. POLL is long (30 s) so that "within a second" and "within a poll"
cannot be confused.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from aiohttp import web

from actors.slave_health import Cadence, Outcome, SlaveHealth, _Slave, after_probe
from controller.config.schema import Config, MasterSection, ScalingSection, SlaveSection
from controller.messages import (
    DrainSlave,
    InstanceDown,
    InstanceId,
    InstanceUp,
    LostReason,
    Role,
    SlaveLost,
    SlaveReady,
)
from controller.runtime.bus import Bus
from tests.actor_runner import drain, listen, next_of, running
from tests.harness.fake_slave import FakeSlave
from tests.harness.net import free_port

Factory = Callable[..., Awaitable[FakeSlave]]

POLL = 30.0  # ready slaves are probed this often
SAMPLE = 1.0  # not-yet-ready ones this often ([master] sample_interval's default)
RECHECK = 0.5  # a ready slave's failed probe is confirmed this much later
TIMEOUT = 2.0  # probe_timeout

looptime = pytest.mark.looptime(end=2000)


@pytest.fixture
def ports() -> tuple[int, int]:
    return free_port("127.0.20.1"), free_port("127.0.20.1")


def make_config(ports: tuple[int, ...], probe_timeout: float = TIMEOUT) -> Config:
    return Config(
        master=MasterSection(poll_interval=POLL),
        scaling=ScalingSection(probe_timeout=probe_timeout),
        slave=SlaveSection(ports=ports),
    )


def up(n: int, address: str, role: Role = Role.SLAVE) -> InstanceUp:
    return InstanceUp(at=0.0, instance_id=InstanceId(f"i-{n:04}"), address=address, role=role)


def down(n: int, address: str, reason: LostReason) -> InstanceDown:
    return InstanceDown(at=0.0, instance_id=InstanceId(f"i-{n:04}"), address=address, reason=reason)


def now() -> float:
    return asyncio.get_running_loop().time()


async def sleep_until(t: float) -> None:
    await asyncio.sleep(t - now())


async def both_ports(factory: Factory, address: str, ports: tuple[int, int], status=403):
    return [await factory(address, port, status) for port in ports]


@looptime
async def test_a_booted_slave_is_announced_within_a_second_of_answering(
    fake_slave_factory: Factory, ports: tuple[int, int]
) -> None:
    bus = Bus()
    events = listen(bus, SlaveReady, SlaveLost)
    async with running(SlaveHealth(config=make_config(ports), bus=bus)):
        bus.publish(up(1, "127.0.20.10"))  # nothing answers yet: still booting
        await asyncio.sleep(7.3)
        assert await drain(events, 0) == []
        await both_ports(fake_slave_factory, "127.0.20.10", ports)
        answering = now()
        ready = await next_of(events, SlaveReady, within=POLL)
        assert ready.address == "127.0.20.10"
        assert ready.at - answering <= SAMPLE


@looptime
async def test_not_ready_slaves_are_probed_until_they_pass_and_announced_once(
    fake_slave_factory: Factory, ports: tuple[int, int]
) -> None:
    a = await both_ports(fake_slave_factory, "127.0.20.10", ports)
    b = await both_ports(fake_slave_factory, "127.0.20.11", ports)
    b[1].set_status(200)  # a web server, not a render slave
    c = await fake_slave_factory("127.0.20.12", ports[0])  # the second port is closed
    # 127.0.20.13: nothing listens at all (still booting).
    bus = Bus()
    events = listen(bus, SlaveReady, SlaveLost)
    async with running(SlaveHealth(config=make_config(ports), bus=bus)):
        start = now()
        for n, address in enumerate(["127.0.20.10", "127.0.20.11", "127.0.20.12", "127.0.20.13"]):
            bus.publish(up(n, address))
        first = await next_of(events, SlaveReady)
        assert (first.instance_id, first.at) == ("i-0000", start)  # probed at once
        assert await drain(events, 5.0) == []

        b[1].set_status(403)
        await fake_slave_factory("127.0.20.12", ports[1])
        fixed = now()
        got = await drain(events, 2 * SAMPLE)
        assert sorted(ready_ids(got)) == ["i-0001", "i-0002"]
        assert all(m.at - fixed <= SAMPLE for m in got)

        await both_ports(fake_slave_factory, "127.0.20.13", ports)
        assert ready_ids(await drain(events, 2 * SAMPLE)) == ["i-0003"]
        # Each announced once; the ready ones are still probed, every poll.
        await sleep_until(start + 2 * POLL + 1)
        assert await drain(events, 0) == []
        assert a[0].hits == 3 and c.hits >= 3


@looptime
async def test_a_killed_ready_slave_is_lost_within_a_poll_and_a_recheck(
    fake_slave_factory: Factory, ports: tuple[int, int]
) -> None:
    slave = await both_ports(fake_slave_factory, "127.0.20.10", ports)
    bus = Bus()
    events = listen(bus, SlaveReady, SlaveLost)
    async with running(SlaveHealth(config=make_config(ports), bus=bus)):
        bus.publish(up(1, "127.0.20.10"))
        await next_of(events, SlaveReady, within=POLL)
        await asyncio.sleep(0.1)  # just after a probe passed: the worst moment to die
        await slave[1].stop()  # one port stops answering: connection refused
        killed = now()
        lost = await next_of(events, SlaveLost, within=3 * POLL)
        assert (lost.instance_id, lost.address, lost.reason) == (
            "i-0001",
            "127.0.20.10",
            LostReason.UNREACHABLE,
        )
        assert lost.at - killed <= POLL + TIMEOUT + RECHECK
        # Not probed again, not re-listed: SpotPool replaces it.
        await slave[1].start()
        hits = slave[0].hits
        assert await drain(events, 2 * POLL) == []
        assert slave[0].hits == hits


@looptime
async def test_one_failed_probe_is_forgiven_if_the_recheck_passes(
    fake_slave_factory: Factory, ports: tuple[int, int]
) -> None:
    slave = await both_ports(fake_slave_factory, "127.0.20.10", ports)
    bus = Bus()
    events = listen(bus, SlaveReady, SlaveLost)
    async with running(SlaveHealth(config=make_config(ports), bus=bus)):
        bus.publish(up(1, "127.0.20.10"))
        await next_of(events, SlaveReady)
        for _ in range(3):  # a hiccup at a poll, gone by the recheck
            slave[0].set_status(500)
            failed = await next_hit(slave[0])
            slave[0].set_status(403)
            assert await next_hit(slave[0]) - failed == pytest.approx(RECHECK, abs=0.02)
        assert await drain(events, 0) == []
        slave[0].set_status(502)  # now for good
        failed = await next_hit(slave[0])
        lost = await next_of(events, SlaveLost, within=POLL)
        assert lost.at - failed == pytest.approx(RECHECK, abs=0.02)


async def next_hit(slave: FakeSlave) -> float:
    """The loop time of the slave's next request."""
    hits = slave.hits
    for _ in range(int(2 * POLL / 0.01)):
        if slave.hits > hits:
            return now()
        await asyncio.sleep(0.01)
    raise AssertionError(f"{slave.url} was not probed within {2 * POLL}s")


@looptime
async def test_a_slave_that_hangs_is_lost_by_the_probe_timeouts() -> None:
    port = free_port("127.0.20.1")
    slow = SlowSlaves(delay=0.0)
    bus = Bus()
    events = listen(bus, SlaveReady, SlaveLost)
    try:
        await slow.serve("127.0.20.10", port)
        async with running(SlaveHealth(config=make_config((port,)), bus=bus)):
            bus.publish(up(1, "127.0.20.10"))
            await next_of(events, SlaveReady)
            slow.delay = 1000.0  # accepts, never answers in time
            hung = now()
            lost = await next_of(events, SlaveLost, within=3 * POLL)
            assert lost.reason is LostReason.UNREACHABLE
            # the poll's probe times out, then the recheck's (a killed slave refuses at once)
            assert lost.at - hung <= POLL + 2 * TIMEOUT + RECHECK
    finally:
        await slow.close()


@looptime
async def test_instance_down_and_drain(fake_slave_factory: Factory, ports: tuple[int, int]) -> None:
    for address in ("127.0.20.10", "127.0.20.11"):
        await both_ports(fake_slave_factory, address, ports)
    drained = await both_ports(fake_slave_factory, "127.0.20.12", ports)
    node = await both_ports(fake_slave_factory, "127.0.20.13", ports)
    bus = Bus()
    events = listen(bus, SlaveReady, SlaveLost)
    async with running(SlaveHealth(config=make_config(ports), bus=bus)):
        for n, address in enumerate(["127.0.20.10", "127.0.20.11", "127.0.20.12"]):
            bus.publish(up(n, address))
        bus.publish(up(3, "127.0.20.13", role=Role.NODE))  # batch nodes are not render slaves
        assert sorted(ready_ids(await drain(events, 1.0))) == ["i-0000", "i-0001", "i-0002"]

        bus.publish(down(0, "127.0.20.10", LostReason.INTERRUPTED))
        lost = await next_of(events, SlaveLost)
        assert (lost.instance_id, lost.reason) == ("i-0000", LostReason.INTERRUPTED)

        bus.publish(
            DrainSlave(
                at=0.0,
                instance_id=InstanceId("i-0002"),
                address="127.0.20.12",
                reason=LostReason.SCALE_IN,
            )
        )
        hits = drained[0].hits
        assert await drain(events, 2 * POLL) == []  # the writer handles drains
        assert drained[0].hits == hits
        # A drained slave that goes away later was not listed any more: nothing to report.
        bus.publish(down(2, "127.0.20.12", LostReason.SCALE_IN))
        assert await drain(events, 1.0) == []
    assert node[0].hits == 0


@looptime
async def test_a_slave_gone_while_its_probe_was_in_flight_is_never_announced() -> None:
    port = free_port("127.0.20.1")
    slow = SlowSlaves(delay=1.5)  # answers 403, but late
    bus = Bus()
    events = listen(bus, SlaveReady, SlaveLost)
    try:
        await slow.serve("127.0.20.10", port)
        async with running(SlaveHealth(config=make_config((port,)), bus=bus)):
            bus.publish(up(1, "127.0.20.10"))
            await asyncio.sleep(0.5)
            assert slow.in_flight == 1
            bus.publish(down(1, "127.0.20.10", LostReason.TERMINATED))
            assert await drain(events, 5.0) == []
    finally:
        await slow.close()


class SlowSlaves:
    """Slaves on many addresses that answer 403 after `delay`, counting requests in flight."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.in_flight = 0
        self.max_in_flight = 0
        self.runners: list[web.AppRunner] = []

    async def _answer(self, request: web.Request) -> web.Response:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay)
        finally:
            self.in_flight -= 1
        return web.Response(status=403)

    async def serve(self, address: str, port: int) -> None:
        app = web.Application()
        app.router.add_get("/", self._answer)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await runner.setup()
        self.runners.append(runner)
        await web.TCPSite(runner, address, port).start()

    async def close(self) -> None:
        for runner in self.runners:
            await runner.cleanup()


@looptime
async def test_probes_run_concurrently_but_within_the_bound() -> None:
    port = free_port("127.0.20.1")
    slow = SlowSlaves(delay=0.05)
    bus = Bus()
    events = listen(bus, SlaveReady)
    try:
        for n in range(20):
            await slow.serve(f"127.0.20.{100 + n}", port)
        async with running(SlaveHealth(config=make_config((port,)), bus=bus, concurrency=4)):
            for n in range(20):
                bus.publish(up(n, f"127.0.20.{100 + n}"))
            got = await drain(events, 1.0)
    finally:
        await slow.close()
    assert len(ready_ids(got)) == 20
    assert slow.max_in_flight == 4


def test_the_schedule_of_one_slave() -> None:
    """The pure rule: booting every SAMPLE, ready every POLL, a failure rechecked, then lost."""
    cadence = Cadence(booting=SAMPLE, ready=POLL, recheck=RECHECK, failures_to_lose=2)
    slave = _Slave(address="127.0.20.10")
    assert after_probe(slave, "refused", 0.0, 0.0, cadence) is None
    assert slave.due == SAMPLE
    assert after_probe(slave, None, 1.0, 1.0, cadence) is Outcome.READY
    assert slave.due == 1.0 + POLL
    assert after_probe(slave, None, 31.0, 31.0, cadence) is None
    assert after_probe(slave, "timeout", 61.0, 61.0 + TIMEOUT, cadence) is Outcome.FAILED
    assert slave.due == 61.0 + TIMEOUT + RECHECK
    assert after_probe(slave, None, 63.5, 63.5, cadence) is None  # forgiven
    assert slave.due == 63.5 + POLL and slave.failures == 0
    assert after_probe(slave, "refused", 93.5, 93.5, cadence) is Outcome.FAILED
    assert after_probe(slave, "refused", 94.0, 94.0, cadence) is Outcome.LOST


def ready_ids(messages: list[object]) -> list[str]:
    assert all(isinstance(m, SlaveReady) for m in messages), messages
    return [m.instance_id for m in messages]
