"""FleetState folds bus messages into what /status, /metrics and the page show: plain values."""

from __future__ import annotations

import pytest

from controller.messages import (
    ActorStateChanged,
    Decision,
    ErrorKind,
    FleetObserved,
    InstanceDown,
    InstanceId,
    InstanceUp,
    LoadSample,
    LostReason,
    ProviderErrorSeen,
    SensorLost,
    SlaveLost,
    SlaveReady,
    SlaveView,
)
from controller.status.fleetstate import DECISIONS_KEPT, SERIES_SPAN_SECONDS, FleetState
from tests import synthetic_fleet

A, B = InstanceId("i-aaaa"), InstanceId("i-bbbb")


def view(instance_id, state="running", healthy=False, since=1000.0):
    return SlaveView(
        instance_id=instance_id,
        address=f"10.0.0.{len(instance_id)}",
        state=state,
        healthy=healthy,
        since=since,
    )


def decision(at, desired=1, band=(0, 2), launch=0, remove=(), load=0.5, reason="r"):
    return Decision(
        at=at,
        load_rps=load,
        band=band,
        desired=desired,
        launch=launch,
        remove=remove,
        reason=reason,
    )


def fleet(at, *views, cost=0.0, pending=0):
    return FleetObserved(at=at, members=views, pending_requests=pending, cost_per_hour=cost)


def test_empty_state_snapshot_has_every_field_the_spec_names():
    snap = FleetState().snapshot(now=10.0, wall_now=1e9)
    for key in (
        "load",
        "table_band",
        "desired",
        "slaves",
        "pending_requests",
        "cost_per_hour",
        "actors",
        "dry_run",
        "spend",
        "sensor",
        "decisions",
        "series",
    ):
        assert key in snap
    assert snap["load"] is None and snap["table_band"] is None and snap["slaves"] == []
    assert snap["spend"] == 0.0


def test_load_and_sensor_outage_and_recovery():
    state = FleetState()
    state.apply(LoadSample(at=10.0, rps=1.25, window_rps=1.0))
    assert (state.load, state.sensor_ok, state.sensor_since) == (1.25, True, 10.0)
    state.apply(SensorLost(at=50.0, since=40.0, reason="connection refused"))
    snap = state.snapshot(now=60.0, wall_now=1000.0)
    assert snap["sensor"] == {"ok": False, "since": 980.0, "reason": "connection refused"}
    assert snap["load"] == 1.25  # the last reading stays visible; the sensor says it is old
    state.apply(LoadSample(at=70.0, rps=0.5, window_rps=0.7))
    assert state.sensor_ok and state.sensor_since == 70.0 and state.sensor_reason == ""


def test_decision_sets_band_desired_and_dry_run():
    state = FleetState()
    state.apply(
        Decision(
            at=1.0,
            load_rps=2.0,
            band=(2, 4),
            desired=3,
            launch=3,
            remove=(),
            reason="load 2.0",
            dry_run=True,
        )
    )
    snap = state.snapshot(now=2.0, wall_now=100.0)
    assert snap["table_band"] == [2, 4] and snap["desired"] == 3 and snap["dry_run"] is True
    assert snap["decisions"][0]["reason"] == "load 2.0"
    assert snap["decisions"][0]["at"] == 99.0


def test_recent_decisions_keep_changes_and_the_latest_hold():
    state = FleetState()
    state.apply(decision(0.0, desired=1, launch=1, reason="launch one"))
    for t in range(1, 200):
        state.apply(decision(float(t), desired=1, reason=f"hold {t}"))
    reasons = [d.reason for d in state.recent_decisions()]
    assert reasons == ["hold 199", "launch one"]
    for t in range(200, 200 + 2 * DECISIONS_KEPT):
        state.apply(decision(float(t), desired=t % 2 + 1))  # every one changes the target
    assert len(state.decisions) == DECISIONS_KEPT


def test_slaves_follow_fleet_observed_and_probe_verdicts():
    state = FleetState()
    state.apply(fleet(10.0, view(A), view(B, state="booting"), pending=1))
    assert state.ready == 0
    state.apply(SlaveReady(at=20.0, instance_id=A, address="10.0.0.6"))
    assert state.ready == 1
    # The next observation does not undo the probe's verdict.
    state.apply(fleet(30.0, view(A), view(B, state="booting"), pending=1))
    snap = state.snapshot(now=40.0, wall_now=1040.0)
    a = next(s for s in snap["slaves"] if s["instance_id"] == A)
    assert a["healthy"] is True and a["state"] == "ready" and a["since"] == 1020.0
    state.apply(
        SlaveLost(at=50.0, instance_id=A, address="10.0.0.6", reason=LostReason.UNREACHABLE)
    )
    assert state.ready == 0
    assert state.member_views()[0].state == "lost (unreachable)"
    # Gone from the pool's view: gone from the page, and its verdict forgotten.
    state.apply(fleet(60.0, view(B, state="running", healthy=True)))
    assert [v.instance_id for v in state.member_views()] == [B]
    assert A not in state.health and state.ready == 1


def test_draining_state_survives_a_ready_verdict():
    state = FleetState()
    state.apply(SlaveReady(at=1.0, instance_id=A, address="x"))
    state.apply(fleet(2.0, view(A, state="draining")))
    assert state.member_views()[0].state == "draining"


def test_spend_integrates_cost_over_time():
    state = FleetState()
    state.apply(fleet(0.0, cost=0.10))
    state.apply(fleet(1800.0, cost=0.20))  # $0.05 for the first half hour
    assert state.spend(1800.0) == pytest.approx(0.05)
    assert state.spend(3600.0) == pytest.approx(0.05 + 0.10)
    state.apply(fleet(3600.0, cost=0.0))
    assert state.spend(7200.0) == pytest.approx(0.15)
    assert state.snapshot(now=7200.0, wall_now=0.0)["cost_per_hour"] == 0.0


def test_series_one_point_a_minute_for_six_hours():
    state = FleetState()
    state.apply(LoadSample(at=0.0, rps=1.0, window_rps=1.0))
    for t in range(0, 8 * 3600, 30):
        state.apply(decision(float(t), desired=2))
    points = list(state.series)
    assert len(points) == SERIES_SPAN_SECONDS / 60 + 1
    assert points[-1].at == 8 * 3600 - 30  # the latest value of the last minute
    assert points[0].at >= points[-1].at - SERIES_SPAN_SECONDS


def test_series_has_gap_while_sensor_is_lost():
    state = FleetState()
    state.apply(LoadSample(at=0.0, rps=1.0, window_rps=1.0))
    state.apply(decision(0.0))
    state.apply(SensorLost(at=60.0, since=60.0, reason="timeout"))
    state.apply(decision(60.0, load=None))
    assert [p.load for p in state.series] == [1.0, None]


def test_counters_count_each_instance_once():
    state = FleetState()
    for _ in range(2):
        state.apply(InstanceUp(at=1.0, instance_id=A, address="a"))
        state.apply(InstanceUp(at=1.0, instance_id=B, address="b"))
    state.apply(InstanceDown(at=2.0, instance_id=A, address="a", reason=LostReason.SCALE_IN))
    state.apply(InstanceDown(at=3.0, instance_id=A, address="a", reason=LostReason.TERMINATED))
    state.apply(InstanceDown(at=4.0, instance_id=B, address="b", reason=LostReason.INTERRUPTED))
    assert (state.launches, state.terminations, state.interruptions) == (2, 1, 1)


def test_ec2_errors_by_kind_but_not_dry_run_successes():
    state = FleetState()
    for kind in (ErrorKind.CAPACITY, ErrorKind.CAPACITY, ErrorKind.AUTH, ErrorKind.DRY_RUN_OK):
        state.apply(
            ProviderErrorSeen(at=1.0, kind=kind, code="C", message="m", operation="RunInstances")
        )
    assert dict(state.ec2_errors) == {"capacity": 2, "auth": 1}
    assert state.snapshot(now=1.0, wall_now=1.0)["last_error"]["kind"] == "auth"


def test_actor_states_and_restart_totals_only_grow():
    state = FleetState()
    changes = [
        ("running", 0),
        ("restarting", 0),
        ("running", 1),
        ("restarting", 1),
        ("running", 2),
        ("running", 0),
        ("running", 1),
    ]
    for n, (actor_state, restarts) in enumerate(changes):
        state.apply(
            ActorStateChanged(at=float(n), actor="pool", state=actor_state, restarts=restarts)
        )
    assert state.actor_restarts_total["pool"] == 3
    assert state.snapshot(now=9.0, wall_now=9.0)["actors"] == {
        "pool": {"state": "running", "restarts": 1, "error": None}
    }


def test_decision_latency_from_the_sample_it_read():
    state = FleetState()
    assert state.decision_latency(decision(5.0)) is None
    state.apply(LoadSample(at=5.0, rps=1.0, window_rps=1.0))
    assert state.decision_latency(decision(5.25)) == pytest.approx(0.25)
    assert state.decision_latency(decision(6.0, load=None)) is None


def test_unknown_messages_are_ignored():
    state = FleetState()
    state.apply(object())
    state.apply("text")
    assert state.started_at is None


def test_synthetic_story_folds_into_a_sane_snapshot():
    state = FleetState()
    for msg in synthetic_fleet.events():
        state.apply(msg)
    snap = state.snapshot(now=synthetic_fleet.END + 1, wall_now=2e9)
    assert 200 <= len(snap["series"]) <= 241
    assert snap["spend"] > 0 and snap["counters"]["launches"] >= 4
    assert snap["ready"] == len([s for s in snap["slaves"] if s["healthy"]])
    assert state.summary().startswith("load ")
