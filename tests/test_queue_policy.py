"""QueuePolicy: how many batch nodes the Grid Engine queue calls for, and which idle ones go."""

from __future__ import annotations

from controller.config.schema import ClusterSection, Config, ScalingSection
from controller.messages import QueueSample
from controller.policy.queue_policy import Node, QueueInput, QueuePolicy


def sample(pending_slots: int = 0, busy: tuple[str, ...] = (), idle: tuple[str, ...] = ()):
    return QueueSample(
        at=0.0,
        pending_jobs=pending_slots,
        pending_slots=pending_slots,
        running_jobs=len(busy),
        oldest_pending_seconds=0.0,
        busy_hosts=busy,
        idle_hosts=idle,
    )


def node(n: int, *, ready: bool = True, launched: float = 0.0, **kw) -> Node:
    return Node(
        instance_id=f"i-{n}", hostname=f"ip-10-0-0-{n}", launched_at=launched, ready=ready, **kw
    )


def host(n: int) -> str:
    return f"ip-10-0-0-{n}"


def policy(**kw) -> QueuePolicy:
    kw.setdefault("min_nodes", 0)
    kw.setdefault("max_nodes", 8)
    kw.setdefault("idle_seconds", 60.0)
    return QueuePolicy(**kw)


def decide(p: QueuePolicy, now: float, s, nodes=(), **kw):
    return p.decide(QueueInput(now=now, sample=s, nodes=tuple(nodes), **kw))


def test_pending_slots_launch_all_needed_nodes_at_once():
    d = decide(policy(node_slots=2), 0, sample(pending_slots=7))
    assert (d.desired, d.launch, d.remove) == (4, 4, ())
    assert d.band == (0, 8)
    assert "7 pending slot(s)" in d.reason


def test_booting_nodes_and_open_requests_count_so_a_slow_boot_never_launches_twice():
    p = policy()
    booting = [node(1, ready=False), node(2, ready=False)]
    d = decide(p, 0, sample(pending_slots=3), booting, pending_requests=1)
    assert (d.desired, d.launch) == (3, 0)


def test_busy_nodes_plus_pending_is_the_demand_clamped_to_max():
    p = policy(max_nodes=3)
    nodes = [node(1), node(2)]
    d = decide(p, 0, sample(pending_slots=5, busy=(host(1), host(2))), nodes)
    assert (d.desired, d.launch) == (3, 1)


def test_min_nodes_is_kept_with_an_empty_queue():
    p = policy(min_nodes=2)
    d = decide(p, 0, sample())
    assert (d.desired, d.launch) == (2, 2)
    nodes = [node(1), node(2)]
    for t in (0, 100, 1000):
        assert decide(p, t, sample(idle=(host(1), host(2))), nodes).remove == ()


def test_idle_nodes_go_after_idle_seconds_never_before():
    p = policy(idle_seconds=60)
    nodes = [node(1), node(2), node(3)]
    s = sample(busy=(host(2),), idle=(host(1), host(3)))
    assert decide(p, 0, s, nodes).remove == ()
    assert decide(p, 59, s, nodes).remove == ()
    d = decide(p, 60, s, nodes)
    assert sorted(d.remove) == ["i-1", "i-3"]
    assert d.desired == 1


def test_a_node_that_gets_work_starts_its_idle_clock_afresh():
    p = policy(idle_seconds=60)
    nodes = [node(1)]
    decide(p, 0, sample(idle=(host(1),)), nodes)
    decide(p, 50, sample(busy=(host(1),)), nodes)  # a job landed
    assert decide(p, 70, sample(idle=(host(1),)), nodes).remove == ()
    assert decide(p, 130, sample(idle=(host(1),)), nodes).remove == ("i-1",)


def test_idle_nodes_the_queue_still_needs_are_not_idle():
    # Two jobs wait (the scheduler has not placed them yet): both idle nodes are needed.
    p = policy(idle_seconds=60)
    nodes = [node(1), node(2)]
    for t in (0, 100, 200):
        d = decide(p, t, sample(pending_slots=2, idle=(host(1), host(2))), nodes)
        assert (d.desired, d.launch, d.remove) == (2, 0, ())
    # The queue empties: the idle clock starts now, not at t=0.
    assert decide(p, 210, sample(idle=(host(1), host(2))), nodes).remove == ()
    assert sorted(decide(p, 270, sample(idle=(host(1), host(2))), nodes).remove) == ["i-1", "i-2"]


def test_the_longest_idle_goes_first_and_never_below_min():
    p = policy(min_nodes=1, idle_seconds=10)
    nodes = [node(1), node(2)]
    decide(p, 0, sample(busy=(host(2),), idle=(host(1),)), nodes)
    d = decide(p, 5, sample(idle=(host(1), host(2))), nodes)
    assert d.remove == ()
    d = decide(p, 10, sample(idle=(host(1), host(2))), nodes)
    assert d.remove == ("i-1",) and d.desired == 1
    nodes = [node(2)]
    assert decide(p, 100, sample(idle=(host(2),)), nodes).remove == ()


def test_above_max_sheds_at_once_but_never_a_busy_node():
    p = policy(max_nodes=2)
    nodes = [node(1, launched=0), node(2, launched=1), node(3, launched=2, ready=False), node(4)]
    busy = (host(1), host(2), host(4))
    d = decide(p, 0, sample(pending_slots=9, busy=busy), nodes)
    assert d.remove == ("i-3",)  # the only one not busy; busy ones finish their jobs
    assert d.launch == 0


def test_interrupted_nodes_are_replaced_and_removed_first():
    p = policy(max_nodes=2)
    nodes = [node(1), node(2, interrupted=True)]
    d = decide(p, 0, sample(pending_slots=0, busy=(host(1),)), nodes)
    assert d.desired == 1 and d.launch == 0
    # Over max with the interrupted one: it goes first.
    nodes = [node(1), node(2, interrupted=True), node(3)]
    d = decide(p, 0, sample(busy=(host(1), host(3))), nodes)
    assert d.remove == ("i-2",)


def test_a_lost_sensor_holds_and_only_replaces():
    p = policy(idle_seconds=10)
    nodes = [node(1), node(2)]
    d = decide(p, 0, sample(pending_slots=2), nodes)
    assert d.desired == 2
    for t in (10, 100, 1000):
        d = decide(p, t, None, nodes)
        assert (d.desired, d.launch, d.remove) == (2, 0, ())
        assert "sensor lost" in d.reason
    d = decide(p, 1001, None, [node(1)])  # one went away meanwhile
    assert (d.desired, d.launch, d.remove) == (2, 1, ())


def test_a_lost_sensor_before_any_sample_holds_what_there_is_within_the_band():
    d = decide(policy(min_nodes=1), 0, None, [node(1), node(2)])
    assert (d.desired, d.launch, d.remove) == (2, 0, ())
    d = decide(policy(min_nodes=1), 0, None, [])
    assert (d.desired, d.launch) == (1, 1)


def test_the_budget_caps_launches():
    p = policy(max_cost_per_hour=1.0)
    d = decide(p, 0, sample(pending_slots=5), cost_per_hour=0.5, price_per_instance=0.2)
    assert (d.desired, d.launch) == (5, 2)


def test_draining_nodes_do_not_count():
    p = policy()
    d = decide(p, 0, sample(pending_slots=1), [node(1, draining=True)])
    assert (d.desired, d.launch) == (1, 1)


def test_for_cluster_reads_the_cluster_keys():
    cluster = ClusterSection(name="c", min_nodes=1, max_nodes=4, node_slots=4, idle_seconds=9)
    p = QueuePolicy.for_cluster(Config(scaling=ScalingSection(max_cost_per_hour=3.0)), cluster)
    assert (p.band, p.node_slots, p.idle_seconds, p.max_cost_per_hour) == ((1, 4), 4, 9, 3.0)
    assert decide(p, 0, sample(pending_slots=9)).desired == 3
