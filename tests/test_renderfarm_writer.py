"""RenderfarmWriter on a real file and a real reload command, driven through a real Bus.

The reload command appends a line to a file, so the tests count reloads exactly. The tests of
when a write happens run in fake loop time (looptime) without a reload command (a subprocess
takes real time, which looptime cannot wait for) and count RenderfarmWritten instead.
"""

from __future__ import annotations

import asyncio
import os
import resource
import signal
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from actors.renderfarm_writer import RenderfarmConfError, RenderfarmWriter
from controller.config.schema import Config, ControllerSection, MasterSection, SlaveSection
from controller.messages import (
    DrainSlave,
    InstanceDown,
    InstanceId,
    LostReason,
    RenderfarmWritten,
    SlaveLost,
    SlaveReady,
)
from controller.runtime.bus import Bus
from tests.actor_runner import drain, listen, next_of, running

EMPTY = "[GENERAL]\nrenderfarm = 0\nremote renderer =\n"
SETTLE = 0.2
HOLD = 2.0  # settle_seconds' default: changes within it after a write wait for its end

looptime = pytest.mark.looptime(end=1000)


def make_config(tmp_path: Path, *, reload_command=None, on_exit="teardown", **master) -> Config:
    reloads = tmp_path / "reloads"
    if reload_command is None:
        reload_command = ("sh", "-c", f"echo x >> {reloads}")
    return Config(
        controller=ControllerSection(on_exit=on_exit),
        master=MasterSection(
            renderfarm_conf=str(master.pop("renderfarm_conf", tmp_path / "renderfarm.conf")),
            reload_command=tuple(reload_command),
            poll_interval=1.0,
            **master,
        ),
        slave=SlaveSection(ports=(8101, 8102)),
    )


def read(path: str | Path) -> str:
    return Path(path).read_text()


def write(path: Path, text: str) -> None:
    path.write_text(text)


def exists(path: Path) -> bool:
    return path.exists()


def mtime(path: str) -> int:
    return os.stat(path).st_mtime_ns


def reload_count(tmp_path: Path) -> int:
    reloads = tmp_path / "reloads"
    return len(reloads.read_text().splitlines()) if reloads.exists() else 0


def now() -> float:
    return asyncio.get_running_loop().time()


def lost(n: int, address: str) -> SlaveLost:
    return SlaveLost(
        at=0.0, instance_id=InstanceId(f"i-{n:04}"), address=address, reason=LostReason.UNREACHABLE
    )


def ready(n: int, address: str) -> SlaveReady:
    return SlaveReady(at=0.0, instance_id=InstanceId(f"i-{n:04}"), address=address)


def writer_for(config: Config, bus: Bus, **kwargs) -> RenderfarmWriter:
    kwargs.setdefault("settle_seconds", SETTLE)
    kwargs.setdefault("adopt_seconds", 0.5)
    return RenderfarmWriter(config=config, bus=bus, **kwargs)


async def test_file_format_for_zero_one_and_two_slaves(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    conf = Path(config.master.renderfarm_conf)
    bus = Bus()
    written = listen(bus, RenderfarmWritten)
    async with running(writer_for(config, bus)):
        # No file at start: the empty form is written at once (and the reload ran).
        first = await next_of(written, RenderfarmWritten)
        assert first.addresses == ()
        assert read(conf) == EMPTY
        assert reload_count(tmp_path) == 1

        bus.publish(ready(1, "127.0.20.10"))
        one = await next_of(written, RenderfarmWritten)
        assert one.addresses == ("http://127.0.20.10:8101", "http://127.0.20.10:8102")
        assert one.reloaded and not one.dry_run
        assert read(conf) == (
            "[GENERAL]\n"
            "renderfarm = 1\n"
            "remote renderer =\n"
            "\thttp://127.0.20.10:8101\n"
            "\thttp://127.0.20.10:8102\n"
        )

        # 127.0.20.9 sorts before 127.0.20.10: addresses in numeric order, a stable file.
        bus.publish(ready(2, "127.0.20.9"))
        await next_of(written, RenderfarmWritten)
        assert read(conf) == (
            "[GENERAL]\n"
            "renderfarm = 1\n"
            "remote renderer =\n"
            "\thttp://127.0.20.9:8101\n"
            "\thttp://127.0.20.9:8102\n"
            "\thttp://127.0.20.10:8101\n"
            "\thttp://127.0.20.10:8102\n"
        )
        assert reload_count(tmp_path) == 3

        for msg in (
            SlaveLost(
                at=0.0,
                instance_id=InstanceId("i-0001"),
                address="127.0.20.10",
                reason=LostReason.UNREACHABLE,
            ),
            DrainSlave(
                at=0.0,
                instance_id=InstanceId("i-0002"),
                address="127.0.20.9",
                reason=LostReason.SCALE_IN,
            ),
        ):
            bus.publish(msg)
            await next_of(written, RenderfarmWritten)
        assert read(conf) == EMPTY
        assert reload_count(tmp_path) == 5


async def test_a_burst_is_coalesced_into_one_write_and_one_reload(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    bus = Bus()
    written = listen(bus, RenderfarmWritten)
    async with running(writer_for(config, bus)):
        await next_of(written, RenderfarmWritten)  # the initial empty form
        for n in range(10):
            bus.publish(ready(n, f"127.0.20.{10 + n}"))
        bus.publish(
            InstanceDown(
                at=0.0,
                instance_id=InstanceId("i-0009"),
                address="127.0.20.19",
                reason=LostReason.TERMINATED,
            )
        )
        msgs = await drain(written, SETTLE * 5)
        assert len(msgs) == 1
        assert len(msgs[0].addresses) == 9 * 2
        assert reload_count(tmp_path) == 2


async def test_nothing_is_written_or_reloaded_when_the_set_did_not_change(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    bus = Bus()
    written = listen(bus, RenderfarmWritten)
    async with running(writer_for(config, bus)):
        await next_of(written, RenderfarmWritten)
        bus.publish(ready(1, "127.0.20.10"))
        await next_of(written, RenderfarmWritten)
        before = mtime(config.master.renderfarm_conf)
        bus.publish(ready(1, "127.0.20.10"))  # announced twice
        # Listed and gone again within one settle period: the file ends as it was.
        bus.publish(ready(2, "127.0.20.11"))
        bus.publish(
            SlaveLost(
                at=0.0,
                instance_id=InstanceId("i-0002"),
                address="127.0.20.11",
                reason=LostReason.UNREACHABLE,
            )
        )
        assert await drain(written, SETTLE * 5) == []
        assert reload_count(tmp_path) == 2
        assert mtime(config.master.renderfarm_conf) == before


async def test_a_slave_that_left_is_not_listed_by_a_late_ready(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    bus = Bus()
    written = listen(bus, RenderfarmWritten)
    async with running(writer_for(config, bus)):
        await next_of(written, RenderfarmWritten)
        # The drain crossed a probe cycle's SlaveReady on the bus.
        bus.publish(
            DrainSlave(
                at=0.0,
                instance_id=InstanceId("i-0001"),
                address="127.0.20.10",
                reason=LostReason.SCALE_IN,
            )
        )
        bus.publish(ready(1, "127.0.20.10"))
        assert await drain(written, SETTLE * 4) == []
        assert read(config.master.renderfarm_conf) == EMPTY


async def test_stop_writes_the_empty_form_and_reloads(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    bus = Bus()
    written = listen(bus, RenderfarmWritten)
    async with running(writer_for(config, bus)):
        await next_of(written, RenderfarmWritten)
        bus.publish(ready(1, "127.0.20.10"))
        await next_of(written, RenderfarmWritten)
        assert "renderfarm = 1" in read(config.master.renderfarm_conf)
    last = await next_of(written, RenderfarmWritten)
    assert last.addresses == () and last.reloaded
    assert read(config.master.renderfarm_conf) == EMPTY
    assert reload_count(tmp_path) == 3


async def test_on_exit_leave_keeps_the_file_for_the_next_start(tmp_path: Path) -> None:
    config = make_config(tmp_path, on_exit="leave")
    bus = Bus()
    written = listen(bus, RenderfarmWritten)
    async with running(writer_for(config, bus)):
        await next_of(written, RenderfarmWritten)
        bus.publish(ready(1, "127.0.20.10"))
        await next_of(written, RenderfarmWritten)
    assert "\thttp://127.0.20.10:8101\n" in read(config.master.renderfarm_conf)
    assert reload_count(tmp_path) == 2


async def test_an_existing_file_is_adopted_then_rewritten_from_what_was_probed(
    tmp_path: Path,
) -> None:
    config = make_config(tmp_path)
    conf = Path(config.master.renderfarm_conf)
    old = "[GENERAL]\nrenderfarm = 1\nremote renderer =\n\thttp://127.0.20.50:8101\n"
    write(conf, old)
    bus = Bus()
    written = listen(bus, RenderfarmWritten)
    async with running(writer_for(config, bus, adopt_seconds=1.0)):
        assert read(conf) == old  # kept while the slaves are being probed
        # No slave came back within adopt_seconds: the stale one is dropped.
        msg = await next_of(written, RenderfarmWritten, within=5)
        assert msg.addresses == ()
        assert read(conf) == EMPTY
        assert reload_count(tmp_path) == 1


async def test_dry_run_writes_nothing_and_runs_no_reload(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    conf = Path(config.master.renderfarm_conf)
    bus = Bus()
    written = listen(bus, RenderfarmWritten)
    with capture_logs() as logs:
        async with running(writer_for(config, bus, dry_run=True)):
            first = await next_of(written, RenderfarmWritten)
            assert first.dry_run and not first.reloaded
            bus.publish(ready(1, "127.0.20.10"))
            msg = await next_of(written, RenderfarmWritten)
            assert msg.dry_run and not msg.reloaded
            assert msg.addresses == ("http://127.0.20.10:8101", "http://127.0.20.10:8102")
    assert not exists(conf)
    assert reload_count(tmp_path) == 0
    would_write = [e for e in logs if e["event"] == "dry_run.would_write"]
    assert would_write[1]["added"] == ["http://127.0.20.10:8101", "http://127.0.20.10:8102"]
    assert any(e["event"] == "dry_run.would_reload" for e in logs)


async def test_a_failing_reload_is_logged_and_the_writer_goes_on(tmp_path: Path) -> None:
    config = make_config(tmp_path, reload_command=("sh", "-c", "echo no apache here; exit 3"))
    bus = Bus()
    written = listen(bus, RenderfarmWritten)
    with capture_logs() as logs:
        async with running(writer_for(config, bus)):
            assert not (await next_of(written, RenderfarmWritten)).reloaded
            bus.publish(ready(1, "127.0.20.10"))
            msg = await next_of(written, RenderfarmWritten)
            assert not msg.reloaded
            assert "127.0.20.10:8101" in read(config.master.renderfarm_conf)
    failures = [e for e in logs if e["event"] == "renderfarm.reload_failed"]
    assert failures[0]["exit_code"] == 3
    assert failures[0]["command"] == ["sh", "-c", "echo no apache here; exit 3"]
    assert failures[0]["output"] == "no apache here"


async def test_a_missing_reload_binary_is_logged_not_fatal(tmp_path: Path) -> None:
    config = make_config(tmp_path, reload_command=(str(tmp_path / "no-such-apache2ctl"),))
    bus = Bus()
    written = listen(bus, RenderfarmWritten)
    with capture_logs() as logs:
        async with running(writer_for(config, bus)):
            assert not (await next_of(written, RenderfarmWritten)).reloaded
    assert any(e["event"] == "renderfarm.reload_failed" for e in logs)


async def test_an_unwritable_directory_fails_startup_with_a_clear_reason(tmp_path: Path) -> None:
    config = make_config(tmp_path, renderfarm_conf=tmp_path / "missing" / "renderfarm.conf")
    writer = writer_for(config, Bus())
    with pytest.raises(RenderfarmConfError, match=r"renderfarm_conf.*missing"):
        await writer.setup()


async def test_a_failed_write_leaves_the_old_file_whole(tmp_path: Path) -> None:
    """The write fails half way (the file size limit), as on a full disk."""
    config = make_config(tmp_path)
    conf = Path(config.master.renderfarm_conf)
    writer = writer_for(config, Bus())
    await writer.setup()
    assert read(conf) == EMPTY
    for n in range(20):
        writer.apply(ready(n, f"127.0.20.{100 + n}"))
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    with capture_logs() as logs:
        resource.setrlimit(resource.RLIMIT_FSIZE, (len(EMPTY) + 40, hard))
        try:
            ok = await writer.flush()  # no await point before the failure: nothing else writes
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
            signal.signal(signal.SIGXFSZ, previous)
    assert not ok
    assert read(conf) == EMPTY
    assert sorted(os.listdir(tmp_path)) == ["reloads", "renderfarm.conf"]
    assert [e["event"] for e in logs] == ["renderfarm.write_failed"]
    assert reload_count(tmp_path) == 1
    # The next attempt, with room again, writes the whole file.
    assert await writer.flush()
    assert read(conf).count("\thttp://") == 40


async def test_a_failed_write_is_retried_and_the_actor_stays_up(tmp_path: Path) -> None:
    real_dir = tmp_path / "gbrowse2"
    real_dir.mkdir()
    link = tmp_path / "conf.d"
    link.symlink_to(real_dir)
    config = make_config(tmp_path, renderfarm_conf=link / "renderfarm.conf")
    bus = Bus()
    written = listen(bus, RenderfarmWritten)
    writer = writer_for(config, bus, retry_seconds=0.3)
    async with running(writer):
        await next_of(written, RenderfarmWritten)
        # The directory vanishes (an unmounted volume): writes fail with ENOENT.
        link.unlink()
        link.symlink_to(tmp_path / "not-there")
        bus.publish(ready(1, "127.0.20.10"))
        assert await drain(written, SETTLE * 4) == []
        link.unlink()
        link.symlink_to(real_dir)
        msg = await next_of(written, RenderfarmWritten)
        assert msg.addresses == ("http://127.0.20.10:8101", "http://127.0.20.10:8102")
        assert "127.0.20.10:8101" in read(real_dir / "renderfarm.conf")
    assert reload_count(tmp_path) == 3  # start, the retried write, the stop


# when: at once after a quiet hold, coalesced within it, removals at once


@looptime
async def test_a_lone_change_is_written_at_once(tmp_path: Path) -> None:
    config = make_config(tmp_path, reload_command=())
    bus = Bus()
    written = listen(bus, RenderfarmWritten)
    async with running(RenderfarmWriter(config=config, bus=bus)):
        await next_of(written, RenderfarmWritten)  # the initial empty form
        await asyncio.sleep(10.0)  # quiet
        changed = now()
        bus.publish(ready(1, "127.0.20.10"))
        msg = await next_of(written, RenderfarmWritten)
        assert msg.at == changed
        assert msg.addresses == ("http://127.0.20.10:8101", "http://127.0.20.10:8102")


@looptime
async def test_five_slaves_ready_close_together_take_two_writes_the_first_at_once(
    tmp_path: Path,
) -> None:
    config = make_config(tmp_path, reload_command=())
    bus = Bus()
    written = listen(bus, RenderfarmWritten)
    async with running(RenderfarmWriter(config=config, bus=bus)):
        await next_of(written, RenderfarmWritten)
        await asyncio.sleep(10.0)
        first = now()
        for n in range(5):  # announced 0.3 s apart, as probes on their own phases find them
            bus.publish(ready(n, f"127.0.20.{10 + n}"))
            await asyncio.sleep(0.3)
        msgs = await drain(written, 10.0)
    assert [len(m.addresses) // 2 for m in msgs] == [1, 5]
    assert [m.at - first for m in msgs] == pytest.approx([0.0, HOLD])


@looptime
async def test_a_removal_is_written_at_once_even_within_the_hold(tmp_path: Path) -> None:
    config = make_config(tmp_path, reload_command=())
    bus = Bus()
    written = listen(bus, RenderfarmWritten)
    async with running(RenderfarmWriter(config=config, bus=bus)):
        await next_of(written, RenderfarmWritten)
        await asyncio.sleep(10.0)
        bus.publish(ready(1, "127.0.20.10"))
        bus.publish(ready(2, "127.0.20.11"))  # the same instant: one write
        both = await next_of(written, RenderfarmWritten)
        assert len(both.addresses) == 4
        await asyncio.sleep(0.5)
        bus.publish(ready(3, "127.0.20.12"))  # within the hold: waits for its end...
        await asyncio.sleep(0.2)
        removed = now()
        bus.publish(lost(1, "127.0.20.10"))  # ...unless a removal takes it along at once
        msg = await next_of(written, RenderfarmWritten)
        assert msg.at == removed
        assert msg.addresses == tuple(
            f"http://127.0.20.{a}:{p}" for a in (11, 12) for p in (8101, 8102)
        )
        drained = now()
        bus.publish(
            DrainSlave(
                at=0.0,
                instance_id=InstanceId("i-0002"),
                address="127.0.20.11",
                reason=LostReason.SCALE_IN,
            )
        )
        msg = await next_of(written, RenderfarmWritten)
        assert msg.at == drained
        assert msg.addresses == ("http://127.0.20.12:8101", "http://127.0.20.12:8102")
        assert await drain(written, 2 * HOLD) == []


@looptime
async def test_an_adopted_file_is_rewritten_as_soon_as_every_slave_it_lists_is_back(
    tmp_path: Path,
) -> None:
    config = make_config(tmp_path, reload_command=())
    conf = Path(config.master.renderfarm_conf)
    old = (
        "[GENERAL]\nrenderfarm = 1\nremote renderer =\n"
        "\thttp://127.0.20.10:8101\n\thttp://127.0.20.10:8102\n"
        "\thttp://127.0.20.11:8101\n\thttp://127.0.20.11:8102\n"
        "\thttp://127.0.20.12:8101\n\thttp://127.0.20.12:8102\n"
    )
    write(conf, old)
    bus = Bus()
    written = listen(bus, RenderfarmWritten)
    async with running(RenderfarmWriter(config=config, bus=bus, adopt_seconds=60.0)):
        start = now()
        bus.publish(ready(1, "127.0.20.10"))
        await asyncio.sleep(0.4)
        bus.publish(ready(3, "127.0.20.13"))  # a new one: listed with the rest
        assert await drain(written, 0.4) == []
        assert read(conf) == old  # not yet: 127.0.20.11 and .12 were not probed again
        bus.publish(
            InstanceDown(
                at=0.0,
                instance_id=InstanceId("i-0002"),
                address="127.0.20.11",
                reason=LostReason.TERMINATED,
            )
        )
        back = now()
        bus.publish(ready(4, "127.0.20.12"))  # the last one back (or gone): written at once
        msg = await next_of(written, RenderfarmWritten)
        assert msg.at == back and msg.at - start < 60.0
        assert msg.addresses == tuple(
            f"http://127.0.20.{a}:{p}" for a in (10, 12, 13) for p in (8101, 8102)
        )


async def test_a_file_someone_else_changed_or_removed_is_written_again(tmp_path: Path) -> None:
    """Another controller given the same renderfarm_conf emptied it (its teardown), then someone
    removed it: within a check each time, the file lists the probed slaves again, reloaded (real
    time: the reload is a real command)."""
    config = make_config(tmp_path)
    bus = Bus()
    written = listen(bus, RenderfarmWritten)
    path = Path(config.master.renderfarm_conf)
    with capture_logs() as logs:
        async with running(writer_for(config, bus, check_seconds=0.2)):
            await next_of(written, RenderfarmWritten)  # the initial empty form
            bus.publish(ready(1, "127.0.20.10"))
            ours = await next_of(written, RenderfarmWritten)
            reloads = reload_count(tmp_path)
            await asyncio.sleep(1.0)  # five checks
            assert reload_count(tmp_path) == reloads  # a file left alone is not rewritten

            path.write_text("[GENERAL]\nrenderfarm = 0\nremote renderer =\n")
            again = await next_of(written, RenderfarmWritten, within=3.0)
            assert again.addresses == ours.addresses and again.reloaded
            path.unlink()
            await next_of(written, RenderfarmWritten, within=3.0)
            assert "http://127.0.20.10:8101" in read(path)
            assert reload_count(tmp_path) == reloads + 2
    assert [e["event"] for e in logs].count("renderfarm.changed_elsewhere") == 2


@looptime
async def test_a_dry_run_never_looks_back_at_the_file(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    path = Path(config.master.renderfarm_conf)
    path.write_text("[GENERAL]\nrenderfarm = 0\nremote renderer =\n")
    with capture_logs() as logs:
        async with running(writer_for(config, Bus(), dry_run=True)):
            await asyncio.sleep(5.0)
            path.write_text("someone else's\n")
            await asyncio.sleep(5.0)
    assert "renderfarm.changed_elsewhere" not in [e["event"] for e in logs]
    assert read(path) == "someone else's\n"
