"""The server-status parser on pages as Apache 2.4 writes them, and rates from counter deltas."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controller.gbrowse.apache_status import (
    RateTracker,
    StatusParseError,
    parse_server_status,
    surely_at_least,
)

# Apache 2.4.71 (mpm_event) right after start: bare server name first, Uptime 0, no ReqPerSec.
JUST_STARTED = """127.0.0.1
ServerVersion: Apache/2.4.71 (Debian)
ServerMPM: event
Server Built: 2026-11-12T08:58:41
CurrentTime: Sunday, 22-Nov-2026 00:17:07 UTC
RestartTime: Sunday, 22-Nov-2026 00:17:07 UTC
ParentServerConfigGeneration: 1
ParentServerMPMGeneration: 0
ServerUptimeSeconds: 0
ServerUptime:
Load1: 0.05
Load5: 0.08
Load15: 0.03
Total Accesses: 0
Total kBytes: 0
Total Duration: 0
CPUUser: 0
CPUSystem: 0
CPUChildrenUser: 0
CPUChildrenSystem: 0
Uptime: 0
BusyWorkers: 1
GracefulWorkers: 0
IdleWorkers: 74
Processes: 3
Stopping: 0
ConnsTotal: 0
ConnsAsyncWaitIO: 0
ConnsAsyncWriting: 0
ConnsAsyncKeepAlive: 0
ConnsAsyncClosing: 0
Scoreboard: ________________________W_______________________________..............
"""

# Later: ReqPerSec present, values without a leading zero.
RUNNING = """gbrowse.example.org
ServerVersion: Apache/2.4.71 (Debian)
ServerMPM: event
ServerUptimeSeconds: 4211
ServerUptime: 1 hour 10 minutes 11 seconds
Total Accesses: 345
Total kBytes: 1204
Total Duration: 2311
CPULoad: .0819
Uptime: 4211
ReqPerSec: .0819283
BytesPerSec: 292.78
BytesPerReq: 3573.61
DurationPerReq: 6.69855
BusyWorkers: 7
GracefulWorkers: 0
IdleWorkers: 68
Processes: 3
Scoreboard: __W_W__RR_____W.....
"""


def test_parses_a_page_right_after_start() -> None:
    status = parse_server_status(JUST_STARTED)
    assert status.total_accesses == 0
    assert status.busy_workers == 1
    assert status.idle_workers == 74
    assert status.uptime == 0
    assert "ReqPerSec" not in status.fields
    assert status.fields["ServerVersion"] == "Apache/2.4.71 (Debian)"
    assert status.fields["ServerUptime"] == ""
    # The bare server name is not a field.
    assert "127.0.0.1" not in status.fields


def test_parses_a_running_page_with_values_lacking_a_leading_zero() -> None:
    status = parse_server_status(RUNNING)
    assert status.total_accesses == 345
    assert status.busy_workers == 7
    assert status.uptime == 4211
    assert float(status.fields["CPULoad"]) == pytest.approx(0.0819)
    # Times in values keep their own colons.
    assert parse_server_status(JUST_STARTED).fields["Server Built"] == "2026-11-12T08:58:41"


def test_windows_line_endings_and_missing_worker_lines_are_fine() -> None:
    status = parse_server_status("host\r\nTotal Accesses: 12\r\nUptime: 3\r\n")
    assert status.total_accesses == 12
    assert status.busy_workers is None


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("", "Total Accesses"),
        ("<html><head><title>Apache Status</title></head><body>busy: 3</body></html>", "?auto"),
        ("127.0.0.1\nUptime: 5\nBusyWorkers: 1\n", "ExtendedStatus On"),
        ("127.0.0.1\nTotal Accesses: many\n", "'Total Accesses' is not an integer"),
        ("127.0.0.1\nTotal Accesses: 3\nBusyWorkers: -1\n", "'BusyWorkers' is negative"),
        ("127.0.0.1\nTotal Accesses: 3\nBusyWorkers: 2.5\n", "'BusyWorkers' is not an integer"),
    ],
)
def test_garbled_pages_are_refused_with_a_reason(body: str, message: str) -> None:
    with pytest.raises(StatusParseError, match=message.replace("?", r"\?")):
        parse_server_status(body)


# rates


def test_the_first_sample_is_only_a_baseline() -> None:
    tracker = RateTracker(window_seconds=120)
    assert tracker.observe(0.0, 1000) is None


def test_idle_server_reads_zero_although_each_fetch_counts() -> None:
    tracker = RateTracker(window_seconds=120)
    tracker.observe(0.0, 10)
    for i in range(1, 6):
        rates = tracker.observe(30.0 * i, 10 + i)  # only our own fetches were counted
        assert rates is not None
        assert rates.rps == 0.0
        assert rates.window_rps == 0.0


def test_rate_over_the_last_interval_excludes_our_fetch() -> None:
    tracker = RateTracker(window_seconds=120)
    tracker.observe(0.0, 100)
    rates = tracker.observe(30.0, 100 + 60 + 1)  # 60 requests of others and our previous fetch
    assert rates is not None
    assert rates.rps == pytest.approx(2.0)
    assert rates.window_rps == pytest.approx(2.0)


def test_window_rate_smooths_over_the_window_and_forgets_older_samples() -> None:
    tracker = RateTracker(window_seconds=60)
    total = 0
    tracker.observe(0.0, total)
    per_interval = [300, 0, 0, 0]  # a burst, then quiet; interval 30 s
    results = []
    for i, others in enumerate(per_interval, start=1):
        total += others + 1
        results.append(tracker.observe(30.0 * i, total))
    assert [r.rps for r in results] == pytest.approx([10.0, 0.0, 0.0, 0.0])
    # At t=60 the window still holds the burst (300 over 60 s); by t=90 only the quiet part.
    assert [r.window_rps for r in results] == pytest.approx([10.0, 5.0, 0.0, 0.0])


def test_window_younger_than_window_seconds_uses_what_it_has() -> None:
    tracker = RateTracker(window_seconds=600)
    tracker.observe(0.0, 0)
    tracker.observe(10.0, 11)  # 10 others
    rates = tracker.observe(20.0, 42)  # 30 others
    assert rates is not None
    assert rates.rps == pytest.approx(3.0)
    assert rates.window_rps == pytest.approx(2.0)


def test_counter_going_backwards_rebaselines_without_a_negative_rate() -> None:
    tracker = RateTracker(window_seconds=120)
    tracker.observe(0.0, 5000)
    assert tracker.observe(30.0, 5061) is not None
    assert tracker.observe(60.0, 3) is None  # Apache restarted
    rates = tracker.observe(90.0, 3 + 30 + 1)
    assert rates is not None
    assert rates.rps == pytest.approx(1.0)
    # The window starts again at the restart; the old samples do not leak into it.
    assert rates.window_rps == pytest.approx(1.0)


def test_reset_after_a_lost_sensor_makes_the_next_sample_a_baseline() -> None:
    tracker = RateTracker(window_seconds=120)
    tracker.observe(0.0, 0)
    tracker.reset()
    assert tracker.observe(100.0, 500) is None
    rates = tracker.observe(130.0, 531)
    assert rates is not None
    assert rates.rps == pytest.approx(1.0)


def test_a_sample_with_no_time_passed_gives_no_rate_and_changes_nothing() -> None:
    tracker = RateTracker(window_seconds=120)
    tracker.observe(10.0, 0)
    assert tracker.observe(10.0, 50) is None
    rates = tracker.observe(20.0, 11)
    assert rates is not None
    assert rates.rps == pytest.approx(1.0)


def test_window_must_be_positive() -> None:
    with pytest.raises(ValueError, match="window_seconds"):
        RateTracker(window_seconds=0)


@given(
    steps=st.lists(
        st.tuples(st.floats(min_value=0.01, max_value=300), st.integers(-1000, 10_000)),
        min_size=1,
        max_size=40,
    )
)
def test_rates_are_never_negative_and_bounded_by_what_was_counted(
    steps: list[tuple[float, int]],
) -> None:
    tracker = RateTracker(window_seconds=120)
    at, total = 0.0, 1000
    tracker.observe(at, total)
    for dt, delta in steps:
        at += dt
        total = max(0, total + delta)
        rates = tracker.observe(at, total)
        if rates is None:
            continue
        assert rates.rps >= 0.0
        assert rates.window_rps >= 0.0
        assert rates.rps <= max(0, delta) / dt + 1e-9


# readings every second, a rate over the poll


def test_second_readings_give_the_rate_over_the_poll() -> None:
    tracker = RateTracker(window_seconds=120, recent_seconds=6)
    total = 0
    tracker.observe(0.0, total)
    rates = None
    for i, others in enumerate([3, 1, 5, 2, 4, 3, 3, 3], start=1):  # a steady, noisy 3 req/s
        total += others + 1
        rates = tracker.observe(float(i), total)
    assert rates is not None
    assert rates.rps == pytest.approx(20 / 6)  # the last six seconds: 5+2+4+3+3+3


def test_a_burst_counts_within_one_reading() -> None:
    tracker = RateTracker(window_seconds=120, recent_seconds=6)
    total = 0
    tracker.observe(0.0, total)
    for i in range(1, 7):  # idle
        total += 1
        tracker.observe(float(i), total)
    total += 20 + 1  # 20 requests in the next second
    rates = tracker.observe(7.0, total)
    assert rates is not None
    assert rates.rps == pytest.approx(20 - 2 * 20**0.5)  # about 11: surely a burst
    assert rates.rps > 20 / 6  # more than the poll's average says


def test_a_noisy_second_does_not_look_like_a_burst() -> None:
    # 3 req/s for a poll, then a second with 7 (a one-in-a-hundred second at that rate)
    tracker = RateTracker(window_seconds=120, recent_seconds=6)
    total = 0
    tracker.observe(0.0, total)
    for i in range(1, 7):
        total += 3 + 1
        tracker.observe(float(i), total)
    total += 7 + 1
    rates = tracker.observe(7.0, total)
    assert rates is not None
    assert rates.rps == pytest.approx((5 * 3 + 7) / 6)  # the poll's rate; the second adds nothing


def test_surely_at_least_is_below_the_reading_and_zero_for_a_few() -> None:
    assert surely_at_least(0, 1.0) == 0.0
    assert surely_at_least(4, 1.0) == 0.0
    assert surely_at_least(100, 2.0) == pytest.approx(40.0)
