"""The EC2 bench's latency part: from the mod_status reading that crosses a load-table row to the
RunInstances it brings reaching the EC2 proxy.

The load table has one row per step, row k at 6k requests/sec wanting k slaves, and the load
climbs a row at a time (to 6k + 2.5 requests/sec, the sampler's own fetches aside); each step
must bring one RunInstances before the next starts. Afterwards the readings are taken from
Apache's access log (bench/apache_log.py: each request's begin and end in microseconds) and
replayed through the controller's own RateTracker, built as LoadSampler builds it, which gives
the rate the controller took from each reading (checked against its `decision` log lines: the
same to a few hundredths). The crossing reading of a step is the first one after the step whose
rate is at least NEAR_ROW_RPS above the row. A reading nearer the row may or may not have
crossed for the controller (a request ending as the page is made is counted or not), so when
the call came before the crossing reading, the newest reading before the call is taken instead,
and the step is counted as "near row". The latency runs from the reading's begin (Apache makes
the page then; the end it logs comes after the answer left, at times after the controller has
acted on it) to the call's arrival at the proxy, both on this machine's wall clock.

The controller reads mod_status every `[master] sample_interval`, on a steady cadence, and takes
the rate over the last poll_interval. Were the readings a whole fraction of the poll apart (1 s
and 6 s), the oldest reading of that span would sit on its edge, and a millisecond of jitter
would decide whether the span is 6 s or 7 s: no replay could tell which the controller used. So
this part reads every poll/(n + 1/2) seconds (0.92 s for a 6 s poll), which keeps every reading
half an interval away from the edge.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass

from apache_log import Sample, crossing, last_before, rates, status_readings
from ec2_rig import Call, Rig, Run, controller

from controller.config.schema import MasterSection
from controller.gbrowse.apache_status import RateTracker
from tests.harness.render_farm import SteadyLoad

ROW_SPACING_RPS = 6.0  # row k at 6k requests/sec
LEVEL_ABOVE_ROW_RPS = 2.5  # the load of step k: this far above row k, well under row k + 1
NEAR_ROW_RPS = 0.5  # a reading less than this above a row may not have crossed it


@dataclass
class Step:
    row: int  # 1-based: the row the load crossed, wanting `row` slaves
    stepped_at: float
    launch_at: float


@dataclass
class LatencyResult:
    latencies: list[float]
    near_row: int  # crossing reading taken as the newest before the call
    unattributed: int  # no reading after the step came before the call
    steps: int


def sample_interval(poll: float) -> float:
    """Readings a whole-and-a-half fraction of the poll apart, about a second."""
    return poll / (max(1, round(poll)) + 0.5)


def level_rps(row: int) -> float:
    return ROW_SPACING_RPS * row + LEVEL_ABOVE_ROW_RPS


def first_launch(rig: Rig, run: Run, since: float, what: str, poll: float) -> float:
    """When the first RunInstances since `since` reached the proxy."""
    assert rig.proxy is not None
    proxy = rig.proxy

    def launches() -> list[Call]:
        return [c for c in proxy.between(since) if c.action == "RunInstances"]

    run.wait(what, launches, 2 * poll + 15)
    return launches()[0].at


def in_ec2(run: Run, count: int):
    """A predicate: the fleet's instance count once it is at least `count`, else 0."""

    def check() -> int:
        have = run.instances()
        return have if have >= count else 0

    return check


def climb(rig: Rig, run: Run, rows: int, poll: float) -> list[Step]:
    """Step the load a row at a time; a step that brought more than one row's launch (the load
    overshot) is not repeated: the next step goes to the row after the fleet's size."""
    assert rig.apache is not None
    steps: list[Step] = []
    load: SteadyLoad | None = None
    launched = 0
    try:
        while launched < rows:
            row = launched + 1
            if load is not None:
                load.stop()
            stepped_at = time.time()
            load = SteadyLoad("127.0.0.1", rig.apache.port, rps=level_rps(row))
            launch_at = first_launch(rig, run, stepped_at, f"the launch after step {row}", poll)
            steps.append(Step(row, stepped_at, launch_at))
            launched = int(run.wait(f"{row} slaves in EC2", in_ec2(run, row), 30))
    finally:
        if load is not None:
            load.stop()
    return steps


def attribute(steps: list[Step], samples: list[Sample]) -> LatencyResult:
    """Each step's latency from its crossing reading (module docstring)."""
    result = LatencyResult([], 0, 0, len(steps))
    for s in steps:
        sample = crossing(samples, s.stepped_at, ROW_SPACING_RPS * s.row + NEAR_ROW_RPS)
        if sample is None or sample.begin > s.launch_at:
            sample = last_before(samples, s.launch_at)
            if sample is None or sample.begin <= s.stepped_at:
                result.unattributed += 1
                continue
            result.near_row += 1
        result.latencies.append(s.launch_at - sample.begin)
    return result


def latency(rig: Rig, rows: int, poll: float) -> LatencyResult:
    assert rig.apache is not None
    table = [[ROW_SPACING_RPS * k, k, k] for k in range(1, rows + 1)]
    every = sample_interval(poll)
    with controller(rig, "latency", table, poll, f"sample_interval = {every:.6f}") as run:
        run.wait_for_sample(poll)
        steps = climb(rig, run, rows, poll)
    (rig.workdir / "latency_steps.json").write_text(json.dumps([vars(s) for s in steps]))
    tracker = RateTracker(window_seconds=MasterSection().window_seconds, recent_seconds=poll)
    samples = rates(status_readings(rig.apache.hits(), since=run.started_at), tracker)
    return attribute(steps, samples)


def percentile(values: list[float], q: float) -> float:
    """Nearest rank: the smallest value with at least q of them at or below it."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def print_latency(r: LatencyResult, poll: float) -> None:
    print(
        "\nDecision latency: the mod_status reading crossing a row -> RunInstances at the proxy "
        f"(rows every {ROW_SPACING_RPS:g} requests/sec, poll_interval {poll:g} s, "
        f"readings every {sample_interval(poll):.2f} s)"
    )
    print(
        f"{'steps':>5}  {'measured':>8}  {'p50 ms':>7}  {'p99 ms':>7}  {'max ms':>7}  "
        f"{'near row':>8}  {'unattributed':>12}"
    )
    ms = [1000 * v for v in r.latencies]
    p50, p99, top = (
        (f"{percentile(ms, 0.5):.0f}", f"{percentile(ms, 0.99):.0f}", f"{max(ms):.0f}")
        if ms
        else ("-", "-", "-")
    )
    print(
        f"{r.steps:>5}  {len(ms):>8}  {p50:>7}  {p99:>7}  {top:>7}  {r.near_row:>8}  "
        f"{r.unattributed:>12}"
    )
