"""QueuePolicy's sizing from the job list qstat shows: free slots on partly used nodes, jobs too
wide to start before running jobs end, the hold before a launch, and a counted job kept."""

from __future__ import annotations

from controller.messages import QueueSample
from controller.policy.queue_policy import HOLD_SECONDS, Node, QueueInput, QueuePolicy

SLOTS = 4


def host(n: int) -> str:
    return f"ip-10-0-0-{n}"


def node(n: int, *, ready: bool = True) -> Node:
    return Node(instance_id=f"i-{n}", hostname=host(n), launched_at=0.0, ready=ready)


def sample(waiting=(), *, busy=(), idle=(), free: int = 0) -> QueueSample:
    """`waiting`: (job id, seconds waited, slots) of single-task jobs, in queue order."""
    return QueueSample(
        at=0.0,
        pending_jobs=len(waiting),
        pending_slots=sum(slots for _, _, slots in waiting),
        running_jobs=len(busy),
        oldest_pending_seconds=max((w for _, w, _ in waiting), default=0.0),
        busy_hosts=tuple(host(n) for n in busy),
        idle_hosts=tuple(host(n) for n in idle),
        waiting=tuple((job, waited, slots, 1) for job, waited, slots in waiting),
        free_slots=free + SLOTS * len(idle),
    )


def policy(**kw) -> QueuePolicy:
    kw.setdefault("min_nodes", 0)
    kw.setdefault("max_nodes", 8)
    kw.setdefault("idle_seconds", 60.0)
    kw.setdefault("hold_seconds", 0.0)
    return QueuePolicy(node_slots=SLOTS, **kw)


def decide(p: QueuePolicy, now: float, s: QueueSample, nodes=()):
    return p.decide(QueueInput(now=now, sample=s, nodes=tuple(nodes)))


def test_free_slots_on_partly_used_nodes_are_used_before_a_new_node():
    # A 6-slot job waits; the two busy nodes have 3 slots free between them: 3 more are
    # needed, one node (counting pending slots alone would launch two).
    nodes = [node(1), node(2)]
    d = decide(policy(), 0, sample([("9", 100.0, 6)], busy=(1, 2), free=3), nodes)
    assert (d.desired, d.launch) == (3, 1)


def test_a_job_too_wide_to_start_before_running_jobs_end_launches_nothing():
    # max 3 nodes; two are full, one is idle: a 16-slot job could not start even at max.
    p = policy(max_nodes=3)
    nodes = [node(1), node(2), node(3)]
    s = sample([("9", 600.0, 16)], busy=(1, 2), idle=(3,))
    d = decide(p, 0, s, nodes)
    assert (d.desired, d.launch, d.remove) == (2, 0, ())
    assert "1 job(s) too wide until running jobs end" in d.reason
    # The idle node is not kept for it: it goes after idle_seconds.
    assert decide(p, 60, s, nodes).remove == ("i-3",)


def test_a_job_that_fits_once_running_jobs_end_gets_its_nodes():
    p = policy(max_nodes=3)
    s = sample([("9", 600.0, 8)], busy=(1,), free=0)
    d = decide(p, 0, s, [node(1)])
    assert (d.desired, d.launch) == (3, 2)


def test_a_young_job_keeps_the_idle_node_it_could_use_but_launches_nothing_yet():
    # Node 2 is full: its jobs may end and free the slots the young 8-slot job needs.
    p = policy(hold_seconds=60.0, idle_seconds=0.0)
    nodes = [node(1), node(2)]
    d = decide(p, 0, sample([("9", 10.0, 8)], busy=(2,), idle=(1,)), nodes)
    assert (d.desired, d.launch, d.remove) == (3, 0, ())
    assert "1 launch(es) held back while their jobs wait for freed slots" in d.reason
    d = decide(p, 50, sample([("9", 60.0, 8)], busy=(2,), idle=(1,)), nodes)
    assert (d.desired, d.launch, d.remove) == (3, 1, ())


def test_no_hold_for_slots_running_jobs_could_never_free():
    p = policy(hold_seconds=600.0)
    assert decide(p, 0, sample([("9", 0.0, 8)])).launch == 2  # an empty cluster: at once
    # One full node could free 4 slots: the other 8 of a 12-slot job need nodes now.
    d = decide(p, 0, sample([("9", 0.0, 12)], busy=(1,)), [node(1)])
    assert (d.desired, d.launch) == (4, 2)


def test_a_counted_job_keeps_its_nodes_after_later_jobs_took_its_slots():
    # The 8-slot job is counted (two nodes launched); a later job takes the capacity before
    # it: the job is too wide for what is left, but it keeps its demand rather than starve.
    p = policy(max_nodes=3)
    d = decide(p, 0, sample([("9", 100.0, 8)]))
    assert d.launch == 2
    nodes = [node(1), node(2)]
    s = sample([("9", 200.0, 8)], busy=(1, 2))
    d = decide(p, 100, s, nodes)
    assert (d.desired, d.launch) == (3, 1)  # clamped to max_nodes
    fresh = policy(max_nodes=3)  # never counted it: 4 launchable slots are too few
    assert decide(fresh, 100, s, nodes).launch == 0


def test_booting_nodes_count_as_capacity_and_as_supply():
    p = policy()
    nodes = [node(1, ready=False), node(2, ready=False)]
    d = decide(p, 0, sample([("9", 100.0, 8)]), nodes)
    assert (d.desired, d.launch) == (2, 0)


def test_the_default_hold_is_the_tuned_one():
    assert QueuePolicy(min_nodes=0, max_nodes=1).hold_seconds == HOLD_SECONDS


def test_a_job_that_would_fit_the_free_slots_waits_for_something_else_and_gets_a_node():
    # Two 1-slot jobs asking more memory than the busy node (or the head) has left: Grid
    # Engine shows 3 free slots, yet the jobs wait; counting those slots would launch nothing.
    d = decide(
        policy(), 0, sample([("1", 300.0, 1), ("2", 300.0, 1)], busy=(1,), free=3), [node(1)]
    )
    assert (d.desired, d.launch) == (2, 1)
