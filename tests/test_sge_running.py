"""The running jobs qstat shows, as QueueSample.running: each task once, with its age (from its
start time in Grid Engine's local time) and its slots, a parallel job's summed over its hosts;
and, as QueueSample.running_limits, the time left to those with a run-time limit (h_rt)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from controller.gridengine.sge import SgeParseError, parse_duration, parse_qstat, queue_sample

# qstat's side: a parallel job over two hosts is listed under each; its slots add up.
QSTAT = """<?xml version='1.0'?>
<job_info>
  <queue_info>
    <Queue-List>
      <name>all.q@ip-10-0-0-1</name><slots_used>8</slots_used><slots_resv>0</slots_resv>
      <slots_total>8</slots_total>
      <job_list state="running">
        <JB_job_number>11</JB_job_number><state>r</state>
        <JAT_start_time>2026-11-22T00:00:00</JAT_start_time><slots>8</slots>
      </job_list>
    </Queue-List>
    <Queue-List>
      <name>all.q@ip-10-0-0-2</name><slots_used>6</slots_used><slots_resv>0</slots_resv>
      <slots_total>8</slots_total>
      <job_list state="running">
        <JB_job_number>11</JB_job_number><state>r</state>
        <JAT_start_time>2026-11-22T00:00:00</JAT_start_time><slots>4</slots>
      </job_list>
      <job_list state="running">
        <JB_job_number>12</JB_job_number><state>r</state>
        <JAT_start_time>2026-11-22T00:09:30</JAT_start_time><slots>1</slots><tasks>3</tasks>
      </job_list>
      <job_list state="running">
        <JB_job_number>12</JB_job_number><state>r</state>
        <JAT_start_time>2026-11-22T00:09:50</JAT_start_time><slots>1</slots><tasks>4</tasks>
      </job_list>
    </Queue-List>
  </queue_info>
  <job_info/>
</job_info>
"""


def test_running_jobs_carry_their_age_and_slots_summed_over_their_hosts():
    sample = queue_sample(parse_qstat(QSTAT), at=0.0, now=dt.datetime(2026, 11, 22, 0, 10, 0))
    assert sample.running_jobs == 3
    assert sample.running == (("11", 600.0, 12), ("12.3", 30.0, 1), ("12.4", 10.0, 1))


def test_a_clock_behind_grid_engine_gives_no_negative_age():
    sample = queue_sample(parse_qstat(QSTAT), at=0.0, now=dt.datetime(2026, 11, 21, 23, 0, 0))
    assert [age for _, age, _ in sample.running] == [0.0, 0.0, 0.0]


# Run-time limits (-l h_rt): what is left of each, as QueueSample.running_limits.

DATA = Path(__file__).parent / "data" / "sge"


def test_h_rt_of_running_tasks_recorded_from_grid_engine():
    # Recorded on the test Grid Engine 5 s after `qsub -l h_rt=0:10:0` (job 1), `qsub -t 1-2
    # -l h_rt=0:1:30,mem_requested=100M` (job 2: task 1 runs, task 2 waits) and a job with no
    # limit (3, waiting); qstat shows h_rt in seconds.
    snapshot = parse_qstat((DATA / "qstat_f_r_h_rt.xml").read_text())
    assert [(t.job_id, t.task, t.limit_seconds) for t in snapshot.tasks] == [
        ("1", "", 600.0),
        ("2", "1", 90.0),
    ]
    sample = queue_sample(snapshot, at=0.0, now=dt.datetime(2026, 12, 6, 7, 17, 28))
    assert sample.running == (("1", 6.0, 1), ("2.1", 5.0, 1))
    assert sample.running_limits == (("1", 594.0), ("2.1", 85.0))
    assert sample.pending_mem_mb == 100.0  # the other hard requests are read as before


def test_no_h_rt_no_limit():
    snapshot = parse_qstat((DATA / "qstat_f_r_mixed.xml").read_text())
    sample = queue_sample(snapshot, at=0.0, now=dt.datetime(2026, 11, 22, 0, 30, 0))
    assert sample.running and sample.running_limits == ()


def test_a_limit_is_never_below_zero_and_a_parallel_job_has_it_once():
    with_limits = QSTAT.replace(
        "<slots>8</slots>", '<slots>8</slots><hard_request name="h_rt">0:10:0</hard_request>'
    ).replace("<slots>4</slots>", '<slots>4</slots><hard_request name="h_rt">600</hard_request>')
    sample = queue_sample(parse_qstat(with_limits), at=0.0, now=dt.datetime(2026, 11, 22, 0, 12, 0))
    assert sample.running[0] == ("11", 720.0, 12)
    assert sample.running_limits == (("11", 0.0),)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("600", 600.0), ("0:10:0", 600.0), ("1:30", 90.0), ("::30", 30.0), ("INFINITY", None)],
)
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "ten", "1:2:3:4", "-5", "1h"])
def test_an_unreadable_h_rt_is_no_limit_not_a_lost_sensor(text):
    with pytest.raises(SgeParseError, match="not a Grid Engine time value"):
        parse_duration(text)
    broken = QSTAT.replace(
        "<slots>8</slots>", f'<slots>8</slots><hard_request name="h_rt">{text}</hard_request>'
    )
    # ... but in qstat's output it only counts as no limit: the queue sensor keeps working.
    snapshot = parse_qstat(broken)
    assert all(task.limit_seconds is None for task in snapshot.tasks)
