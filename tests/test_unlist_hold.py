"""A drained slave renderfarm.conf still lists is never terminated while the file cannot be
rewritten (a read-only or full directory): terminating it would leave GBrowse sending renders to
an ended instance's address, which EC2 may give to another. SpotPool holds it, draining, while
RenderfarmWriter says it cannot write; it goes once a rewrite drops it, when the writer falls
silent for UNLIST_GRACE, and at teardown (the money rule: the writer then reports the stale file).

SpotPool in fake loop time against SimCloud (tests/test_spot_pool.py's Farm), the test playing
the writer; and the real RenderfarmWriter on a real file whose directory goes away.
"""

from __future__ import annotations

from pathlib import Path

from structlog.testing import capture_logs

from actors.renderfarm_writer import RenderfarmWriter
from controller.messages import (
    FleetObserved,
    RenderfarmWriteFailed,
    RenderfarmWritten,
)
from controller.policy.fleet_plans import UNLIST_GRACE
from controller.runtime.bus import Bus
from tests.actor_runner import drain, listen, next_of, running
from tests.test_renderfarm_writer import EMPTY, lost, make_config, read, ready
from tests.test_spot_pool import (
    Farm,
    config,
    events,
    looptime,
    lose_a_ready_slave,
    scaled_in_at_110,
    until,
)

RETRY = 5.0  # RenderfarmWriter's retry_seconds: it says it failed again this often


async def writer_failing(farm: Farm, start: float, end: float) -> None:
    """Play a writer that cannot write from `start` to `end` (it says so at each retry)."""
    t = start
    while t < end:
        await until(t)
        farm.bus.publish(RenderfarmWriteFailed(at=t, error="Read-only file system"))
        t += RETRY


def state_of(observed: list[FleetObserved], instance_id: str) -> str:
    return next(m.state for m in observed[-1].members if m.instance_id == instance_id)


@looptime
async def test_a_drained_slave_is_held_while_the_file_cannot_be_written() -> None:
    """Drained at 110 (drain_seconds 30): without the hold it would go at 110 + 30 + grace."""
    farm = Farm(config())
    with capture_logs() as logs:
        async with running(farm.pool):
            slave = await scaled_in_at_110(farm)
            await writer_failing(farm, 116, 200)
            assert slave.ended_at is None, "terminated while renderfarm.conf still lists it"
            assert state_of(await farm.seen(FleetObserved), slave.instance_id) == "draining"
            # The directory is writable again: the rewrite drops it, and its whole drain delay
            # runs from there (not cut short by the grace it was held past).
            await until(202)
            farm.bus.publish(RenderfarmWritten(at=202, addresses=(), reloaded=True))
            await until(231)
            assert slave.ended_at is None
            await until(233)
            assert slave.ended_at == 232
            assert len(farm.launched()) == 1
    held = events(logs, "slave.held_listed")
    assert [e["instance_id"] for e in held] == [slave.instance_id], "said once"
    assert held[0]["log_level"] == "warning"


@looptime
async def test_a_held_lost_slave_is_replaced_and_counts_as_draining() -> None:
    farm = Farm(config())
    farm.group_ready()
    farm.load(1.0)
    async with running(farm.pool):
        dead, iid = await lose_a_ready_slave(farm)
        await writer_failing(farm, 26, 120)
        assert dead.ended_at is None
        assert state_of(await farm.seen(FleetObserved), iid) == "draining"
        # one replacement at 25, and only one: the held slave is outside the band
        assert [i.launched_at for i in farm.launched()] == [0, 25]
        await until(121)
        farm.bus.publish(RenderfarmWritten(at=121, addresses=(), reloaded=True))
        await until(122)
        assert dead.ended_at == 121  # a lost slave has no drain delay once unlisted


@looptime
async def test_a_writer_gone_silent_no_longer_holds_a_slave() -> None:
    """One failure said at 26, then nothing: held at 40 (25 + grace), gone at 55 (the failure
    is then older than the grace)."""
    farm = Farm(config())
    farm.group_ready()
    farm.load(1.0)
    async with running(farm.pool):
        dead, _ = await lose_a_ready_slave(farm)
        await writer_failing(farm, 26, 27)
        await until(25 + UNLIST_GRACE + 1)
        assert dead.ended_at is None
        await until(25 + 2 * UNLIST_GRACE + 1)
        assert dead.ended_at == 25 + 2 * UNLIST_GRACE


@looptime
async def test_teardown_ends_a_held_slave_anyway() -> None:
    farm = Farm(config())
    farm.group_ready()
    farm.load(1.0)
    async with running(farm.pool):
        dead, _ = await lose_a_ready_slave(farm)
        await writer_failing(farm, 26, 60)
        assert dead.ended_at is None
    assert dead.ended_at is not None
    assert farm.live() == []


# the writer's side


async def test_the_writer_says_each_failed_write_and_the_next_good_one(tmp_path: Path) -> None:
    """Failures go on the bus at each retry; the first write that works after them is said even
    when the file's bytes end up as they were (a slave added and lost meanwhile)."""
    real_dir = tmp_path / "gbrowse2"
    real_dir.mkdir()
    link = tmp_path / "conf.d"
    link.symlink_to(real_dir)
    config = make_config(tmp_path, renderfarm_conf=link / "renderfarm.conf", reload_command=())
    bus = Bus()
    said = listen(bus, RenderfarmWritten, RenderfarmWriteFailed)
    writer = RenderfarmWriter(config=config, bus=bus, settle_seconds=0.0, retry_seconds=0.2)
    async with running(writer):
        await next_of(said, RenderfarmWritten)
        link.unlink()
        link.symlink_to(tmp_path / "not-there")  # an unmounted volume: ENOENT
        bus.publish(ready(1, "127.0.20.10"))
        failed = [m for m in await drain(said, 0.7) if isinstance(m, RenderfarmWriteFailed)]
        assert len(failed) >= 2 and "No such file" in failed[0].error
        bus.publish(lost(1, "127.0.20.10"))
        await drain(said, 0.3)
        link.unlink()
        link.symlink_to(real_dir)
        back = await next_of(said, RenderfarmWritten)
        assert back.addresses == () and not back.reloaded
    assert read(real_dir / "renderfarm.conf") == EMPTY


async def test_a_teardown_that_cannot_empty_the_file_says_so_once_and_exits_1(
    tmp_path: Path,
) -> None:
    real_dir = tmp_path / "gbrowse2"
    real_dir.mkdir()
    link = tmp_path / "conf.d"
    link.symlink_to(real_dir)
    config = make_config(tmp_path, renderfarm_conf=link / "renderfarm.conf", reload_command=())
    writer = RenderfarmWriter(config=config, bus=Bus(), settle_seconds=0.0)
    await writer.setup()
    writer.apply(ready(1, "127.0.20.10"))
    assert await writer.flush()
    before = read(real_dir / "renderfarm.conf")
    link.unlink()
    link.symlink_to(tmp_path / "not-there")
    with capture_logs() as logs:
        await writer.stop()
    errors = [e for e in logs if e["log_level"] == "error"]
    assert [e["event"] for e in errors] == ["renderfarm.not_cleared"]
    assert errors[0]["still_listed"] == ["http://127.0.20.10:8101", "http://127.0.20.10:8102"]
    assert "controller teardown" in errors[0]["hint"]
    assert writer.stop_exit_code == 1
    assert read(real_dir / "renderfarm.conf") == before
