"""QueuePolicy and run-time limits: the slots of running tasks whose limit (h_rt, Slurm's time
limit) ends within a boot serve the jobs that waited first, so fewer nodes are launched for them;
never the jobs beyond what running jobs occupy, and never the nodes kept."""

from __future__ import annotations

from dataclasses import replace

from controller.config.schema import ClusterSection, Config, MasterSection, ScalingSection
from controller.messages import QueueSample
from controller.policy.queue_policy import LIMIT_HORIZON, Node, QueueInput, QueuePolicy

SLOTS = 4


def host(n: int) -> str:
    return f"ip-10-0-0-{n}"


def node(n: int) -> Node:
    return Node(instance_id=f"i-{n}", hostname=host(n), launched_at=0.0, ready=True)


def sample(waiting, running, limits=()) -> QueueSample:
    """`waiting`: (job id, seconds waited, slots); `running`: (job id, host number, slots), each
    host full; `limits`: (job id, seconds left)."""
    busy = sorted({n for _, n, _ in running})
    return QueueSample(
        at=0.0,
        pending_jobs=len(waiting),
        pending_slots=sum(slots for _, _, slots in waiting),
        running_jobs=len(running),
        oldest_pending_seconds=max((w for _, w, _ in waiting), default=0.0),
        busy_hosts=tuple(host(n) for n in busy),
        waiting=tuple((job, waited, slots, 1) for job, waited, slots in waiting),
        free_slots=0,
        running=tuple((job, 1000.0, slots) for job, _, slots in running),
        running_limits=tuple(limits),
    )


def policy(**kw) -> QueuePolicy:
    kw.setdefault("min_nodes", 0)
    kw.setdefault("max_nodes", 8)
    kw.setdefault("hold_seconds", 120.0)
    return QueuePolicy(node_slots=SLOTS, **kw)


def decide(p: QueuePolicy, s: QueueSample, nodes):
    return p.decide(QueueInput(now=0.0, sample=s, nodes=tuple(nodes)))


FULL = [("5", 1, SLOTS), ("6", 2, SLOTS)]  # two nodes, each full with one job
NODES = [node(1), node(2)]


def test_a_limit_ending_within_a_boot_holds_back_the_launch_for_a_job_that_waited():
    waiting = [("9", 600.0, SLOTS)]
    without = decide(policy(), sample(waiting, FULL), NODES)
    assert (without.desired, without.launch) == (3, 1)
    d = decide(policy(), sample(waiting, FULL, [("5", 60.0), ("6", 5000.0)]), NODES)
    assert (d.desired, d.launch) == (3, 0)  # the node is still wanted: kept, not launched
    assert "4 slot(s) freed by time limits within a boot" in d.reason
    assert "1 launch(es) held back" in d.reason


def test_a_limit_ending_after_the_horizon_changes_nothing():
    waiting = [("9", 600.0, SLOTS)]
    d = decide(policy(), sample(waiting, FULL, [("5", LIMIT_HORIZON + 1), ("6", 5000.0)]), NODES)
    assert (d.desired, d.launch) == (3, 1)
    assert "time limits" not in d.reason
    # The horizon is the policy's: a longer one covers that limit.
    long = policy(limit_horizon=LIMIT_HORIZON + 1)
    d = decide(long, sample(waiting, FULL, [("5", LIMIT_HORIZON + 1)]), NODES)
    assert (d.desired, d.launch) == (3, 0)


def test_a_limit_already_passed_counts_as_freeing_now():
    d = decide(policy(), sample([("9", 600.0, SLOTS)], FULL, [("6", 0.0)]), NODES)
    assert d.launch == 0


def test_jobs_beyond_what_running_jobs_occupy_still_launch_at_once():
    # One full node whose job ends in a minute; three 4-slot jobs waited: the freed slots serve
    # one of them, the other two need nodes whatever running jobs do.
    running = [("5", 1, SLOTS)]
    waiting = [("9", 600.0, SLOTS), ("10", 600.0, SLOTS), ("11", 600.0, SLOTS)]
    without = decide(policy(), sample(waiting, running), [node(1)])
    assert (without.desired, without.launch) == (4, 3)
    d = decide(policy(), sample(waiting, running, [("5", 30.0)]), [node(1)])
    assert (d.desired, d.launch) == (4, 2)
    # Even when every job waited less than hold_seconds, the part beyond occupied launches.
    fresh = [(job, 10.0, slots) for job, _, slots in waiting]
    d = decide(policy(), sample(fresh, running, [("5", 30.0)]), [node(1)])
    assert (d.desired, d.launch) == (4, 2)


def test_slots_freed_beyond_the_waiting_jobs_launch_no_less_than_nothing():
    d = decide(policy(), sample([("9", 600.0, 1)], FULL, [("5", 10.0), ("6", 10.0)]), NODES)
    assert (d.desired, d.launch, d.remove) == (3, 0, ())


def test_a_parallel_jobs_slots_count_in_full_and_only_tasks_listed_as_running_count():
    # A job over both nodes (8 slots) ends within a boot: two waiting 4-slot jobs take its slots.
    running = [("7", 1, SLOTS), ("7", 2, SLOTS)]
    s = sample([("9", 600.0, SLOTS), ("10", 600.0, SLOTS)], running, [("7", 50.0)])
    s = replace(s, running=(("7", 1000.0, 2 * SLOTS),))
    assert decide(policy(), s, NODES).launch == 0
    # A limit for a task qstat no longer lists as running frees nothing.
    s = replace(s, running_limits=(("8", 50.0),))
    assert decide(policy(), s, NODES).launch == 2


def test_for_cluster_takes_a_boot_and_a_poll_as_the_horizon():
    config = Config(
        scaling=ScalingSection(boot_seconds=200.0), master=MasterSection(poll_interval=15.0)
    )
    p = QueuePolicy.for_cluster(config, ClusterSection(name="c", max_nodes=4, node_slots=SLOTS))
    assert p.limit_horizon == 215.0
    assert QueuePolicy(min_nodes=0, max_nodes=1).limit_horizon == LIMIT_HORIZON == 90.0 + 30.0
