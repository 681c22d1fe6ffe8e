"""Replacing slaves launched from an older spec: the pure rules of controller.policy.refresh_plans.

Which old slave goes next, when it may be retired, and how a scale-in's picks are turned to old
slaves first, on plain values; and the spec tag itself (controller.cloud.port.launch_digest).
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from controller.cloud.ec2_shapes import launch_params, parse_instance
from controller.cloud.port import SPEC_TAG, LaunchSpec, launch_digest
from controller.messages import Role
from controller.policy.refresh_plans import Slave, next_to_replace, old_first, retire_now


def slave(iid: str, at: float, *, ready: bool = True, old: bool = False, leaving=False) -> Slave:
    return Slave(instance_id=iid, launched_at=at, ready=ready, leaving=leaving, old=old)


def serving_after(slaves: list[Slave], removed: tuple[str, ...]) -> int:
    return sum(s.serving for s in slaves if s.instance_id not in removed)


# the tag


def test_the_spec_tag_follows_image_snapshots_and_user_data_only() -> None:
    base = launch_digest("ami-1", ("snap-a", "snap-b"), "#!/bin/sh\n")
    assert len(base) == 12 and int(base, 16) >= 0
    assert launch_digest("ami-1", ("snap-a", "snap-b"), "#!/bin/sh\n") == base
    assert launch_digest("ami-2", ("snap-a", "snap-b"), "#!/bin/sh\n") != base
    assert launch_digest("ami-1", ("snap-a", "snap-c"), "#!/bin/sh\n") != base
    assert launch_digest("ami-1", ("snap-b", "snap-a"), "#!/bin/sh\n") != base  # device order
    assert launch_digest("ami-1", ("snap-a",), "#!/bin/sh\n") != base
    assert launch_digest("ami-1", ("snap-a", "snap-b"), "#!/bin/bash\n") != base
    # a snapshot id is never confused with user data
    assert launch_digest("ami-1", ("x",), "") != launch_digest("ami-1", (), "x")


def test_ec2_launches_carry_the_tag_and_describes_read_it_back() -> None:
    spec = LaunchSpec(
        fleet="f",
        role=Role.SLAVE,
        image_id="ami-1",
        instance_type="m5.large",
        count=1,
        client_token="t",
        snapshots=("snap-a",),
        user_data="#!/bin/sh\n",
    )
    digest = launch_digest("ami-1", ("snap-a",), "#!/bin/sh\n")
    for kind in launch_params(spec)["TagSpecifications"]:
        assert {"Key": SPEC_TAG, "Value": digest} in kind["Tags"]
    item = {"InstanceId": "i-1", "State": {"Name": "running"}}
    tagged = {**item, "Tags": [{"Key": SPEC_TAG, "Value": "abc"}]}
    assert parse_instance(tagged).spec == "abc"
    assert parse_instance(item).spec == ""  # launched before the tag: counts as current
    assert parse_instance(item, spec=digest).spec == digest  # RunInstances' answer, untagged


# which one next


def test_the_old_slave_launched_first_is_replaced_first() -> None:
    slaves = [
        slave("i-new", 50.0),
        slave("i-b", 20.0, old=True),
        slave("i-a", 10.0, old=True, ready=False),  # adopted after a restart, not probed yet
    ]
    chosen = next_to_replace(slaves)
    assert chosen is not None and chosen.instance_id == "i-a"
    assert next_to_replace([slave("i-new", 50.0), slave("i-c", 1.0)]) is None  # none is old
    # the one before is still leaving (draining, terminating): the next one waits for it
    leaving = slave("i-x", 1.0, leaving=True, old=True)
    assert next_to_replace([*slaves, leaving]) is None


# when it is retired


def test_it_is_retired_once_its_replacement_serves() -> None:
    old_a, old_b = slave("i-a", 10.0, old=True), slave("i-b", 20.0, old=True)
    booting = slave("i-r", 100.0, ready=False)
    # floor 2: without i-a only i-b serves while the replacement boots
    assert retire_now([old_a, old_b, booting], (), floor=2) is None
    ready = slave("i-r", 100.0)
    assert retire_now([old_a, old_b, ready], (), floor=2) == old_a


def test_a_surplus_retires_it_at_once_and_a_booting_old_one_waits_like_the_rest() -> None:
    fleet = [slave("i-a", 10.0, old=True), slave("i-b", 20.0), slave("i-c", 30.0)]
    assert retire_now(fleet, (), floor=2) == fleet[0]
    not_probed = [slave("i-a", 10.0, old=True, ready=False), slave("i-b", 20.0, ready=False)]
    assert retire_now(not_probed, (), floor=1) is None  # nothing known to serve yet


def test_one_old_slave_at_a_time() -> None:
    fleet = [slave(f"i-{n}", float(n), old=True) for n in range(4)] + [slave("i-r", 99.0)]
    # the scale-in takes an old one this cycle: no retirement besides it
    assert retire_now(fleet, ("i-0",), floor=1) is None
    # it takes a current one: the retirement counts what is left
    assert retire_now(fleet, ("i-r",), floor=3) == fleet[0]
    assert retire_now(fleet, ("i-r",), floor=4) is None


# a scale-in in the meantime


def test_the_slave_being_replaced_is_no_surplus_while_its_replacement_boots() -> None:
    fleet = [
        slave("i-a", 10.0, old=True),
        slave("i-b", 20.0, old=True),
        slave("i-c", 30.0, old=True),
        slave("i-r", 100.0, ready=False),  # i-a's replacement
    ]
    # The policy saw i-a as going away and takes it for the surplus: held back.
    assert old_first(("i-a",), fleet, floor=3) == ()
    # A real scale-in (desired 2) removes old ones first, as far as the floor allows.
    assert old_first(("i-a", "i-r"), fleet, floor=2) == ("i-a", "i-r")
    assert serving_after(fleet, ("i-a", "i-r")) == 2


def test_current_picks_are_swapped_for_old_ones() -> None:
    fleet = [
        slave("i-a", 10.0, old=True),
        slave("i-b", 20.0, old=True, ready=False),
        slave("i-c", 30.0),
        slave("i-d", 40.0),
    ]
    # the policy takes the youngest current ones; old ones go instead, the booting one first
    assert old_first(("i-d", "i-c"), fleet, floor=1) == ("i-b", "i-a")
    # a serving current pick swapped for a booting old one leaves more serving: always made
    assert old_first(("i-d",), fleet, floor=3) == ("i-b",)
    # a swap that would take one more serving slave than the policy's pick waits for the floor
    booting_new = [*fleet[:1], slave("i-n", 50.0, ready=False), fleet[2]]
    assert old_first(("i-n",), booting_new, floor=2) == ("i-n",)
    assert old_first(("i-n",), booting_new, floor=1) == ("i-a",)


def test_interrupted_picks_stay_and_nothing_old_changes_nothing() -> None:
    fleet = [
        slave("i-a", 10.0, old=True),
        slave("i-w", 20.0, leaving=True),  # under a spot interruption warning
        slave("i-c", 30.0),
    ]
    assert old_first(("i-w",), fleet, floor=1) == ("i-w",)
    current = [slave("i-x", 1.0), slave("i-y", 2.0, ready=False)]
    assert old_first(("i-y", "i-x"), current, floor=0) == ("i-y", "i-x")
    assert old_first(("i-unknown",), current, floor=0) == ("i-unknown",)


@st.composite
def fleets(draw: st.DrawFn) -> tuple[list[Slave], tuple[str, ...], int]:
    n = draw(st.integers(0, 8))
    slaves = [
        slave(
            f"i-{k}",
            draw(st.floats(0, 100, allow_nan=False)),
            ready=draw(st.booleans()),
            old=draw(st.booleans()),
            leaving=draw(st.booleans()),
        )
        for k in range(n)
    ]
    ids = [s.instance_id for s in slaves if not s.leaving or draw(st.booleans())]
    picks = tuple(draw(st.permutations(ids))[: draw(st.integers(0, len(ids)))])
    return slaves, picks, draw(st.integers(0, 8))


@given(fleets())
def test_old_first_never_serves_fewer_than_the_policy_or_the_floor(case) -> None:
    slaves, picks, floor = case
    chosen = old_first(picks, slaves, floor)
    assert len(set(chosen)) == len(chosen) <= len(picks)
    assert serving_after(slaves, chosen) >= min(floor, serving_after(slaves, picks))
    retired = retire_now(slaves, chosen, floor)
    if retired is not None:
        assert retired.old and not retired.leaving and retired.instance_id not in chosen
        assert serving_after(slaves, (*chosen, retired.instance_id)) >= floor
