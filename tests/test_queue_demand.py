"""controller.policy.queue_demand: what the pending jobs ask of new nodes, worked by hand."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from controller.gridengine.sge import parse_qstat, queue_sample
from controller.messages import QueueSample
from controller.policy.queue_demand import QueueDemand, queue_demand, sample_demand


def demand(waiting, *, capacity=100, hold=0.0, before=frozenset()) -> QueueDemand:
    return queue_demand(waiting, capacity=capacity, hold_seconds=hold, counted_before=before)


def test_every_job_that_fits_the_capacity_is_demand():
    d = demand([("1", 10.0, 4, 1), ("2", 5.0, 2, 3)])
    assert (d.keep_slots, d.launch_slots, d.too_wide) == (10, 10, 0)
    assert d.counted == {"1", "2"}


def test_a_job_wider_than_what_is_left_is_left_out_and_a_later_one_that_fits_counts():
    # 64 free, booting or launchable slots: 40 go to the first job; the 32-slot job cannot
    # start before running jobs end, the 8-slot one behind it can (no reservations).
    d = demand([("1", 0.0, 40, 1), ("2", 0.0, 32, 1), ("3", 0.0, 8, 1)], capacity=64)
    assert (d.keep_slots, d.launch_slots, d.too_wide) == (48, 48, 1)
    assert d.counted == {"1", "3"}


def test_array_tasks_count_as_far_as_they_fit():
    d = demand([("7", 0.0, 2, 10)], capacity=9)
    assert (d.keep_slots, d.too_wide) == (8, 6)
    assert d.counted == {"7"}


def test_young_jobs_keep_nodes_but_launch_none():
    d = demand([("1", 100.0, 4, 1), ("2", 59.0, 8, 1)], hold=60.0)
    assert (d.keep_slots, d.launch_slots) == (12, 4)


def test_a_job_counted_before_stays_counted_when_others_took_its_slots():
    # Counted at the last sample; since then later jobs took the free slots: it would be too
    # wide now, but the nodes meant for it are replaced rather than given up.
    d = demand([("1", 300.0, 64, 1)], capacity=16, before=frozenset({"1"}))
    assert (d.keep_slots, d.launch_slots, d.too_wide) == (64, 64, 0)
    assert d.counted == {"1"}
    assert demand([("1", 300.0, 64, 1)], capacity=16).too_wide == 1


def test_jobs_that_left_the_queue_are_forgotten():
    d = demand([("2", 0.0, 4, 1)], before=frozenset({"1"}))
    assert d.counted == {"2"}


def queue(pending_slots: int, waiting=()) -> QueueSample:
    return QueueSample(
        at=0.0,
        pending_jobs=len(waiting) or pending_slots,
        pending_slots=pending_slots,
        running_jobs=0,
        oldest_pending_seconds=0.0,
        waiting=tuple(waiting),
    )


def test_a_sensor_without_the_job_list_makes_every_pending_slot_demand():
    d = sample_demand(queue(500), capacity=10, hold_seconds=60.0)
    assert (d.keep_slots, d.launch_slots, d.too_wide) == (500, 500, 0)


def test_a_sample_with_the_job_list_is_walked():
    d = sample_demand(queue(12, [("1", 0.0, 12, 1)]), capacity=10, hold_seconds=0.0)
    assert (d.keep_slots, d.too_wide) == (0, 1)
    assert sample_demand(queue(0), capacity=10, hold_seconds=0.0) == QueueDemand(0, 0, 0)


# The sensor's side: real Grid Engine 8.1.9 qstat output (tests/data/sge, as test_sge_parse).

DATA = Path(__file__).parent / "data" / "sge"


def test_the_sample_lists_waiting_jobs_in_qstat_order_with_their_wait_slots_and_tasks():
    snapshot = parse_qstat((DATA / "qstat_f_r_mixed.xml").read_text())
    s = queue_sample(snapshot, at=0.0, now=dt.datetime(2026, 11, 22, 0, 29, 58))
    # the 4-slot PE job (highest priority), the array 1-3, the array 3-9:2; not Eqw nor hqw
    assert s.waiting == (("6", 9.0, 4, 1), ("4", 90.0, 1, 3), ("8", 8.0, 1, 4))
    assert s.free_slots == 0  # its one queue instance is full


def test_free_slots_leave_out_queue_instances_that_take_no_jobs():
    snapshot = parse_qstat((DATA / "qstat_f_r_unknown_host.xml").read_text())
    s = queue_sample(snapshot, at=0.0, now=dt.datetime(2026, 11, 22, 0, 29, 30))
    assert s.free_slots == 1  # vm: 1 of 2 used; the unknown host (state au) takes nothing
    assert s.waiting == (("4", 62.0, 1, 3),)
