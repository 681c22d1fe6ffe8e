"""Trace replay in virtual time: a policy against the simulated cloud, scored against demand.

A trace is `t_seconds,requests` per bucket. Virtual time advances from event to event: every
`[master] poll_interval` the policy gets the snapshot SpotPool would give it (rate over the last
poll and over `[master] window_seconds`, measured causally from the requests already seen; the
members with their readiness; open requests; the fleet's cost) and its decision is applied to
SimCloud: launches boot for `boot_seconds` +- spread, removals leave service at once and are
terminated after `[scaling] drain_seconds`, unfilled requests are abandoned after
`[scaling] request_timeout`, interruption notices take a slave out of service two minutes before
spot reclaims it. The decisions are the policy objects' own (controller.policy,
controller.policy.baselines): the simulator only observes and acts.

Scoring: demand is `ceil(load / slave_capacity_rps)` for each bucket, supply is the number of
slaves serving (booted, not draining, not warned), both integrated exactly over time (a boot
that completes mid-bucket counts from that second); controller.simulation.elasticity turns them
into the SPEC RG metrics. Every policy starts from the same warm fleet: as many booted slaves as the
first bucket demands. The oracle is computed from the future instead (controller.policy.baselines).
"""

from __future__ import annotations

import csv
import heapq
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from controller.cloud.port import LaunchSpec
from controller.cloud.sim_fleet import NOTICE_SECONDS
from controller.cloud.simcloud import SimCloud
from controller.config.schema import Config, LoadRow, LoadTableSection
from controller.messages import Role
from controller.policy.band import Member, Policy, PolicyInput, band_for
from controller.policy.baselines import oracle_plan
from controller.policy.factory import make_policy
from controller.simulation.elasticity import (
    ElasticityMetrics,
    instability,
    over_accuracy,
    over_timeshare,
    under_accuracy,
    under_timeshare,
)

TIMELINE_HEADER = ("t_seconds", "load_rps", "desired", "billed", "ready", "cost_per_hour")
MAX_ACTIONS_KEPT = 2000


class TraceError(Exception):
    """A trace that cannot be replayed; the message names the file and line."""


# ---- traces ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Trace:
    """A load trace on a regular grid: `rps[i]` holds from `start + i * bucket_seconds`."""

    path: str
    start: float
    bucket_seconds: float
    rps: tuple[float, ...]

    @property
    def end(self) -> float:
        return self.start + len(self.rps) * self.bucket_seconds

    def time(self, i: int) -> float:
        return self.start + i * self.bucket_seconds

    def window(self, start: float, end: float) -> Trace:
        """The buckets that start within [start, end) (times stay as in the file)."""
        first = max(0, math.ceil((start - self.start) / self.bucket_seconds - 1e-9))
        last = min(len(self.rps), math.ceil((end - self.start) / self.bucket_seconds - 1e-9))
        if last - first < 1:
            raise TraceError(f"{self.path}: no buckets between t={start:g} and t={end:g}")
        return replace(self, start=self.time(first), rps=self.rps[first:last])


def _number(text: str, path: str, line: int, column: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise TraceError(f"{path}:{line}: {column} {text.strip()!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise TraceError(f"{path}:{line}: {column} must be a finite number >= 0 (got {text!r})")
    return value


def read_trace(path: str) -> Trace:
    """Read `t_seconds,requests` rows (a header line is allowed); missing buckets count as 0."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            lines = list(csv.reader(f))
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or exc
        raise TraceError(f"{path}: cannot read the trace: {reason}") from None
    rows: list[tuple[float, float]] = []
    for n, fields in enumerate(lines, start=1):
        if not fields or not "".join(fields).strip() or fields[0].lstrip().startswith("#"):
            continue
        if not rows and n == 1 and not _looks_numeric(fields[0]):
            continue  # header
        if len(fields) != 2:
            raise TraceError(f"{path}:{n}: expected 2 fields t_seconds,requests, got {len(fields)}")
        t = _number(fields[0], path, n, "t_seconds")
        req = _number(fields[1], path, n, "requests")
        if rows and t <= rows[-1][0]:
            raise TraceError(f"{path}:{n}: t_seconds must increase ({t:g} after {rows[-1][0]:g})")
        rows.append((t, req))
        if len(rows) > 2:
            bucket = rows[1][0] - rows[0][0]
            steps = (t - rows[-2][0]) / bucket
            if abs(steps - round(steps)) > 1e-6:
                raise TraceError(
                    f"{path}:{n}: t_seconds {t:g} is off the {bucket:g}-second grid of the "
                    "first rows"
                )
    if len(rows) < 2:
        raise TraceError(f"{path}: needs at least two rows of t_seconds,requests")
    bucket = rows[1][0] - rows[0][0]
    start = rows[0][0]
    count = round((rows[-1][0] - start) / bucket) + 1
    rps = [0.0] * count
    for t, req in rows:
        rps[round((t - start) / bucket)] = req / bucket
    return Trace(path=path, start=start, bucket_seconds=bucket, rps=tuple(rps))


def _looks_numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


# ---- results -----------------------------------------------------------------------------------


@dataclass(slots=True)
class Timeline:
    """One row per bucket, as `--timeline` writes it."""

    t_seconds: list[float] = field(default_factory=list)
    load_rps: list[float] = field(default_factory=list)
    desired: list[int] = field(default_factory=list)
    billed: list[int] = field(default_factory=list)
    ready: list[int] = field(default_factory=list)
    cost_per_hour: list[float] = field(default_factory=list)

    def rows(self) -> list[tuple[float, float, int, int, int, float]]:
        return list(
            zip(
                self.t_seconds,
                self.load_rps,
                self.desired,
                self.billed,
                self.ready,
                self.cost_per_hour,
                strict=True,
            )
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class SimReport:
    policy: str
    trace: str
    seed: int
    start_seconds: float
    end_seconds: float
    bucket_seconds: float
    buckets: int
    slave_capacity_rps: float
    boot_seconds: float
    spot_price: float
    cost: float  # dollars
    instance_hours: float
    demand_hours: float  # slave-hours the demand itself needs (no boots, no spare)
    launches: int
    terminations: int
    interruptions: int
    capacity_errors: int
    unfilled_requests: int
    peak_demand: int
    peak_billed: int
    table_short_pct: float  # % of time the load table's max for the load is below its demand
    polls: int
    elasticity: ElasticityMetrics

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            name: getattr(self, name) for name in self.__slots__ if name != "elasticity"
        }
        out["elasticity"] = self.elasticity.as_dict()
        out["duration_hours"] = (self.end_seconds - self.start_seconds) / 3600.0
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class SimResult:
    report: SimReport
    timeline: Timeline
    actions: tuple[tuple[float, str], ...]  # (t, reason) of decisions that changed the fleet


def demand_of(rps: float, capacity: float) -> int:
    """Slaves needed for a load: ceil(load / capacity), robust to float noise."""
    if rps <= 0 or capacity <= 0:
        return 0
    return math.ceil(round(rps / capacity, 9))


# ---- the replay ----------------------------------------------------------------------------------


def simulate(trace: Trace, config: Config, policy: str = "ours", *, seed: int = 1) -> SimResult:
    """Replay `trace` under `policy` (any make_policy name, or "oracle")."""
    if policy == "oracle":
        return _oracle(trace, config, seed)
    return _Replay(trace, config, make_policy(policy, config), policy, seed).run()


class _Replay:
    def __init__(self, trace: Trace, config: Config, policy: Policy, name: str, seed: int):
        self.trace = trace
        self.config = config
        self.policy = policy
        self.name = name
        self.seed = seed
        self.now = trace.start
        self.cloud = SimCloud.from_config(config, clock=lambda: self.now, seed=seed)
        self.cap = config.simulate.slave_capacity_rps
        self.poll = config.master.poll_interval
        self.window = config.master.window_seconds
        self.drain = config.scaling.drain_seconds
        self.request_timeout = config.scaling.request_timeout
        self.abandons = getattr(policy, "abandons_requests", True)
        self.spec = LaunchSpec(
            fleet=config.controller.fleet,
            role=Role.SLAVE,
            image_id=config.slave.image_id or "ami-simulated",
            instance_type=config.slave.instance_types[0],
            count=1,
            client_token="",
            max_price=config.slave.spot_bid,
        )
        self.demand = [demand_of(r, self.cap) for r in trace.rps]
        b = trace.bucket_seconds
        self.cum = [0.0]
        for r in trace.rps:
            self.cum.append(self.cum[-1] + r * b)
        self.members: dict[str, Member] = {}
        self.unready: set[str] = set()
        self.serving: set[str] = set()
        self.events: list[tuple[float, int, str, str]] = []
        self._seq = 0
        self.cur_demand = self.demand[0]
        self.seg_start = trace.start
        self.seg_d: list[float] = []
        self.seg_s: list[float] = []
        self.seg_dt: list[float] = []
        self.bucket_area = 0.0  # integral of supply over the current bucket
        self.bucket_supply: list[float] = []  # mean supply of each bucket (for instability)
        self.timeline = Timeline()
        self.actions: list[tuple[float, str]] = []
        self.desired = self.demand[0]
        self.warm = 0  # slaves of the warm start (not counted as launches)
        self.polls = 0

    # -- the load the sensor would have measured -------------------------------------------------

    def _cumulative(self, t: float) -> float:
        tr = self.trace
        if t <= tr.start:
            return tr.rps[0] * (t - tr.start)
        if t >= tr.end:
            return self.cum[-1] + tr.rps[-1] * (t - tr.end)
        j = int((t - tr.start) // tr.bucket_seconds)
        return self.cum[j] + tr.rps[j] * (t - tr.time(j))

    def rate(self, a: float, b: float) -> float:
        return max(0.0, (self._cumulative(b) - self._cumulative(a)) / (b - a))

    # -- bookkeeping -----------------------------------------------------------------------------

    def _mark(self, t: float) -> None:
        """Close the segment of constant demand and supply that ends at t."""
        dt = t - self.seg_start
        if dt <= 0:
            return
        d, s = self.cur_demand, len(self.serving)
        self.bucket_area += s * dt
        if self.seg_d and self.seg_d[-1] == d and self.seg_s[-1] == s:
            self.seg_dt[-1] += dt
        else:
            self.seg_d.append(d)
            self.seg_s.append(s)
            self.seg_dt.append(dt)
        self.seg_start = t

    def _push(self, t: float, kind: str, iid: str) -> None:
        self._seq += 1
        heapq.heappush(self.events, (t, self._seq, kind, iid))

    def _launch(self, count: int) -> None:
        self._seq += 1
        spec = replace(self.spec, count=count, client_token=f"simulate-{self._seq}")
        result = self.cloud.launch_now(spec)
        for ci in result.instances:
            inst = self.cloud.instance(ci.instance_id)
            assert inst is not None
            iid = inst.instance_id
            self.members[iid] = Member(instance_id=iid, launched_at=inst.launched_at, ready=False)
            self.unready.add(iid)
            self._push(inst.ready_at, "ready", iid)
            if inst.interrupt_at is not None:
                notice = max(inst.launched_at, inst.interrupt_at - NOTICE_SECONDS)
                self._push(notice, "notice", iid)
                self._push(inst.interrupt_at, "reclaimed", iid)

    def _run_events(self, until: float) -> None:
        while self.events and self.events[0][0] <= until:
            t, _, kind, iid = heapq.heappop(self.events)
            self.now = t
            m = self.members.get(iid)
            if m is None:
                continue
            if kind == "ready":
                if not m.draining and not m.interrupted:
                    self._mark(t)
                    self.serving.add(iid)
            elif kind == "notice":
                if not m.draining:
                    self._mark(t)
                    self.serving.discard(iid)
                    self.members[iid] = replace(m, interrupted=True)
            elif kind == "reclaimed":
                self._mark(t)
                self.serving.discard(iid)
                self.unready.discard(iid)
                del self.members[iid]
                self.cloud.advance()
            elif kind == "terminate":
                self.cloud.terminate_now([iid])
                del self.members[iid]
        self.now = until

    def _remove(self, iid: str) -> None:
        m = self.members.get(iid)
        if m is None or m.draining:
            return
        self._mark(self.now)
        self.serving.discard(iid)
        self.unready.discard(iid)
        if self.cloud.booted(iid) and self.drain > 0:
            self.members[iid] = replace(m, draining=True)
            self._push(self.now + self.drain, "terminate", iid)
        else:
            self.cloud.terminate_now([iid])
            del self.members[iid]

    # -- one poll ----------------------------------------------------------------------------------

    def _poll(self) -> None:
        now = self.now
        self.polls += 1
        for iid in [i for i in self.unready if self.cloud.booted(i)]:
            self.unready.discard(iid)
            self.members[iid] = replace(self.members[iid], ready=True)
        opened = self.cloud.open_requests()
        if self.abandons and opened:
            stale = [r.request_id for r in opened if now - r.created_at >= self.request_timeout]
            if stale:
                self.cloud.cancel_now(stale)
                opened = self.cloud.open_requests()
        price = self.cloud.price
        inp = PolicyInput(
            now=now,
            load_rps=self.rate(now - self.poll, now),
            window_rps=self.rate(now - self.window, now),
            members=tuple(self.members.values()),
            pending_requests=len(opened),
            cost_per_hour=self.cloud.billed_count() * price,
            price_per_instance=price,
        )
        decision = self.policy.decide(inp)
        self.desired = decision.desired
        for iid in decision.remove:
            self._remove(iid)
        if decision.launch > 0:
            self._launch(decision.launch)
        if (decision.launch or decision.remove) and len(self.actions) < MAX_ACTIONS_KEPT:
            self.actions.append((now, decision.reason))

    def _record(self, j: int) -> None:
        billed = self.cloud.billed_count()
        tl = self.timeline
        tl.t_seconds.append(self.trace.time(j))
        tl.load_rps.append(self.trace.rps[j])
        tl.desired.append(self.desired)
        tl.billed.append(billed)
        tl.ready.append(len(self.serving))
        tl.cost_per_hour.append(billed * self.cloud.price)

    def _warm_start(self) -> None:
        """Start as a controller that had been running: the first bucket's demand, booted."""
        n = self.demand[0]
        if n <= 0:
            return
        lead = self.config.simulate.boot_seconds * (1 + self.config.simulate.boot_spread) + 1
        self.now = self.trace.start - lead
        self._launch(n)
        self.warm = len(self.members)
        self._run_events(self.trace.start)
        self.seg_start = self.trace.start

    def run(self) -> SimResult:
        tr = self.trace
        self._warm_start()
        n = len(tr.rps)
        b = tr.bucket_seconds
        k, j = 0, 0
        while True:
            t_poll = tr.start + k * self.poll
            t_bucket = tr.start + j * b if j < n else math.inf
            tick = min(t_poll, t_bucket)
            if tick >= tr.end:
                break
            self._run_events(tick)
            if tick == t_bucket:
                self._mark(tick)
                if j > 0:
                    self.bucket_supply.append(self.bucket_area / b)
                self.bucket_area = 0.0
                self.cur_demand = self.demand[j]
            if tick == t_poll:
                self._poll()
                k += 1
            if tick == t_bucket:
                self._record(j)
                j += 1
        self._run_events(tr.end)
        self._mark(tr.end)
        self.bucket_supply.append(self.bucket_area / b)
        counters = self.cloud.counters
        launches, terminations = counters.launched, counters.terminated
        self.cloud.terminate_now([i.instance_id for i in self.cloud.live()])
        report = _report(
            self,
            cost=self.cloud.cost(),
            instance_hours=self.cloud.billed_seconds() / 3600.0,
            launches=launches - self.warm,
            terminations=terminations,
            interruptions=counters.interrupted,
            capacity_errors=counters.capacity_errors,
            unfilled=counters.unfilled,
        )
        return SimResult(report=report, timeline=self.timeline, actions=tuple(self.actions))


def _report(
    run: _Replay | _OracleRun,
    *,
    cost: float,
    instance_hours: float,
    launches: int,
    terminations: int,
    interruptions: int,
    capacity_errors: int,
    unfilled: int,
) -> SimReport:
    tr, cfg = run.trace, run.config
    return SimReport(
        policy=run.name,
        trace=tr.path,
        seed=run.seed,
        start_seconds=tr.start,
        end_seconds=tr.end,
        bucket_seconds=tr.bucket_seconds,
        buckets=len(tr.rps),
        slave_capacity_rps=cfg.simulate.slave_capacity_rps,
        boot_seconds=cfg.simulate.boot_seconds,
        spot_price=cfg.simulate.spot_price,
        cost=cost,
        instance_hours=instance_hours,
        demand_hours=sum(run.demand) * tr.bucket_seconds / 3600.0,
        launches=launches,
        terminations=terminations,
        interruptions=interruptions,
        capacity_errors=capacity_errors,
        unfilled_requests=unfilled,
        peak_demand=max(run.demand, default=0),
        peak_billed=max(run.timeline.billed, default=0),
        table_short_pct=table_short_pct(trace=tr, config=cfg, demand=run.demand),
        polls=run.polls,
        elasticity=_elasticity(run.seg_d, run.seg_s, run.seg_dt, run.demand, run.bucket_supply),
    )


def _elasticity(
    seg_d: list[float],
    seg_s: list[float],
    seg_dt: list[float],
    bucket_demand: Sequence[float],
    bucket_supply: Sequence[float],
) -> ElasticityMetrics:
    """Accuracy and timeshare from the exact timeline; instability on the bucket grid.

    Instability compares the direction of consecutive changes, so it needs a regular grid (on
    event segments every boundary is a change by construction): it uses each bucket's demand
    and the bucket's time-averaged supply.
    """
    return ElasticityMetrics(
        theta_u=under_accuracy(seg_d, seg_s, seg_dt),
        theta_o=over_accuracy(seg_d, seg_s, seg_dt),
        tau_u=under_timeshare(seg_d, seg_s, seg_dt),
        tau_o=over_timeshare(seg_d, seg_s, seg_dt),
        instability=instability(bucket_demand, bucket_supply),
    )


def table_short_pct(*, trace: Trace, config: Config, demand: Sequence[int]) -> float:
    """% of buckets whose load gets a band with a max below its demand: the table limits."""
    rows = config.load_table.rows
    short = sum(1 for r, d in zip(trace.rps, demand, strict=True) if band_for(rows, r)[1] < d)
    return 100.0 * short / len(demand) if demand else 0.0


# ---- the oracle ------------------------------------------------------------------------------


@dataclass(slots=True)
class _OracleRun:
    trace: Trace
    config: Config
    seed: int
    name: str = "oracle"
    demand: list[int] = field(default_factory=list)
    timeline: Timeline = field(default_factory=Timeline)
    seg_d: list[float] = field(default_factory=list)
    seg_s: list[float] = field(default_factory=list)
    seg_dt: list[float] = field(default_factory=list)
    bucket_supply: list[float] = field(default_factory=list)
    polls: int = 0


def _oracle(trace: Trace, config: Config, seed: int) -> SimResult:
    cap = config.simulate.slave_capacity_rps
    boot = config.simulate.boot_seconds
    price = config.simulate.spot_price
    n, b = len(trace.rps), trace.bucket_seconds
    run = _OracleRun(trace=trace, config=config, seed=seed)
    run.demand = [demand_of(r, cap) for r in trace.rps]
    times = [trace.time(j) for j in range(n)]
    plan = oracle_plan(times, run.demand, trace.end, boot)
    ready_diff = [0] * (n + 1)
    billed_diff = [0] * (n + 1)
    for r in plan:
        ready_diff[round((r.ready_at - trace.start) / b)] += 1
        ready_diff[round((r.end - trace.start) / b)] -= 1
        first_billed = max(0, math.ceil((r.launched_at - trace.start) / b - 1e-9))
        billed_diff[first_billed] += 1
        billed_diff[round((r.end - trace.start) / b)] -= 1
    ready = billed = 0
    tl = run.timeline
    for j in range(n):
        ready += ready_diff[j]
        billed += billed_diff[j]
        tl.t_seconds.append(times[j])
        tl.load_rps.append(trace.rps[j])
        tl.desired.append(ready)
        tl.billed.append(billed)
        tl.ready.append(ready)
        tl.cost_per_hour.append(billed * price)
        run.bucket_supply.append(ready)
        d = run.demand[j]
        if run.seg_d and run.seg_d[-1] == d and run.seg_s[-1] == ready:
            run.seg_dt[-1] += b
        else:
            run.seg_d.append(d)
            run.seg_s.append(ready)
            run.seg_dt.append(b)
    seconds = sum(max(r.end - r.launched_at, 60.0) for r in plan)
    warm = run.demand[0] if n else 0
    report = _report(
        run,
        cost=seconds * price / 3600.0,
        instance_hours=seconds / 3600.0,
        launches=len(plan) - warm,
        terminations=sum(1 for r in plan if r.end < trace.end),
        interruptions=0,
        capacity_errors=0,
        unfilled=0,
    )
    return SimResult(report=report, timeline=tl, actions=())


# ---- a load table for a trace ---------------------------------------------------------------


def capacity_table(
    capacity_rps: float, top: int, *, spare: float = 0.5, least_spare: int = 2
) -> LoadTableSection:
    """A load table derived from the slave capacity, as an admin who knows it would write it.

    Row k applies from k * capacity requests/sec, where the demand is k + 1 slaves (k = 0 at a
    token 1 % of one slave's capacity): min = k + 1 (the demand of that load), max = min plus
    `spare` of it (at least `least_spare`) as the seed's hysteresis. Rows go up to `top` slaves.
    Used by bench/policy.py so the table is a real bound but not what limits a policy.
    """
    rows = [LoadRow(rps=0.01 * capacity_rps, min_instances=1, max_instances=1 + least_spare)]
    for k in range(1, top):
        low = k + 1
        high = low + max(least_spare, math.ceil(spare * low))
        rows.append(LoadRow(rps=k * capacity_rps, min_instances=low, max_instances=high))
    return LoadTableSection(rows=tuple(rows))


def write_timeline(timeline: Timeline, path: str) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(TIMELINE_HEADER)
        for t, load, desired, billed, ready, cph in timeline.rows():
            w.writerow([f"{t:g}", f"{load:.6g}", desired, billed, ready, f"{cph:.6g}"])


__all__ = [
    "TIMELINE_HEADER",
    "SimReport",
    "SimResult",
    "Timeline",
    "Trace",
    "TraceError",
    "capacity_table",
    "demand_of",
    "read_trace",
    "simulate",
    "write_timeline",
]
