"""The cluster model of bench/cluster.py on job lists small enough to work by hand."""

from __future__ import annotations

import random

import pytest

from controller.policy.band import PolicyDecision
from controller.policy.queue_policy import QueueInput, QueuePolicy
from controller.policy.starcluster_queue import StarClusterQueuePolicy
from tests.bench_scripts import load_bench

bench = load_bench("cluster")

Job = bench.Job


def boots(seed: int, n: int, boot: float = 90.0) -> list[float]:
    """The boot times the model draws for its first n launches."""
    rng = random.Random(seed)
    return [boot * rng.uniform(0.8, 1.2) for _ in range(n)]


def decision(launch: int = 0, remove: tuple[str, ...] = ()) -> PolicyDecision:
    return PolicyDecision(band=(0, 9), desired=0, launch=launch, remove=remove, reason="test")


def fixed(jobs, *, slots: int, nodes: int):
    return bench.replay(jobs, None, slots=slots, boot=90.0, seed=1, poll=None, prestart=nodes)


def test_two_jobs_on_one_fixed_node():
    # A holds all 4 slots from 0 to 100; B (submitted at 10) starts when A ends, ends at 150
    out = fixed([Job(0, 100, 4), Job(10, 50, 2)], slots=4, nodes=1)
    assert out.waits == [0.0, 90.0]
    assert out.end == 150.0
    assert out.node_seconds == 150.0  # one node from the first submit to the last end
    assert (out.launches, out.peak) == (0, 1)
    assert out.slowdowns == [1.0, pytest.approx(140 / 50)]


def test_no_reservation_a_later_small_job_passes_a_waiting_big_one():
    # A takes 3 of 4 slots until 100; B needs 4 and waits; C needs 1 and starts at once
    out = fixed([Job(0, 100, 3), Job(1, 10, 4), Job(2, 10, 1)], slots=4, nodes=1)
    assert out.waits == [0.0, 99.0, 0.0]
    assert out.end == 110.0


def test_a_job_spans_nodes_filling_the_oldest_first():
    model = bench.Model(slots=4, boot=90.0, seed=1)
    first, second = model.launch(0.0, ready_now=True), model.launch(0.0, ready_now=True)
    model.become_ready(0.0)
    assert model.place(2) == [(first, 2)]
    taken = model.place(5)
    assert taken == [(first, 2), (second, 3)]
    assert (first.used, second.used, model.free) == (4, 3, 1)
    assert model.hosts() == ((first.hostname, second.hostname), ())
    model.release(taken)
    assert (first.used, second.used, model.free) == (2, 0, 6)
    assert model.hosts() == ((first.hostname,), (second.hostname,))


def test_a_job_wider_than_a_node_runs_across_two():
    out = fixed([Job(0, 10, 6), Job(0, 10, 2)], slots=4, nodes=2)
    assert out.waits == [0.0, 0.0]
    assert out.node_seconds == 20.0


def test_a_launched_node_is_billed_from_launch_and_runs_jobs_once_booted():
    def launch_once(inp: QueueInput) -> PolicyDecision:
        return decision(launch=1 if not inp.nodes else 0)

    out = bench.replay([Job(0, 100, 1)], launch_once, slots=4, boot=90.0, seed=7, poll=30.0)
    (boot,) = boots(7, 1)
    assert out.waits == [pytest.approx(boot)]
    assert out.node_seconds == pytest.approx(boot + 100.0)
    assert (out.launches, out.peak) == (1, 1)


def test_the_policy_sees_what_the_qstat_sensor_would():
    seen: list[QueueInput] = []

    def launch_two_then_watch(inp: QueueInput) -> PolicyDecision:
        seen.append(inp)
        return decision(launch=2 if len(seen) == 1 else 0)

    jobs = [Job(0, 1000, 3), Job(5, 1000, 6), Job(20, 1000, 1)]
    bench.replay(jobs, launch_two_then_watch, slots=4, boot=90.0, seed=3, poll=30.0)
    at30 = seen[1]  # both nodes still booting: no exec host yet
    assert at30.now == 30.0
    s = at30.sample
    assert (s.pending_jobs, s.pending_slots, s.running_jobs) == (3, 10, 0)
    assert s.oldest_pending_seconds == 30.0
    assert (s.busy_hosts, s.idle_hosts) == ((), ())
    assert [n.ready for n in at30.nodes] == [False, False]
    at150 = next(inp for inp in seen if inp.now == 150.0)  # both up (boots <= 108 s)
    s = at150.sample
    # The first node up takes the 3-core job and then the 1-core one (the 6-core job, older,
    # does not fit its last slot); the second node's 4 free slots are still too few for it.
    assert (s.pending_jobs, s.pending_slots, s.running_jobs) == (1, 6, 2)
    assert s.oldest_pending_seconds == 145.0
    first_up = min((0, 1), key=lambda k: boots(3, 2)[k])
    assert s.busy_hosts == (at150.nodes[first_up].hostname,)
    assert s.idle_hosts == (at150.nodes[1 - first_up].hostname,)


def test_a_busy_node_chosen_for_removal_is_an_error():
    def remove_everything(inp: QueueInput) -> PolicyDecision:
        if not inp.nodes:
            return decision(launch=1)
        return decision(remove=tuple(n.instance_id for n in inp.nodes if n.ready))

    with pytest.raises(AssertionError, match="running"):
        bench.replay([Job(0, 1000, 1)], remove_everything, slots=4, boot=90.0, seed=1, poll=30.0)


def test_ours_launches_for_the_queue_and_removes_idle_nodes_only():
    # 8 cores on 4-slot nodes: two nodes at the first poll. The first one up takes the long
    # job, the other the short one; that one goes idle_seconds after it ends, the long one's
    # node stays to the end.
    jobs = [Job(0, 2000, 4), Job(0, 100, 4)]
    ours = QueuePolicy(min_nodes=0, max_nodes=4, node_slots=4, idle_seconds=300.0)
    out = bench.replay(jobs, ours.decide, slots=4, boot=90.0, seed=2, poll=30.0)
    early, late = sorted(boots(2, 2))
    assert out.waits == [pytest.approx(early), pytest.approx(late)]
    assert (out.launches, out.peak) == (2, 2)
    assert out.end == pytest.approx(early + 2000.0)
    # the short job ends at late + 100; its node goes at the first poll >= 300 s idle later
    short_gone = 30.0 * -(-(late + 100.0 + 300.0) // 30.0)
    assert out.node_seconds == pytest.approx(out.end + short_gone)


def test_starcluster_is_called_again_when_its_node_is_up():
    calls: list[float] = []
    sc = StarClusterQueuePolicy(max_nodes=4, node_slots=4)

    def watch(inp: QueueInput) -> PolicyDecision:
        calls.append(inp.now)
        return sc.decide(inp)

    bench.replay([Job(0, 500, 4)], watch, slots=4, boot=90.0, seed=5, poll=60.0, wake_on_ready=True)
    (boot,) = boots(5, 1)
    assert calls[:3] == [0.0, pytest.approx(boot), pytest.approx(boot + 60.0)]


def test_main_prints_a_row_per_policy_with_medians_over_the_seeds(tmp_path, capsys):
    (tmp_path / "kth_sp2_1996_first21d.csv").write_text(
        "submit_time_s,run_time_s,cores,mem_mb\n0,600,4,\n60,1200,8,\n4000,300,200,\n"
    )
    assert bench.main(["--traces", str(tmp_path), "--seeds", "2"]) == 0
    out = capsys.readouterr().out
    assert "2 jobs (1 dropped" in out
    rows: dict[str, str] = {}
    for line in out.splitlines():
        if line.startswith("  "):
            rows.setdefault(line.split()[0], line)
    for name in ("ours", "ours*", "starcluster/best", "starcluster/best*", "starcluster"):
        assert name in rows
    # settings from the other trace, in-sample ones marked with *
    assert rows["ours"].split()[1] == "llnl" and rows["ours*"].split()[1] == "kth"
    assert rows["starcluster"].split()[1] == "defaults"
    assert "fixed" in rows and "bound" in rows
    assert "ours vs starcluster/best (medians): cheaper on" in out
    assert "llnl_thunder_2007_first21d.csv: missing, skipped" in out


def test_the_tuned_settings_are_the_policies_own_keywords():
    for trace in bench.TUNED.values():
        QueuePolicy(min_nodes=0, max_nodes=1, **trace["ours"])
        StarClusterQueuePolicy(max_nodes=1, node_slots=1, **trace["starcluster"])


def test_a_summary_gives_the_median_and_the_spread():
    assert bench.spread([3.0, 1.0, 2.0], ".1f") == "2.0 [1.0-3.0]"
    assert bench.spread([1.0, 1.0], ".1f") == "1.0"
