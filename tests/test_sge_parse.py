"""controller.gridengine.sge on real Grid Engine 8.1.9 output (captured from
tests.harness.gridengine)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from controller.gridengine.sge import (
    SgeParseError,
    complex_names,
    count_tasks,
    ec2_hostname,
    exec_host_text,
    format_memory,
    list_names,
    parse_memory,
    parse_qstat,
    queue_sample,
    with_consumable,
)

DATA = Path(__file__).parent / "data" / "sge"


def read(name: str) -> str:
    return (DATA / name).read_text()


def test_mixed_queue_counts_only_jobs_that_wait_for_capacity():
    # qstat -f -xml -r -u '*' with: 2 running (one an array task), a 4-slot PE job asking
    # 100M per slot, an array 1-3 asking 1G, an array 3-9:2 asking nothing, an Eqw and an hqw job.
    snapshot = parse_qstat(read("qstat_f_r_mixed.xml"))
    sample = queue_sample(snapshot, at=12.5, now=dt.datetime(2026, 11, 22, 0, 29, 58))
    assert sample.at == 12.5
    assert sample.source == "sge"
    assert sample.pending_jobs == 1 + 3 + 4
    assert sample.pending_slots == 4 + 3 + 4
    assert sample.pending_mem_mb == pytest.approx(4 * 100 + 3 * 1024)
    assert sample.running_jobs == 2
    # the oldest waiting job (the array submitted at 00:28:28); the held one is older but held
    assert sample.oldest_pending_seconds == pytest.approx(90.0)
    assert sample.busy_hosts == ("vm",)
    assert sample.idle_hosts == ()


def test_pending_job_details():
    jobs = {job.job_id: job for job in parse_qstat(read("qstat_f_r_mixed.xml")).pending}
    assert jobs["6"].slots == 4 and jobs["6"].tasks == 1
    assert jobs["6"].mem_bytes == 100 * 1024**2
    assert jobs["8"].tasks == 4 and jobs["8"].mem_bytes == 0
    assert jobs["7"].state == "Eqw" and not jobs["7"].waits_for_capacity
    assert jobs["5"].state == "hqw" and not jobs["5"].waits_for_capacity
    assert jobs["4"].submitted == dt.datetime(2026, 11, 22, 0, 28, 28)


def test_host_without_execd_is_idle_and_transferring_job_runs():
    snapshot = parse_qstat(read("qstat_f_r_unknown_host.xml"))
    unknown = next(i for i in snapshot.instances if i.host == "ip-127-0-20-5")
    assert (unknown.queue, unknown.state, unknown.slots_total) == ("all.q", "au", 2)
    sample = queue_sample(snapshot, at=0.0, now=dt.datetime(2026, 11, 22, 0, 29, 30))
    assert sample.busy_hosts == ("vm",)
    assert sample.idle_hosts == ("ip-127-0-20-5",)
    assert sample.running_jobs == 1  # job 2 in state t (being transferred) holds its slot
    assert sample.pending_jobs == 3 and sample.pending_mem_mb == pytest.approx(3 * 1024)


def test_empty_queue():
    sample = queue_sample(
        parse_qstat(read("qstat_f_r_empty.xml")), at=1.0, now=dt.datetime(2026, 1, 1)
    )
    assert (sample.pending_jobs, sample.pending_slots, sample.running_jobs) == (0, 0, 0)
    assert sample.oldest_pending_seconds == 0.0
    assert sample.pending_mem_mb == 0.0
    assert sample.idle_hosts == ("vm",) and sample.busy_hosts == ()


def test_clock_behind_grid_engine_never_gives_a_negative_wait():
    snapshot = parse_qstat(read("qstat_f_r_mixed.xml"))
    sample = queue_sample(snapshot, at=0.0, now=dt.datetime(2020, 1, 1))
    assert sample.oldest_pending_seconds == 0.0


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "not XML"),
        ("error: commlib error: got select error", "not XML"),
        ("<qhost></qhost>", "expected <job_info>"),
        (
            "<job_info><queue_info><Queue-List><name>all.q</name></Queue-List></queue_info>"
            "</job_info>",
            "queue@host",
        ),
        (
            "<job_info><job_info><job_list state='pending'><JB_job_number>1</JB_job_number>"
            "<tasks>x</tasks></job_list></job_info></job_info>",
            "array task range",
        ),
    ],
)
def test_unreadable_output_raises(text, reason):
    with pytest.raises(SgeParseError, match=reason):
        parse_qstat(text)


@pytest.mark.parametrize(
    ("text", "num_bytes"),
    [
        ("1500M", 1500 * 1024**2),
        ("1G", 1024**3),
        ("1.5G", 1.5 * 1024**3),
        ("512k", 512_000),
        ("512K", 512 * 1024),
        ("2m", 2_000_000),
        ("1048576", 1048576),
    ],
)
def test_parse_memory(text, num_bytes):
    assert parse_memory(text) == pytest.approx(num_bytes)


def test_parse_memory_rejects_garbage():
    with pytest.raises(SgeParseError):
        parse_memory("lots")


def test_format_memory_rounds_down_to_mebibytes():
    assert format_memory(4 * 1024**3) == "4096M"
    assert format_memory(2_000_000_000) == "1907M"


@pytest.mark.parametrize(
    ("spec", "count"),
    [("1-3:1", 3), ("3-9:2", 4), ("5", 1), ("1,5-7:1", 4), ("1-10:3", 4)],
)
def test_count_tasks(spec, count):
    assert count_tasks(spec) == count


def test_ec2_hostname():
    assert ec2_hostname("10.0.1.23") == "ip-10-0-1-23"
    assert ec2_hostname("127.0.20.5") == "ip-127-0-20-5"
    with pytest.raises(ValueError, match="not an IPv4 address"):
        ec2_hostname("fe80::1")


def test_exec_host_text():
    text = exec_host_text("ip-10-0-1-23", {"mem_requested": "4096M"})
    lines = dict(line.split(None, 1) for line in text.splitlines())
    assert lines["hostname"] == "ip-10-0-1-23"
    assert lines["complex_values"] == "mem_requested=4096M"
    assert lines["load_scaling"] == "NONE"


def test_with_consumable_adds_mem_requested_once():
    default = read("qconf_sc_default.txt")
    assert "mem_requested" not in complex_names(default)
    assert "h_vmem" in complex_names(default)
    updated = with_consumable(default)
    assert updated is not None
    assert updated.endswith("mem_requested mem_requested MEMORY <= YES YES 0 0\n")
    assert updated.startswith(default.rstrip("\n"))
    assert with_consumable(updated) is None
    assert with_consumable(read("qconf_sc_with_mem_requested.txt")) is None


def test_list_names_ignores_grid_engines_empty_messages():
    assert list_names("vm\nip-10-0-1-23\n") == {"vm", "ip-10-0-1-23"}
    assert list_names("no execution host defined\n") == set()
