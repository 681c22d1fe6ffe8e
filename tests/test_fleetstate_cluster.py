"""FleetState in cluster mode: the queue sensor recovers, the queue is kept, nodes are counted by
state. The messages are the ones QueueSampler, the node pool and ClusterNodeSetup publish."""

from __future__ import annotations

from controller.messages import (
    Decision,
    FleetObserved,
    InstanceDown,
    InstanceId,
    InstanceUp,
    LoadSample,
    LostReason,
    NodeReady,
    NodeSetupFailed,
    QueueSample,
    Role,
    SensorLost,
    SlaveView,
)
from controller.status.fleetstate import FleetState

A, B, C, D, E = (InstanceId(f"i-{c * 4}") for c in "abcde")


def sample(at: float, pending=3, slots=5, running=1, oldest=240.0) -> QueueSample:
    return QueueSample(
        at=at,
        pending_jobs=pending,
        pending_slots=slots,
        running_jobs=running,
        oldest_pending_seconds=oldest,
        pending_mem_mb=4096.0,
        busy_hosts=("ip-127-0-20-1",),
        idle_hosts=("ip-127-0-20-2", "ip-127-0-20-3"),
    )


def lost(at: float, since: float) -> SensorLost:
    return SensorLost(at=at, since=since, reason="`qstat` exited with 1", source="sge")


def view(instance_id: InstanceId, state: str, healthy: bool = False) -> SlaveView:
    return SlaveView(
        instance_id=instance_id, address="127.0.20.1", state=state, healthy=healthy, since=1e9
    )


def observed(at: float, *views: SlaveView) -> FleetObserved:
    return FleetObserved(at=at, members=views, pending_requests=0, cost_per_hour=0.3)


def up(at: float, instance_id: InstanceId, role: Role = Role.NODE) -> InstanceUp:
    return InstanceUp(at=at, instance_id=instance_id, address="127.0.20.1", role=role)


def test_a_good_sample_after_a_failed_qstat_shows_the_sensor_ok_again():
    state = FleetState()
    state.apply(sample(10.0))
    state.apply(lost(20.0, since=20.0))
    state.apply(lost(21.0, since=20.0))
    assert state.sensor_ok is False and state.mode == "cluster"
    assert state.snapshot(now=21.0, wall_now=1021.0)["sensor"]["ok"] is False
    state.apply(sample(25.0, pending=1, slots=2, running=4, oldest=3.5))
    snap = state.snapshot(now=30.0, wall_now=1030.0)
    assert snap["sensor"] == {"ok": True, "since": 1025.0, "reason": ""}
    assert snap["mode"] == "cluster"
    assert snap["queue"] == {
        "at": 1025.0,
        "source": "sge",
        "pending_jobs": 1,
        "pending_slots": 2,
        "running_jobs": 4,
        "oldest_pending_seconds": 3.5,
        "pending_mem_mb": 4096.0,
        "busy_hosts": 1,
        "idle_hosts": 2,
    }
    assert state.summary().startswith("jobs 1 pending, 4 running, nodes desired ?")
    assert "req/s" not in state.summary() and "sensor lost" not in state.summary()


def test_nodes_are_counted_by_state():
    state = FleetState()
    state.apply(up(5.0, B))
    state.apply(up(5.0, C))
    state.apply(up(5.0, D))
    state.apply(
        observed(
            6.0,
            view(A, "booting"),  # launched, EC2 has not said it runs
            view(B, "booting"),  # running: ClusterNodeSetup at work
            view(C, "booting"),
            view(D, "draining"),
            view(E, "terminating"),
        )
    )
    state.apply(NodeReady(at=7.0, instance_id=C, address="127.0.20.1", hostname="ip-127-0-20-1"))
    assert state.node_counts() == {"booting": 1, "setting_up": 1, "ready": 1, "draining": 2}
    assert state.ready == 1
    snap = state.snapshot(now=8.0, wall_now=1008.0)
    assert snap["nodes"] == state.node_counts()
    rows = {row["instance_id"]: (row["state"], row["healthy"]) for row in snap["slaves"]}
    assert rows == {
        A: ("booting", False),
        B: ("setting up", False),
        C: ("ready", True),
        D: ("draining", False),
        E: ("terminating", False),
    }


def test_a_failed_setup_shows_on_its_row_until_the_pool_takes_it_down():
    state = FleetState()
    state.apply(up(5.0, A))
    state.apply(observed(6.0, view(A, "booting")))
    state.apply(
        NodeSetupFailed(
            at=7.0, instance_id=A, address="127.0.20.1", step="volume:data", reason="no device"
        )
    )
    assert state.member_views()[0].state == "setup failed (volume:data)"
    assert state.node_counts()["setting_up"] == 1
    state.apply(observed(8.0, view(A, "terminating")))
    assert state.node_counts() == {"booting": 0, "setting_up": 0, "ready": 0, "draining": 1}


def test_a_node_gone_is_forgotten_and_a_relaunch_with_its_id_boots_again():
    state = FleetState()
    state.apply(up(5.0, A))
    state.apply(observed(6.0, view(A, "booting")))
    state.apply(InstanceDown(at=7.0, instance_id=A, address="x", reason=LostReason.SCALE_IN))
    state.apply(observed(8.0))
    state.apply(observed(9.0, view(A, "booting")))  # what EC2 shows next is not set up
    assert state.node_counts()["booting"] == 1


def test_an_announcement_newer_than_the_observation_is_kept():
    state = FleetState()
    state.apply(up(10.0, A))  # the pool announced it after the describe it publishes below
    state.apply(observed(9.0))
    state.apply(observed(11.0, view(A, "booting")))
    assert state.node_counts()["setting_up"] == 1


def test_the_series_carries_the_queue_with_a_gap_while_the_sensor_is_lost():
    state = FleetState()
    state.apply(sample(0.0, pending=3, running=1))
    decide = dict(load_rps=5.0, band=(0, 4), desired=2, launch=0, remove=(), reason="r")
    state.apply(Decision(at=1.0, **decide))
    state.apply(lost(61.0, since=61.0))
    state.apply(Decision(at=62.0, **decide))
    series = state.snapshot(now=62.0, wall_now=1062.0)["series"]
    assert [(p["pending"], p["running"], p["load"]) for p in series] == [
        (3, 1, None),
        (None, None, None),
    ]


def test_the_render_farm_stays_in_gbrowse_mode():
    state = FleetState()
    state.apply(LoadSample(at=1.0, rps=2.0, window_rps=2.0))
    state.apply(SensorLost(at=2.0, since=2.0, reason="refused", source="apache"))
    state.apply(up(3.0, A, role=Role.SLAVE))
    state.apply(observed(4.0, view(A, "booting")))
    snap = state.snapshot(now=5.0, wall_now=1005.0)
    assert (snap["mode"], snap["queue"], snap["nodes"]) == ("gbrowse", None, None)
    assert snap["slaves"][0]["state"] == "booting"  # a slave is probed, not set up
    assert "req/s" in state.summary()


def test_cluster_mode_from_the_start():
    snap = FleetState(mode="cluster").snapshot(now=1.0, wall_now=1001.0)
    assert snap["mode"] == "cluster" and snap["queue"] is None
    assert snap["nodes"] == {"booting": 0, "setting_up": 0, "ready": 0, "draining": 0}


def test_decision_latency_counts_from_the_queue_sample():
    state = FleetState()
    state.apply(sample(10.0))
    decide = dict(band=(0, 4), desired=2, launch=0, remove=(), reason="r")
    assert state.decision_latency(Decision(at=10.25, load_rps=5.0, **decide)) == 0.25
    assert state.decision_latency(Decision(at=10.25, load_rps=None, **decide)) is None
