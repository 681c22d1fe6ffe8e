"""controller.slurm.slurm_queue on real Slurm 22.05 output (captured from tests.harness.slurm),
on the shapes later Slurm releases write, and fuzzed: it reads or says why."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.slurm.slurm_queue import (
    SlurmParseError,
    count_tasks,
    find_node,
    parse_sinfo,
    parse_squeue,
    queue_sample,
)

DATA = Path(__file__).parent / "data" / "slurm"
SUBMITTED = 1796532123  # the submit time of every job in squeue_mixed.json


def read(name: str) -> str:
    return (DATA / name).read_text()


def test_mixed_queue_counts_only_jobs_that_wait_for_capacity():
    # squeue --json with: job 1 and array task 3_1 running (1 CPU, 300M each); job 2 pending on
    # Resources (2 CPUs, 200M per CPU); array 3_[2-5] pending (1 CPU, 300M per task); job 4 held;
    # job 5 pending on PartitionConfig (2 nodes, 4 CPUs, no memory asked: nodes would help).
    jobs = parse_squeue(read("squeue_mixed.json"))
    nodes = parse_sinfo(read("sinfo_allocated.json"))
    sample = queue_sample(jobs, nodes, at=7.5, now=SUBMITTED + 60)
    assert sample.at == 7.5
    assert sample.source == "slurm"
    assert sample.pending_jobs == 1 + 4 + 1
    assert sample.pending_slots == 2 + 4 * 1 + 4
    assert sample.pending_mem_mb == pytest.approx(2 * 200 + 4 * 300)
    assert sample.running_jobs == 2
    assert sample.oldest_pending_seconds == pytest.approx(60.0)
    assert sample.busy_hosts == ("ip-127-0-20-5",)
    assert sample.idle_hosts == ()
    assert sample.free_slots == 0
    assert [w[0] for w in sample.waiting] == ["2", "3_[2-5]", "5"]
    assert sample.waiting[1] == ("3_[2-5]", 60.0, 1, 4)
    assert sample.running == (("1", 59.0, 1), ("3_1", 41.0, 1))


def test_job_details():
    jobs = {job.job_id: job for job in parse_squeue(read("squeue_mixed.json"))}
    assert jobs["4"].reason == "JobHeldUser" and not jobs["4"].waits_for_capacity
    assert jobs["2"].mem_mb == 400 and jobs["2"].cpus == 2
    assert jobs["5"].mem_mb == 0 and jobs["5"].waits_for_capacity
    assert jobs["3_1"].running and not jobs["3_1"].pending
    assert jobs["3_[2-5]"].tasks == 4


def test_cancelled_jobs_are_neither_pending_nor_running():
    sample = queue_sample(parse_squeue(read("squeue_cancelled.json")), (), at=0, now=SUBMITTED)
    assert (sample.pending_jobs, sample.running_jobs, sample.oldest_pending_seconds) == (0, 0, 0)
    assert sample.free_slots == 0 and sample.waiting == () and sample.running == ()


def test_drained_nodes_take_no_job_and_count_busy_only_while_allocated():
    draining = parse_sinfo(read("sinfo_draining.json"))
    drained = parse_sinfo(read("sinfo_drained_idle.json"))
    assert draining[0].busy and not draining[0].takes_jobs
    assert not drained[0].busy and not drained[0].takes_jobs
    sample = queue_sample((), drained, at=0, now=0)
    assert sample.idle_hosts == ("ip-127-0-20-5",) and sample.free_slots == 0
    assert find_node(drained, "ip-127-0-20-5") is drained[0]
    assert find_node(drained, "ip-127-0-20-6") is None


def test_later_slurm_shapes_are_read():
    # openapi v0.0.39+: numbers wrapped, states as lists.
    def number(n):
        return {"set": True, "infinite": False, "number": n}

    unset = {"set": False, "infinite": False, "number": 0}
    squeue = {
        "jobs": [
            {
                "job_id": 9,
                "array_job_id": number(9),
                "array_task_id": unset,
                "array_task_string": "1-9:2%2",
                "job_state": ["PENDING"],
                "state_reason": "Resources",
                "cpus": number(2),
                "node_count": number(1),
                "memory_per_cpu": unset,
                "memory_per_node": number(1024),
                "submit_time": number(100),
            }
        ],
        "errors": [],
    }
    sinfo = {"nodes": [{"name": "n1", "state": ["IDLE", "DYNAMIC_NORM"], "cpus": 4}]}
    sample = queue_sample(
        parse_squeue(json.dumps(squeue)), parse_sinfo(json.dumps(sinfo)), at=0, now=130
    )
    assert (sample.pending_jobs, sample.pending_slots, sample.pending_mem_mb) == (5, 10, 5120)
    assert sample.oldest_pending_seconds == 30
    assert sample.free_slots == 4 and sample.idle_hosts == ("n1",)


def test_time_limits_of_running_jobs_as_slurm_22_05_writes_them():
    # Recorded on the test Slurm (its partition has neither DefaultTime nor MaxTime) with
    # `sbatch --time=5` (job 1), no --time (2), `--time=infinite` (3), all running, and
    # `--time=2` (4, pending): 22.05 writes minutes, a year (525600) for no limit set, and null
    # for INFINITE.
    jobs = {job.job_id: job for job in parse_squeue(read("squeue_time_limits.json"))}
    assert [jobs[j].time_limit for j in "1234"] == [300.0, None, None, 120.0]
    sample = queue_sample(tuple(jobs.values()), (), at=0, now=1796541624)
    assert sample.running == (("1", 3.0, 1), ("2", 3.0, 1), ("3", 3.0, 1))
    assert sample.running_limits == (("1", 297.0),)


def test_time_limits_as_slurm_23_02_writes_them():
    def job(job_id, time_limit, state="RUNNING", start=1000):
        return {
            "job_id": job_id,
            "job_state": [state],
            "cpus": {"set": True, "infinite": False, "number": 2},
            "start_time": {"set": True, "infinite": False, "number": start},
            "time_limit": time_limit,
        }

    squeue = {
        "jobs": [
            job(1, {"set": True, "infinite": False, "number": 5}),
            job(2, {"set": True, "infinite": True, "number": 0}),  # --time=infinite
            job(3, {"set": False, "infinite": False, "number": 0}),  # no limit set
            job(4, {"set": True, "infinite": False, "number": 1}),  # past its limit: 0 left
            job(5, {"set": True, "infinite": False, "number": 5}, "SUSPENDED"),  # clock stopped
            job(6, 4294967295),  # INFINITE as a raw number
            job(7, 10, start=0),  # start not shown: all of it left
            job(8, 5, "PENDING", start=0),  # not running: no slots to free
        ]
    }
    jobs = parse_squeue(json.dumps(squeue))
    assert [j.time_limit for j in jobs] == [300.0, None, None, 60.0, 300.0, None, 600.0, 300.0]
    sample = queue_sample(jobs, (), at=0, now=1100)
    assert sample.running_limits == (("1", 200.0), ("4", 0.0), ("7", 600.0))
    assert len(sample.running) == 7


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("", "not JSON"),
        ("[]", "not a JSON object"),
        ('{"jobs": 3}', "no list of objects under 'jobs'"),
        ('{"errors": [{"error": "Unable to contact slurm controller"}]}', "Unable to contact"),
        ('{"jobs": [{"cpus": 1}]}', "job_id is missing"),
        ('{"jobs": [{"job_id": 3, "cpus": -1}]}', "job 3: cpus is not a whole number >= 0"),
        ('{"jobs": [{"job_id": 3, "job_state": 7}]}', "job 3: job_state is not a state"),
        (
            '{"jobs": [{"job_id": 3, "array_job_id": 3, "array_task_string": "x"}]}',
            "not an array task range: 'x'",
        ),
    ],
)
def test_unreadable_squeue_says_what_is_wrong(text, words):
    with pytest.raises(SlurmParseError, match=words):
        parse_squeue(text)


def test_an_unreadable_time_limit_is_no_limit_not_a_lost_sensor():
    (job,) = parse_squeue('{"jobs": [{"job_id": 3, "job_state": "RUNNING", "time_limit": "1:00"}]}')
    assert job.time_limit is None


def test_unreadable_sinfo_says_what_is_wrong():
    with pytest.raises(SlurmParseError, match="node n1: cpus is missing"):
        parse_sinfo('{"nodes": [{"name": "n1", "state": "idle"}]}')
    with pytest.raises(SlurmParseError, match="has no name"):
        parse_sinfo('{"nodes": [{"cpus": 1}]}')


@pytest.mark.parametrize(
    ("spec", "count"), [("1-5", 5), ("1-9:2", 5), ("1,3,5-7", 5), ("2-5%2", 4), ("7", 1)]
)
def test_count_tasks(spec, count):
    assert count_tasks(spec) == count


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 2**40) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=12,
)
KEYS = st.sampled_from(
    [
        "job_id",
        "array_job_id",
        "array_task_id",
        "array_task_string",
        "job_state",
        "state_reason",
        "cpus",
        "node_count",
        "memory_per_cpu",
        "memory_per_node",
        "submit_time",
        "start_time",
        "name",
        "state",
        "state_flags",
        "alloc_cpus",
        "time_limit",
    ]
)
RECORDS = st.lists(st.dictionaries(KEYS, JSON_VALUES, max_size=10), max_size=4)
DOCUMENTS = st.one_of(
    st.text(max_size=40),
    st.fixed_dictionaries({"jobs": RECORDS, "nodes": RECORDS}).map(json.dumps),
    JSON_VALUES.map(json.dumps),
)


@settings(max_examples=300, deadline=None)
@given(text=DOCUMENTS)
def test_fuzz_reads_or_says_why(text):
    for parse in (parse_squeue, parse_sinfo):
        try:
            parsed = parse(text)
        except SlurmParseError as exc:
            assert str(exc)
            continue
        if parse is parse_squeue:
            queue_sample(parsed, (), at=0, now=0)
        else:
            queue_sample((), parsed, at=0, now=0)
