"""LoadSampler against a real Apache httpd with mod_status (tests.harness.apache), in real time.

Polls are 0.3 s apart so the tests stay short; they wait for messages, never for a fixed time.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

from structlog.testing import capture_logs

from actors.load_sampler import LoadSampler
from controller.config.schema import Config, MasterSection
from controller.messages import LoadSample, SensorLost
from controller.runtime.bus import Bus, Mailbox
from tests.actor_runner import listen, next_of, running
from tests.harness.apache import Apache

POLL = 0.3


def make_config(url: str, **master) -> Config:
    master.setdefault("poll_interval", POLL)
    master.setdefault("window_seconds", 3.0)
    master.setdefault("status_timeout", 2.0)
    return Config(master=MasterSection(server_status_url=url, **master))


async def samples(mailbox: Mailbox, count: int) -> list[LoadSample]:
    return [await next_of(mailbox, LoadSample, within=10) for _ in range(count)]


async def test_an_idle_server_reads_zero(apache: Apache) -> None:
    bus = Bus()
    got = listen(bus, LoadSample)
    lost = listen(bus, SensorLost)
    async with running(LoadSampler(config=make_config(apache.status_url), bus=bus)):
        seen = await samples(got, 4)
    # Each poll is itself counted by Apache; the sampler takes its own fetches out.
    assert [s.rps for s in seen] == [0.0] * 4
    assert [s.window_rps for s in seen] == [0.0] * 4
    assert all(s.busy_workers is not None and s.busy_workers >= 1 for s in seen)
    assert await queued(lost) == []


async def test_load_from_ab_raises_the_rate(apache: Apache) -> None:
    bus = Bus()
    got = listen(bus, LoadSample)
    async with running(LoadSampler(config=make_config(apache.status_url), bus=bus)):
        await next_of(got, LoadSample, within=10)
        load = apache.drive_load_background(concurrency=4)
        try:
            busy = await _first(got, lambda s: s.rps > 20 and s.window_rps > 5)
        finally:
            load.stop()
        # Once ab is gone the last-interval rate falls back to zero.
        await _first(got, lambda s: s.rps == 0.0)
    assert busy.busy_workers is not None


async def test_a_stopped_server_is_a_lost_sensor_and_a_restart_brings_samples_back(
    apache: Apache,
) -> None:
    bus = Bus()
    got = listen(bus, LoadSample, SensorLost)
    sampler = LoadSampler(config=make_config(apache.status_url), bus=bus)
    with capture_logs() as logs:
        async with running(sampler) as runtime:
            await next_of(got, LoadSample, within=10)
            await asyncio.to_thread(apache.drive_load, 300, 4)  # a counter well above zero
            await next_of(got, LoadSample, within=10)
            apache.stop()
            lost = await next_of(got, SensorLost, within=10)
            again = await next_of(got, SensorLost, within=10)
            assert again.since == lost.since  # one outage, however many failed polls
            assert (
                "cannot connect to 127.0.0.1:" in lost.reason and "is Apache running" in lost.reason
            )
            assert runtime.states()["load_sampler"] == ("running", 0)

            apache.start()  # Total Accesses starts again from zero
            back = await next_of(got, LoadSample, within=10)
            more = await samples(got, 2)
    # The first good poll after the outage only re-baselines; then the idle server reads zero.
    assert [s.rps for s in (back, *more)] == [0.0] * 3
    events = [e["event"] for e in logs if e["event"].startswith("sensor.")]
    assert events.count("sensor.lost") == 1
    assert events.count("sensor.recovered") == 1


async def test_a_full_restart_of_apache_never_gives_a_negative_rate(apache: Apache) -> None:
    """SIGHUP restarts httpd in place: the listener stays, the counter goes back to zero."""
    bus = Bus()
    got = listen(bus, LoadSample, SensorLost)
    async with running(LoadSampler(config=make_config(apache.status_url), bus=bus)):
        await next_of(got, LoadSample, within=10)
        await asyncio.to_thread(apache.drive_load, 500, 4)
        before = apache.total_accesses()
        pid = int((apache.root / "run" / "httpd.pid").read_text())
        os.kill(pid, signal.SIGHUP)
        await _wait_for(lambda: apache_total_below(apache, before))
        seen = await samples(got, 4)
    assert all(s.rps >= 0.0 and s.window_rps >= 0.0 for s in seen)


async def test_an_error_page_or_a_garbled_body_is_a_lost_sensor(apache: Apache) -> None:
    cases = {
        apache.base_url
        + "/no-such-page": "HTTP 404 from server-status: check [master] server_status_url",
        apache.base_url + "/server-status": "garbled server-status page",  # HTML without ?auto
        "http://127.0.0.1:1/server-status?auto": "cannot connect to 127.0.0.1:1",
    }
    for url, reason in cases.items():
        bus = Bus()
        got = listen(bus, LoadSample, SensorLost)
        async with running(LoadSampler(config=make_config(url), bus=bus)):
            lost = await next_of(got, SensorLost)
        assert reason in lost.reason, (url, lost.reason)


async def test_a_server_that_never_answers_times_out(tmp_path: Path) -> None:
    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # never answers; ends when the client gives up
        writer.close()

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        bus = Bus()
        got = listen(bus, SensorLost)
        config = make_config(f"http://127.0.0.1:{port}/server-status?auto", status_timeout=0.2)
        async with running(LoadSampler(config=config, bus=bus)):
            lost = await next_of(got, SensorLost)
        assert "no answer within status_timeout=0.2s" in lost.reason
    finally:
        server.close()
        await server.wait_closed()


async def test_retries_back_off_up_to_the_poll_interval() -> None:
    bus = Bus()
    got = listen(bus, SensorLost)
    config = make_config("http://127.0.0.1:1/server-status?auto", poll_interval=4.0)
    sampler = LoadSampler(config=config, bus=bus)
    await sampler.setup()
    try:
        delays = [await sampler.poll_once() for _ in range(5)]
    finally:
        await sampler.stop()
    assert delays == [1.0, 2.0, 4.0, 4.0, 4.0]
    lost = await queued(got)
    assert len(lost) == 5
    assert len({m.since for m in lost}) == 1


async def queued(mailbox: Mailbox) -> list[object]:
    """What is waiting in the mailbox right now, without waiting for more."""
    items = []
    while len(mailbox):
        items.append(await mailbox.get())
    return items


async def _first(mailbox: Mailbox, predicate) -> LoadSample:
    """The first LoadSample that satisfies `predicate`, within 15 s."""
    async with asyncio.timeout(15):
        while True:
            sample = await next_of(mailbox, LoadSample, within=15)
            if predicate(sample):
                return sample


def apache_total_below(apache: Apache, value: int) -> bool:
    try:
        return apache.total_accesses() < value
    except OSError:
        return False


async def _wait_for(condition) -> None:
    """Poll a blocking `condition` (it asks Apache) for up to 10 s."""
    for _ in range(200):
        if await asyncio.to_thread(condition):
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met within 10s")


async def test_readings_come_every_sample_interval_whatever_the_poll(apache: Apache) -> None:
    bus = Bus()
    got = listen(bus, LoadSample)
    config = make_config(apache.status_url, poll_interval=30.0, sample_interval=0.2)
    async with running(LoadSampler(config=config, bus=bus)):
        first = await next_of(got, LoadSample, within=10)
        second = await next_of(got, LoadSample, within=10)
        # a burst is seen within a reading, not a 30 s poll later
        await asyncio.to_thread(apache.drive_load, 200, 4)
        burst = await _first(got, lambda s: s.rps > 20)
    assert second.at - first.at < 1.0
    assert burst.at - second.at < 10.0
