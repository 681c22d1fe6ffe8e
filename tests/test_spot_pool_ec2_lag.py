"""SpotPool where EC2 differs from moto: reads that lag launches, launches that fail on start,
and long fleet names. Driven like tests/test_spot_pool.py (looptime, SimCloud, exact times).

SimCloud's `visibility_lag` is EC2's eventual consistency: for that long after its launch an
instance is missing from DescribeInstances and TerminateInstances answers NotFound for it (the
instance runs on). tests/test_e2e_ec2_lag.py shows the same through the fault proxy and moto.
"""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs

from controller.cloud.port import CLIENT_TOKEN_MAX, launch_token
from controller.config.schema import LoadRow
from controller.messages import ErrorKind, LostReason
from controller.policy.fleet_plans import MAX_LAUNCH_CALLS
from tests.actor_runner import running
from tests.test_spot_pool import Farm, config, events, now, one, until

pytestmark = [pytest.mark.timeout(30)]
looptime = pytest.mark.looptime(end=5000)


@looptime
async def test_a_launch_ec2_does_not_show_yet_is_kept_and_not_launched_again() -> None:
    farm = Farm(config(), visibility_lag=25.0)
    farm.group_ready()
    farm.load(1.0)  # band [1, 3]
    async with running(farm.pool):
        await until(25)  # cycles at 0 (launch), 10 and 20 (not in the describe yet)
        launched = one(farm.live())
        assert launched.launched_at == 0
        assert await farm.downs() == []  # not taken for gone
        assert [d.launch for d in await farm.decisions()] == [1, 0, 0]  # counted, not replaced

        await until(35)  # visible at 25: the cycle at 30 sees it running
        assert await farm.ups() == [(0, launched.instance_id)]  # announced once, at launch
        assert one(farm.live()) is launched


@looptime
async def test_a_launch_short_of_its_count_is_asked_for_the_rest_in_the_same_cycle() -> None:
    # EC2 launches between MinCount (1) and MaxCount as capacity allows (moto: always 1).
    farm = Farm(config(), launch_limit=1)
    farm.group_ready()
    farm.load(3.0)  # band [3, 5]: three wanted at once
    async with running(farm.pool):
        await until(5)
        assert [i.launched_at for i in farm.live()] == [0, 0, 0]
        await until(15)
        assert len(farm.live()) == 3  # and nothing more next cycle


@looptime
async def test_the_calls_for_a_shortfall_are_bounded_per_cycle() -> None:
    rows = (LoadRow(rps=1.0, min_instances=12, max_instances=14),)
    farm = Farm(config(load_table={"rows": rows}), launch_limit=1)
    farm.group_ready()
    farm.load(1.0)  # twelve wanted, one per call
    async with running(farm.pool):
        await until(5)
        assert len(farm.live()) == MAX_LAUNCH_CALLS == 10
        await until(15)
        assert len(farm.live()) == 12  # the rest at the next cycle


@looptime
async def test_a_launch_never_seen_is_given_up_after_the_visibility_window() -> None:
    # An id RunInstances returned that no describe ever shows (VISIBILITY_SECONDS = 180): after
    # the window it is taken as gone, so the pool does not hold a phantom for ever.
    # on_exit = leave: a teardown could not end the phantom either, and would exit 1 for it
    farm = Farm(config(controller={"on_exit": "leave"}), visibility_lag=10_000.0)
    farm.group_ready()
    farm.load(1.0)
    async with running(farm.pool):
        await until(175)
        first = one(farm.live())
        assert await farm.downs() == []
        await until(185)
        assert await farm.downs() == [(180, first.instance_id, LostReason.TERMINATED)]
        assert len(farm.live()) == 2  # replaced (the phantom, really running here, stays billed)


@looptime
async def test_terminating_what_ec2_does_not_know_yet_is_asked_again_until_it_is_taken() -> None:
    farm = Farm(config(scaling={"scale_in_after": 0.0}), visibility_lag=25.0)
    farm.group_ready()
    farm.load(3.0)  # band [3, 5]: three launched at 0
    with capture_logs() as logs:
        async with running(farm.pool):
            await until(5)
            assert len(farm.live()) == 3
            farm.load(0.0)  # below the table's first row: scale in at the next cycle
            await until(22)
            # Removed at 10, but EC2 did not know them: they run on, and are asked again every
            # NOT_FOUND_RETRY_SECONDS (at 15 and 20), each time "not found".
            assert len(farm.live()) == 3
            assert len(events(logs, "instance.terminate_not_found_yet")) == 3 * 3
            await until(26)  # known from 25: the ask at 25 is taken
            assert farm.live() == []
            assert {i.ended_at for i in farm.launched()} == {25}


@looptime
async def test_an_instance_asked_to_end_that_still_runs_is_asked_again() -> None:
    # A describe showed it, then TerminateInstances answered NotFound (a lagging replica): taken
    # for terminating, but a minute later EC2 still shows it running, so it is asked again.
    farm = Farm(config(scaling={"scale_in_after": 0.0}))
    farm.group_ready()
    farm.load(1.0)
    with capture_logs() as logs:
        async with running(farm.pool):
            await until(15)  # launched at 0, seen running at 10
            victim = one(farm.live())
            farm.sim.terminate_not_found.add(victim.instance_id)
            farm.load(0.0)
            await until(25)  # removed at 20: asked, "not found", taken for terminating
            assert victim.ended_at is None
            farm.sim.terminate_not_found.clear()
            await until(75)
            assert victim.ended_at is None  # not before TERMINATE_RESEND_SECONDS
            await until(95)
            assert victim.ended_at == 80  # the cycle at 80 sees it alive 60 s on and asks again
            assert [e["instance_id"] for e in events(logs, "instance.terminate_again")] == [
                victim.instance_id
            ]


@looptime
async def test_stop_right_after_a_launch_terminates_what_ec2_does_not_show_yet() -> None:
    # SIGTERM seconds after RunInstances: the read shows nothing and TerminateInstances does not
    # know the instance; teardown must not report "nothing left" while it runs.
    farm = Farm(config(), visibility_lag=8.0)
    farm.group_ready()
    farm.load(2.0)
    with capture_logs() as logs:
        async with running(farm.pool, grace_seconds=300.0):
            await until(2)
            assert len(farm.live()) == 2
        assert now() >= 8.0  # it waited for EC2 to know them
    assert farm.live() == []
    (done,) = events(logs, "fleet.torn_down")
    assert done["report"] == "nothing left"


@looptime
async def test_an_instance_ended_on_our_side_pauses_its_type() -> None:
    # A launch EC2 ends while it starts for a reason of the launch's making (here a KMS key it
    # may not use): launching the same type again would fail the same way, every cycle.
    farm = Farm(config())
    farm.group_ready()
    farm.load(1.0)
    async with running(farm.pool):
        await until(5)
        failed = one(farm.live())
        assert failed.instance_type == "m5.large"
        farm.sim.end_now(failed.instance_id, "Client.InternalError")

        await until(15)
        assert (10, ErrorKind.INVALID, "RunInstances") in await farm.errors()
        replacement = farm.live()[-1]
        assert (replacement.instance_type, replacement.launched_at) == ("c5.large", 10)

        farm.sim.end_now(replacement.instance_id, "Client.UserInitiatedShutdown")  # by hand
        await until(25)
        again = farm.live()[-1]
        assert (again.instance_type, again.launched_at) == ("c5.large", 20)  # not paused


def test_a_launch_token_keeps_its_random_part_whole_for_the_longest_fleet_name() -> None:
    fleet = "f" * 63  # the longest fleet name the config accepts
    tokens = {launch_token(fleet) for _ in range(100)}
    assert len(tokens) == 100
    for token in tokens:
        assert len(token) <= CLIENT_TOKEN_MAX
        assert len(token.rsplit("-", 1)[1]) == 32


@looptime
async def test_a_long_fleet_name_still_launches_every_time() -> None:
    # SimCloud honours ClientToken as EC2 does: a reused token returns the first launch's
    # instances and launches nothing.
    farm = Farm(config(controller={"fleet": "f" * 63}))
    farm.group_ready()
    farm.load(1.0)
    async with running(farm.pool):
        await until(5)
        assert len(farm.sim.live()) == 1
        farm.load(2.0)
        await until(15)
        assert len(farm.sim.live()) == 2
