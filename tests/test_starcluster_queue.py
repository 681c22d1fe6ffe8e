"""StarCluster 0.95's loadbalance rules (controller.policy.starcluster_queue) on hand-built
inputs."""

from __future__ import annotations

import pytest

from controller.messages import QueueSample
from controller.policy.queue_policy import Node, QueueInput
from controller.policy.starcluster_queue import StarClusterQueuePolicy


def sample(
    *,
    jobs: int = 0,
    slots: int = 0,
    oldest: float = 0.0,
    busy: tuple[int, ...] = (),
    idle: tuple[int, ...] = (),
) -> QueueSample:
    return QueueSample(
        at=0.0,
        pending_jobs=jobs,
        pending_slots=slots,
        running_jobs=len(busy),
        oldest_pending_seconds=oldest,
        busy_hosts=tuple(host(n) for n in busy),
        idle_hosts=tuple(host(n) for n in idle),
    )


def host(n: int) -> str:
    return f"node{n:03d}"


def node(n: int, *, ready: bool = True, launched: float = 0.0) -> Node:
    return Node(instance_id=f"i-{n}", hostname=host(n), launched_at=launched, ready=ready)


def policy(**kw) -> StarClusterQueuePolicy:
    kw.setdefault("max_nodes", 10)
    kw.setdefault("node_slots", 8)
    return StarClusterQueuePolicy(**kw)


def decide(p: StarClusterQueuePolicy, now: float, s: QueueSample | None, nodes=()):
    return p.decide(QueueInput(now=now, sample=s, nodes=tuple(nodes)))


def one_busy_node_and(pending_slots: int, oldest: float) -> tuple[QueueSample, list[Node]]:
    return sample(jobs=1, slots=pending_slots, oldest=oldest, busy=(1,)), [node(1)]


def test_no_node_is_added_before_the_oldest_job_waited_more_than_wait_time():
    p = policy()  # wait_time 900 s, its default
    s, nodes = one_busy_node_and(8, oldest=900.0)
    assert decide(p, 1000.0, s, nodes).launch == 0
    s, nodes = one_busy_node_and(8, oldest=901.0)
    assert decide(p, 1001.0, s, nodes).launch == 1


def test_a_wait_time_under_300_seconds_counts_as_300():
    p = policy(wait_time=60.0)
    s, nodes = one_busy_node_and(8, oldest=300.0)
    assert decide(p, 1000.0, s, nodes).launch == 0
    s, nodes = one_busy_node_and(8, oldest=301.0)
    assert decide(p, 1001.0, s, nodes).launch == 1


def test_one_node_per_pass_whatever_the_queue_asks():
    s, nodes = one_busy_node_and(80, oldest=5000.0)  # ten nodes' worth
    assert decide(policy(), 6000.0, s, nodes).launch == 1
    assert decide(policy(add_nodes_per_iteration=3), 6000.0, s, nodes).launch == 3


def test_queued_slots_under_one_host_add_nothing_as_the_floor_division_says():
    s, nodes = one_busy_node_and(4, oldest=5000.0)  # 4 // 8 == 0
    assert decide(policy(), 6000.0, s, nodes).launch == 0


def test_an_empty_cluster_gets_one_node_at_once():
    d = decide(policy(), 10.0, sample(jobs=1, slots=8, oldest=1.0))
    assert d.launch == 1


def test_nothing_is_added_above_max_nodes():
    nodes = [node(1), node(2)]
    s = sample(jobs=3, slots=24, oldest=5000.0, busy=(1, 2))
    assert decide(policy(max_nodes=2), 6000.0, s, nodes).launch == 0


def test_no_change_while_booting_nor_within_stabilization_time_of_the_node_coming_up():
    p = policy()
    s = sample(jobs=2, slots=64, oldest=5000.0, busy=(1,))
    assert decide(p, 0.0, s, [node(1)]).launch == 1
    booting = [node(1), node(2, ready=False, launched=0.0)]
    assert decide(p, 60.0, s, booting).launch == 0  # add_nodes has not returned yet
    up = [node(1), node(2, launched=0.0)]
    assert decide(p, 90.0, s, up).launch == 0  # it returns: the clock starts now
    assert decide(p, 90.0 + 179.0, s, up).launch == 0
    assert decide(p, 90.0 + 180.0, s, up).launch == 1


def test_idle_nodes_go_only_when_nothing_is_queued():
    p = policy(kill_after=0.0)
    nodes = [node(1), node(2)]
    queued = sample(jobs=1, slots=16, oldest=10.0, busy=(1,), idle=(2,))
    assert decide(p, 100.0, queued, nodes).remove == ()
    empty = sample(busy=(1,), idle=(2,))
    assert decide(p, 160.0, empty, nodes).remove == ("i-2",)  # never the busy one


def test_an_idle_node_is_kept_until_kill_after_minutes_past_its_hour():
    nodes = [node(1, launched=0.0)]
    empty = sample(idle=(1,))
    assert decide(policy(), 44 * 60 + 59, empty, nodes).remove == ()
    assert decide(policy(), 45 * 60, empty, nodes).remove == ("i-1",)
    assert decide(policy(), 60 * 60 + 10, empty, nodes).remove == ()  # a new hour began


def test_removals_wait_for_stabilization_too():
    p = policy(kill_after=0.0)
    assert decide(p, 0.0, sample(idle=(1,)), [node(1)]).remove == ("i-1",)
    assert decide(p, 179.0, sample(idle=(2,)), [node(2)]).remove == ()
    assert decide(p, 180.0, sample(idle=(2,)), [node(2)]).remove == ("i-2",)


def test_never_below_min_nodes():
    p = policy(min_nodes=2, kill_after=0.0)
    nodes = [node(1), node(2), node(3)]
    d = decide(p, 0.0, sample(idle=(1, 2, 3)), nodes)
    assert d.remove == ("i-1",) and d.desired == 2
    below = policy(min_nodes=2)
    assert decide(below, 0.0, sample(idle=(1,)), [node(1)]).launch == 1  # one per pass


def test_a_lost_sensor_changes_nothing():
    d = decide(policy(kill_after=0.0), 0.0, None, [node(1)])
    assert (d.launch, d.remove) == (0, ())


def test_min_above_max_is_refused():
    with pytest.raises(ValueError):
        policy(min_nodes=3, max_nodes=2)
