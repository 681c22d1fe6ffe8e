"""The running jobs qstat shows, as QueueSample.running: each task once, with its age (from its
start time in Grid Engine's local time) and its slots, a parallel job's summed over its hosts."""

from __future__ import annotations

import datetime as dt

from controller.gridengine.sge import parse_qstat, queue_sample

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
