"""SlaveHealth against real HTTP servers on 127.0.20.x (the addresses moto gives instances).

Most tests drive one probe cycle at a time (`probe_cycle()`), so "after two failed cycles" is
exact; one test runs the actor's own loop under the Runtime.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from aiohttp import web

from actors.slave_health import SlaveHealth
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
from controller.runtime.bus import Bus, Mailbox
from tests.actor_runner import listen, next_of, running
from tests.harness.fake_slave import FakeSlave
from tests.harness.net import free_port

Factory = Callable[..., Awaitable[FakeSlave]]


@pytest.fixture
def ports() -> tuple[int, int]:
    return free_port("127.0.20.1"), free_port("127.0.20.1")


def make_config(ports: tuple[int, ...], probe_timeout: float = 1.0) -> Config:
    return Config(
        master=MasterSection(poll_interval=0.2),
        scaling=ScalingSection(probe_timeout=probe_timeout),
        slave=SlaveSection(ports=ports),
    )


def up(n: int, address: str, role: Role = Role.SLAVE) -> InstanceUp:
    return InstanceUp(at=0.0, instance_id=InstanceId(f"i-{n:04}"), address=address, role=role)


async def published(mailbox: Mailbox) -> list[object]:
    """What was published so far (probe_cycle() publishes before it returns)."""
    items = []
    while len(mailbox):
        items.append(await mailbox.get())
    return items


@pytest.fixture
def bus() -> Bus:
    return Bus()


@pytest.fixture
def events(bus: Bus) -> Mailbox:
    return listen(bus, SlaveReady, SlaveLost)


@pytest.fixture
async def health(bus: Bus, ports: tuple[int, int]):
    actor = SlaveHealth(config=make_config(ports), bus=bus)
    await actor.setup()
    try:
        yield actor
    finally:
        await actor.stop()


async def both_ports(factory: Factory, address: str, ports: tuple[int, int], status=403):
    return [await factory(address, port, status) for port in ports]


async def test_probes_of_not_yet_ready_slaves_go_on_until_they_pass(
    health: SlaveHealth, events: Mailbox, fake_slave_factory: Factory, ports: tuple[int, int]
) -> None:
    a = await both_ports(fake_slave_factory, "127.0.20.10", ports)
    b = await both_ports(fake_slave_factory, "127.0.20.11", ports)
    b[1].set_status(200)  # a web server, not a render slave
    c = await fake_slave_factory("127.0.20.12", ports[0])  # the second port is closed
    # 127.0.20.13: nothing listens at all (still booting).
    for n, address in enumerate(["127.0.20.10", "127.0.20.11", "127.0.20.12", "127.0.20.13"]):
        health.handle(up(n, address))

    await health.probe_cycle()
    assert ready_ids(await published(events)) == ["i-0000"]

    b[1].set_status(403)
    await fake_slave_factory("127.0.20.12", ports[1])
    await health.probe_cycle()
    assert sorted(ready_ids(await published(events))) == ["i-0001", "i-0002"]

    await both_ports(fake_slave_factory, "127.0.20.13", ports)
    await health.probe_cycle()
    assert ready_ids(await published(events)) == ["i-0003"]  # each announced once
    assert a[0].hits == 3 and c.hits == 3  # ready ones are still probed every cycle


async def test_a_ready_slave_is_lost_after_two_failed_cycles_and_no_longer_probed(
    health: SlaveHealth, events: Mailbox, fake_slave_factory: Factory, ports: tuple[int, int]
) -> None:
    slave = await both_ports(fake_slave_factory, "127.0.20.10", ports)
    health.handle(up(1, "127.0.20.10"))
    await health.probe_cycle()
    assert ready_ids(await published(events)) == ["i-0001"]

    await slave[1].stop()  # one port stops answering: connection refused
    await health.probe_cycle()
    assert await published(events) == []
    await health.probe_cycle()
    [lost] = await published(events)
    assert isinstance(lost, SlaveLost)
    assert (lost.instance_id, lost.address, lost.reason) == (
        "i-0001",
        "127.0.20.10",
        LostReason.UNREACHABLE,
    )

    await slave[1].start()
    hits = slave[0].hits
    await health.probe_cycle()
    assert await published(events) == []  # not re-listed: SpotPool replaces it
    assert slave[0].hits == hits


async def test_one_failed_cycle_is_forgiven(
    health: SlaveHealth, events: Mailbox, fake_slave_factory: Factory, ports: tuple[int, int]
) -> None:
    slave = await both_ports(fake_slave_factory, "127.0.20.10", ports)
    health.handle(up(1, "127.0.20.10"))
    await health.probe_cycle()
    await published(events)
    for status in (500, 403, 500, 403, 500):
        slave[0].set_status(status)
        await health.probe_cycle()
    assert await published(events) == []
    slave[0].set_status(502)
    await health.probe_cycle()
    assert [type(m) for m in await published(events)] == [SlaveLost]


async def test_instance_down_and_drain(
    health: SlaveHealth, events: Mailbox, fake_slave_factory: Factory, ports: tuple[int, int]
) -> None:
    for address in ("127.0.20.10", "127.0.20.11"):
        await both_ports(fake_slave_factory, address, ports)
    drained = await both_ports(fake_slave_factory, "127.0.20.12", ports)
    node = await both_ports(fake_slave_factory, "127.0.20.13", ports)
    for n, address in enumerate(["127.0.20.10", "127.0.20.11", "127.0.20.12"]):
        health.handle(up(n, address))
    health.handle(up(3, "127.0.20.13", role=Role.NODE))  # batch nodes are not render slaves
    await health.probe_cycle()
    assert sorted(ready_ids(await published(events))) == ["i-0000", "i-0001", "i-0002"]

    health.handle(
        InstanceDown(
            at=0.0,
            instance_id=InstanceId("i-0000"),
            address="127.0.20.10",
            reason=LostReason.INTERRUPTED,
        )
    )
    [lost] = await published(events)
    assert (lost.instance_id, lost.reason) == ("i-0000", LostReason.INTERRUPTED)

    health.handle(
        DrainSlave(
            at=0.0,
            instance_id=InstanceId("i-0002"),
            address="127.0.20.12",
            reason=LostReason.SCALE_IN,
        )
    )
    hits = drained[0].hits
    await health.probe_cycle()
    assert await published(events) == []  # the writer handles drains
    assert drained[0].hits == hits
    # A drained slave that goes away later was not listed any more: nothing to report.
    health.handle(
        InstanceDown(
            at=0.0,
            instance_id=InstanceId("i-0002"),
            address="127.0.20.12",
            reason=LostReason.SCALE_IN,
        )
    )
    assert await published(events) == []
    assert node[0].hits == 0


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


async def test_probes_run_concurrently_but_within_the_bound() -> None:
    port = free_port("127.0.20.1")
    slow = SlowSlaves(delay=0.05)
    bus = Bus()
    events = listen(bus, SlaveReady)
    health = SlaveHealth(config=make_config((port,)), bus=bus, concurrency=4)
    await health.setup()
    try:
        for n in range(20):
            await slow.serve(f"127.0.20.{100 + n}", port)
            health.handle(up(n, f"127.0.20.{100 + n}"))
        await health.probe_cycle()
    finally:
        await health.stop()
        await slow.close()
    assert len(ready_ids(await published(events))) == 20
    assert slow.max_in_flight == 4


async def test_a_slave_that_hangs_fails_by_the_probe_timeout(fake_slave_factory: Factory) -> None:
    port = free_port("127.0.20.1")
    slow = SlowSlaves(delay=0.0)
    bus = Bus()
    events = listen(bus, SlaveReady, SlaveLost)
    health = SlaveHealth(config=make_config((port,), probe_timeout=0.2), bus=bus)
    await health.setup()
    try:
        await slow.serve("127.0.20.10", port)
        health.handle(up(1, "127.0.20.10"))
        await health.probe_cycle()
        slow.delay = 30.0  # accepts, never answers in time
        await health.probe_cycle()
        await health.probe_cycle()
    finally:
        await health.stop()
        await slow.close()
    assert [type(m) for m in await published(events)] == [SlaveReady, SlaveLost]


async def test_the_actor_loop_lists_and_loses_slaves_on_its_own(
    fake_slave_factory: Factory, ports: tuple[int, int]
) -> None:
    slave = await both_ports(fake_slave_factory, "127.0.20.10", ports)
    bus = Bus()
    events = listen(bus, SlaveReady, SlaveLost)
    async with running(SlaveHealth(config=make_config(ports), bus=bus, interval=0.1)):
        bus.publish(up(1, "127.0.20.10"))
        ready = await next_of(events, SlaveReady)
        assert ready.address == "127.0.20.10"
        await slave[0].stop()
        lost = await next_of(events, SlaveLost)
        assert lost.reason is LostReason.UNREACHABLE
    assert await published(events) == []


def ready_ids(messages: list[object]) -> list[str]:
    assert all(isinstance(m, SlaveReady) for m in messages), messages
    return [m.instance_id for m in messages]
