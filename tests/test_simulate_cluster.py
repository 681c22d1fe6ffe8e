"""`controller simulate --cluster`: batch traces through the daemon's node pool on SimCloud."""

from __future__ import annotations

import json
import random

import pytest

from controller.cli import main
from controller.config.reader import load_config
from controller.simulation.cluster_replay import simulate_cluster
from controller.simulation.job_trace import Job, JobTraceError, read_jobs
from controller.simulation.queue_model import JobQueue, Model

CONFIG = """
[controller]
fleet = "simtest"

[scaling]
boot_seconds = 90

[simulate]
spot_price = 0.05

[cluster.small]
max_nodes = 4
node_slots = 4
idle_seconds = 300

[cluster.warm]
extends = "small"
min_nodes = 2
"""

# 13 jobs over two hours: a burst wider than one node, singles, a quiet hour, a late pair
JOBS = """submit_time_s,run_time_s,cores,mem_mb
0,600,4,
0,300,2,
10,1200,8,512
60,60,1,
65,30,1,
400,900,3,
420,100,1,
900,50,2,
1800,200,4,
1805,200,4,
1810,10,1,
5400,120,2,
5460,60,4,
"""


def write(path, text: str) -> str:
    path.write_text(text)
    return str(path)


def run_json(capsys, *argv: str) -> dict:
    assert main(["simulate", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.fixture
def files(tmp_path):
    return write(tmp_path / "c.toml", CONFIG), write(tmp_path / "jobs.csv", JOBS)


# the command


def test_the_command_runs_every_job_and_prices_the_nodes(files, capsys):
    config, jobs = files
    r = run_json(capsys, "-c", config, "--cluster", "small", "--trace", jobs)
    assert (r["jobs"], r["left_out"], r["never_started"], r["restarts"]) == (13, 0, 0, 0)
    assert (r["cluster"], r["policy"], r["seed"]) == ("small", "ours", 1)
    w = r["waits"]
    # nothing is up at the first submit: the first jobs wait for a boot (90 s +- 20 %)
    assert 72.0 <= w["max"]
    assert 0.0 <= w["p50"] <= w["p95"] <= w["max"]
    assert 0.0 < w["mean"] <= w["max"]
    assert r["node_hours"] > r["packed_node_hours"] > 0
    assert r["cost"] == pytest.approx(r["node_hours"] * 0.05)
    assert 2 <= r["launches"] and 1 <= r["peak_nodes"] <= 4
    assert 0 <= r["never_ran"] < r["launches"]
    assert r["terminations"] >= 1  # the quiet hour: idle nodes went after idle_seconds
    assert r["end_seconds"] >= 5460 + 60


def test_the_text_report(files, capsys):
    config, jobs = files
    assert main(["simulate", "-c", config, "--cluster", "small", "--trace", jobs]) == 0
    out = capsys.readouterr().out
    assert "13 jobs" in out
    assert "policy ours (seed 1); 0..4 nodes of 4 slot(s)" in out
    for line in ("cost         $", "waits        mean ", "churn        "):
        assert line in out
    assert "never ran a job" in out


def test_same_seed_same_figures(files, capsys):
    config, jobs = files
    args = ("-c", config, "--cluster", "small", "--trace", jobs)
    first = run_json(capsys, *args, "--seed", "7")
    assert run_json(capsys, *args, "--seed", "7") == first
    other = run_json(capsys, *args, "--seed", "8")
    assert other["node_hours"] != first["node_hours"]  # boot times come from the seed


def test_the_starcluster_baseline(files, capsys):
    config, jobs = files
    r = run_json(
        capsys, "-c", config, "--cluster", "small", "--trace", jobs, "--policy", "starcluster"
    )
    assert (r["policy"], r["poll_seconds"], r["never_started"]) == ("starcluster", 60.0, 0)
    assert r["node_hours"] > 0


def test_a_warm_cluster_starts_jobs_at_once(files, capsys):
    config, jobs = files
    r = run_json(capsys, "-c", config, "--cluster", "warm", "--trace", jobs)
    assert r["min_nodes"] == 2
    assert r["waits"]["p50"] == 0.0  # two nodes are up from the start
    assert r["never_started"] == 0


@pytest.mark.parametrize(
    ("argv", "problem"),
    [
        (
            ["--cluster", "nosuch"],
            "--cluster nosuch: no [cluster.nosuch] section (defined: small, warm)",
        ),
        (["--cluster", "small", "--policy", "gbrowse"], "--policy gbrowse: not a cluster policy"),
        (["--cluster", "small", "--timeline", "t.csv"], "--timeline is for load traces"),
    ],
)
def test_bad_arguments_get_one_line_and_exit_2(files, capsys, argv, problem):
    config, jobs = files
    assert main(["simulate", "-c", config, "--trace", jobs, *argv]) == 2
    err = capsys.readouterr()
    assert err.out == ""
    assert problem in err.err and len(err.err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (None, "cannot read the job trace"),
        ("submit_time_s,run_time_s,cores\n0,10,2\n5,x,1\n", ":3: run_time_s 'x' is not a number"),
        ("0,10,0\n", ":1: cores must be a whole number >= 1"),
        ("0,10\n", ":1: expected 3 or 4 fields"),
        ("when,how_long,cores\n0,10,1\n", ":1: the header has no submit_time_s column"),
        ("submit_time_s,run_time_s,cores,mem_mb\n", "no jobs"),
        ("0,10,17\n", "every job asks more slots than [cluster.small] max_nodes x node_slots = 16"),
    ],
)
def test_a_bad_trace_gets_one_line_naming_it(tmp_path, files, capsys, text, problem):
    config, _ = files
    trace = str(tmp_path / "bad.csv")
    if text is not None:
        write(tmp_path / "bad.csv", text)
    assert main(["simulate", "-c", config, "--cluster", "small", "--trace", trace]) == 2
    err = capsys.readouterr().err
    assert trace in err and problem in err and len(err.strip().splitlines()) == 1


# the replay


def test_an_idle_node_goes_after_idle_seconds_and_a_later_job_gets_a_new_one(tmp_path):
    config = load_config(write(tmp_path / "c.toml", CONFIG))
    small = next(c for c in config.clusters if c.name == "small")
    r = simulate_cluster([Job(0, 100, 4), Job(3000, 100, 4)], config, small)
    assert (r.launches, r.never_ran, r.terminations, r.restarts) == (2, 0, 1, 0)
    # The first node: launched at 0, up within 108 s and a poll, runs 100 s, then idle_seconds
    # and a poll: gone before 600 s. The second, launched at 3000, lives to the end.
    first_node = 600.0
    second_node = r.end_seconds - 3000.0
    assert r.node_hours * 3600 <= first_node + second_node
    assert r.waits.max <= 108 + 30


def test_jobs_wider_than_the_cluster_are_left_out(tmp_path):
    config = load_config(write(tmp_path / "c.toml", CONFIG))
    small = next(c for c in config.clusters if c.name == "small")
    r = simulate_cluster([Job(0, 100, 4), Job(10, 100, 40)], config, small)
    assert (r.jobs, r.left_out, r.never_started) == (1, 1, 0)


# the job trace and the queue model


def test_job_traces_read_with_or_without_header_and_sorted(tmp_path):
    assert read_jobs(write(tmp_path / "a.csv", "5,10,2\n0,3,1,256\n")) == [
        Job(0.0, 3.0, 1, 256.0),
        Job(5.0, 10.0, 2, 0.0),
    ]
    reordered = "cores,run_time_s,submit_time_s\n4,60,7\n"
    assert read_jobs(write(tmp_path / "b.csv", reordered)) == [Job(7.0, 60.0, 4)]
    with pytest.raises(JobTraceError, match="expected 3 fields"):
        read_jobs(write(tmp_path / "c.csv", "cores,run_time_s,submit_time_s\n4,60,7,1\n"))


def test_a_node_that_leaves_busy_sends_its_jobs_back_to_the_queue():
    model = Model(slots=4)
    queue = JobQueue([Job(0, 100, 6), Job(1, 100, 1)], model)
    a = model.join("i-a", "ip-a", 0.0, 0.0)
    model.join("i-b", "ip-b", 0.0, 0.0)
    queue.step(1.0)  # the wide job spans both nodes, the small one fills b
    assert (a.used, model.free, len(queue.running)) == (4, 1, 2)
    assert queue.evict("i-a") == 1  # the wide job had slots on a; the small one did not
    model.remove("i-a", 2.0)
    sample = queue.sample(2.0)
    assert (sample.pending_jobs, sample.pending_slots, sample.running_jobs) == (1, 6, 1)
    assert sample.oldest_pending_seconds == 2.0
    model.join("i-c", "ip-c", 2.0, 3.0)
    queue.dispatch(3.0)
    assert queue.pending == [] and queue.restarts == 1
    assert queue.waits[0] == 3.0  # from submit to the start of the run that completes
    queue.step(200.0)
    assert queue.finished()


def test_a_cluster_that_never_runs_a_job_stops_and_says_so(tmp_path, capsys):
    # a bid below the simulated spot price: the pool waits for the price, as it would on EC2
    config = write(
        tmp_path / "c.toml", CONFIG + '\n[cluster.cheap]\nextends = "small"\nspot_bid = 0.01\n'
    )
    jobs = write(tmp_path / "jobs.csv", JOBS)
    r = run_json(capsys, "-c", config, "--cluster", "cheap", "--trace", jobs)
    assert (r["never_started"], r["launches"], r["node_hours"]) == (13, 0, 0.0)
    assert main(["simulate", "-c", config, "--cluster", "cheap", "--trace", jobs]) == 0
    assert "stalled      13 job(s) never started" in capsys.readouterr().out


def test_progress_is_told_up_to_the_end(tmp_path):
    config = load_config(write(tmp_path / "c.toml", CONFIG))
    small = next(c for c in config.clusters if c.name == "small")
    seen: list[float] = []
    simulate_cluster(
        read_jobs(write(tmp_path / "j.csv", JOBS)), config, small, progress=seen.append
    )
    assert seen == sorted(seen) and seen[-1] == 1.0 and len(seen) > 2


def test_a_node_given_a_job_after_the_sample_is_kept_not_removed_under_it(tmp_path):
    # The daemon's sampler and pool drift apart: here each sample is 15 s older than the cycle
    # that decides on it, so a node idle in the sample may have been given a job since. The pool
    # disables it and looks again (ClusterNodeSetup's release): such a node is kept, and no job
    # ever runs twice. Without that check this trace restarts jobs.
    config = load_config(write(tmp_path / "c.toml", CONFIG + IDLE_AT_ONCE))
    quick = next(c for c in config.clusters if c.name == "quick")
    rng = random.Random(3)
    jobs, t = [], 0.0
    for _ in range(400):
        t += rng.expovariate(1 / 40.0)
        jobs.append(Job(t, rng.uniform(20, 200), rng.choice((1, 2, 4))))
    r = simulate_cluster(jobs, config, quick, sample_lag=15.0)
    assert r.never_started == 0
    assert r.removals_dropped > 0  # the stale samples did pick busy nodes
    assert r.restarts == 0
    fresh = simulate_cluster(jobs, config, quick, sample_lag=0.0)
    assert (fresh.restarts, fresh.removals_dropped) == (0, 0)  # fresh samples never do


IDLE_AT_ONCE = """
[cluster.quick]
extends = "small"
idle_seconds = 0
"""
