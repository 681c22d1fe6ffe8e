"""Policy benchmark: ours against GBrowse's balancer, StarCluster's and the oracle on real traces.

    .venv/bin/python bench/policy.py [--traces DIR] [--peak 40] [--boot 90] [--seed 1] [--spread 4]

For each shared web trace it replays every policy through `controller.simulation.replay` and
prints cost (and its ratio to the oracle's), the SPEC RG elasticity metrics and the launches.

How the comparison is kept honest:

- Capacity: `slave_capacity_rps` is set per trace so that its peak load needs `--peak` slaves
  (default 40); demand is `ceil(load / capacity)` per bucket.
- Load table: every policy gets the same one (`bench_table`), a row at every multiple of the
  capacity as an admin who knew it would write it: min = the demand at that load, max =
  4 x min + 4. The min is a floor GBrowse's balancer reaches at once (it launches up to min)
  and the other policies honour; the max is a generous ceiling, not a target. A max close to
  the demand (the old min + 2) is not a neutral choice: it forbids launching ahead of a surge
  (Twitter's jump from ~7 to ~30 slaves within a minute), so it decides the tau_U of every
  policy that forecasts, whatever it forecasts. 4 x demand is about the least spread under which
  that surge fits. GBrowse reads max as "kill down to max", so a wide max costs it money and
  buys it tau_U; to show that nothing is hidden, the row `gbrowse/d+2` replays it once more
  under its most favourable table (max = min + 2, the seed's own spread), for reference
  only: the goal line compares policies under the same table.
- Everything else is the documented default config: poll 30 s, window 120 s, scale-in dwell
  300 s, drain 30 s; boot 90 s (`--boot`) +- 20 %, one price.
- WorldCup 98 is cut to its 28 busiest days, 1998-06-10 00:00 to 07-08 00:00 GMT (the match
  period), to keep the run short; SDSC is one day; Twitter all 22 days.
- The oracle launches every slave exactly one boot before it is needed (ready == demand, up to
  gaps shorter than a boot, which it bridges): the physical limit under the same boot time.
  It ignores the load table; `table_tau_u_bound` is the limit of a causal policy that honours
  it (printed as `bound tauU`), which shows when the table itself puts the tau_U goal out of
  reach.
- The simulated cloud draws boot times (and any interruptions) from `--seed`; the table is for
  that seed, and `--spread` more seeds replay ours again to show how much of a difference is luck.
- Forecasting is causal: `ours` learns from the replayed past only (the simulator hands it one
  poll at a time), so its first days run without the daily profile it builds.
"""

from __future__ import annotations

import argparse
import dataclasses
import heapq
import itertools
import math
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from controller.config.schema import Config, LoadRow, LoadTableSection
from controller.policy.band import band_for
from controller.simulation.replay import simulate
from controller.simulation.report import SimReport, table_short_pct
from controller.simulation.trace import Trace, demand_of, read_trace

DAY = 86400.0
TRACES = (  # file, window (seconds from the file's t=0) or None for all
    ("worldcup98_60s.csv", (41 * DAY, 69 * DAY)),
    ("sdsc_http_19950822_60s.csv", None),
    ("twitter_stream_202108_30s.csv", None),
)
POLICIES = ("oracle", "ours", "gbrowse", "starcluster")
TABLE_NOTE = "load table min = demand, max = 4 x min + 4"
GOAL_TAU_U = 2.0
GOAL_COST_RATIO = 1.25


def default_traces_dir() -> Path:
    return Path(__file__).resolve().parents[2] / "shared" / "traces"


def bench_table(capacity: float, top: int, max_of=lambda low: 4 * low + 4) -> LoadTableSection:
    """Row k from k * capacity rps (k = 0 at a token 1 % of it): min = k + 1, its demand."""
    rows = [LoadRow(rps=0.01 * capacity, min_instances=1, max_instances=max_of(1))]
    for k in range(1, top):
        rows.append(LoadRow(rps=k * capacity, min_instances=k + 1, max_instances=max_of(k + 1)))
    return LoadTableSection(rows=tuple(rows))


def bench_config(trace: Trace, peak: int, boot: float) -> Config:
    capacity = max(trace.rps) / peak
    base = Config()
    return dataclasses.replace(
        base,
        load_table=bench_table(capacity, 2 * peak),
        scaling=dataclasses.replace(base.scaling, slave_capacity_rps=capacity, boot_seconds=boot),
    )


def tight_config(cfg: Config, peak: int) -> Config:
    """The same config under the seed's spread (max = min + 2): GBrowse's cheapest table."""
    table = bench_table(cfg.scaling.slave_capacity_rps, 2 * peak, lambda low: low + 2)
    return dataclasses.replace(cfg, load_table=table)


def table_tau_u_bound(trace: Trace, cfg: Config) -> float:
    """Lowest tau_U (%) any causal policy honouring the load table can reach on this trace.

    A slave ready at t was launched at a poll p <= t - boot_min (boot_seconds less its spread),
    and launches never take the fleet above the band max of their poll; a fleet above max is cut
    within `scale_in_after` plus one poll. So the slaves ready at t are at most the highest
    band max of the polls in [t - boot_min - scale_in_after - poll, t - boot_min]. Wherever
    the demand exceeds that, every such policy is short, whatever it forecasts. The load a poll
    sees is the rate over the poll before it, as in the replay.
    """
    poll = cfg.master.poll_interval
    boot_min = cfg.scaling.boot_seconds * (1 - cfg.simulate.boot_spread)
    reach = cfg.scaling.scale_in_after + poll
    cap, rows, b = cfg.scaling.slave_capacity_rps, cfg.load_table.rows, trace.bucket_seconds
    cum = [0.0]
    for r in trace.rps:
        cum.append(cum[-1] + r * b)

    def seen(p: float) -> float:  # rate over [p - poll, p], clamped to the trace
        def at(t: float) -> float:
            j = min(len(trace.rps) - 1, max(0, int((t - trace.start) // b)))
            return cum[j] + trace.rps[j] * (min(max(t, trace.start), trace.end) - trace.time(j))

        return max(0.0, (at(p) - at(p - poll)) / poll)

    polls = int((trace.end - trace.start) // poll) + 1
    warm = demand_of(trace.rps[0], cap)
    maxes = [warm] + [band_for(rows, seen(trace.start + k * poll))[1] for k in range(1, polls)]
    grid = [round(x) for x in (poll, boot_min, reach, b, trace.start) if x == round(x)]
    step = float(math.gcd(*grid)) if len(grid) == 5 else 1.0  # every breakpoint is on this grid
    short = 0
    steps = int((trace.end - trace.start) // step)
    for i in range(steps):
        t = trace.start + (i + 0.5) * step
        hi = math.floor((t - boot_min - trace.start) / poll)
        lo = max(0, math.ceil((t - boot_min - reach - trace.start) / poll))
        bound = max(maxes[lo : hi + 1]) if hi >= 0 else warm  # before: the warm start's
        if demand_of(trace.rps[int((t - trace.start) // b)], cap) > bound:
            short += 1
    return 100.0 * short / steps if steps else 0.0


def half_hour_reference(trace: Trace, cfg: Config, tau_u: float = GOAL_TAU_U) -> float:
    """Cost (in $) of a fleet that knows every half hour's demand in advance, not its minutes.

    It holds one count per half hour, as low as it can while short at most `tau_u` % of the
    buckets: from each half hour's peak, the count whose lowering saves the most slave time per
    short bucket added is lowered first (greedy). Not a bound, a yardstick: where the demand
    jumps from minute to minute more than any forecast can know, even this fleet costs well
    above the oracle, which follows every minute.
    """
    cap, b = cfg.scaling.slave_capacity_rps, trace.bucket_seconds
    per = max(1, round(1800 / b))
    demand = [demand_of(r, cap) for r in trace.rps]
    windows = [sorted(demand[i : i + per], reverse=True) for i in range(0, len(demand), per)]
    level = [w[0] for w in windows]
    budget = math.floor(tau_u / 100 * len(demand))
    heap: list[tuple[float, int]] = []

    def push(k: int) -> None:
        w, lv = windows[k], level[k]
        if lv > 0:  # lowering to lv - 1 makes every bucket with demand >= lv short
            short = sum(1 for d in w if d >= lv)
            heapq.heappush(heap, (short / len(w), k))

    for k in range(len(windows)):
        push(k)
    used = 0
    while heap:
        _, k = heapq.heappop(heap)
        short = sum(1 for d in windows[k] if d >= level[k])
        if used + short > budget:
            continue
        used += short
        level[k] -= 1
        push(k)
    seconds = sum(lv * len(w) * b for lv, w in zip(level, windows, strict=True))
    return seconds * cfg.simulate.spot_price / 3600.0


def _count_tail(mean: float, dispersion: float):
    """P(count > x) for a count of this mean and variance `dispersion * mean`.

    Negative binomial (Poisson when the dispersion is at most 1); normal beyond a mean of 1000,
    where the exact sum is slow and the normal close.
    """
    if mean <= 0:
        return lambda x: 0.0
    d = max(dispersion, 1.0)
    if mean > 1000:
        scale = math.sqrt(2 * d * mean)
        return lambda x: 0.5 * math.erfc((math.floor(x) + 0.5 - mean) / scale)
    top = int(mean + 12 * math.sqrt(d * mean) + 20)
    if d <= 1.0001:  # Poisson

        def log_pmf(k: int) -> float:
            return k * math.log(mean) - mean - math.lgamma(k + 1)

    else:  # negative binomial: r successes of chance p, mean r (1 - p) / p, variance mean / p
        r, p = mean / (d - 1), 1 / d

        def log_pmf(k: int) -> float:
            return (
                math.lgamma(k + r)
                - math.lgamma(r)
                - math.lgamma(k + 1)
                + r * math.log(p)
                + k * math.log1p(-p)
            )

    pmf = [math.exp(log_pmf(k)) for k in range(top + 1)]
    cdf = list(itertools.accumulate(pmf))
    return lambda x: 0.0 if x >= top else max(0.0, 1.0 - cdf[math.floor(x)])


def known_rate_bound(
    trace: Trace,
    cfg: Config,
    tau_u: float = GOAL_TAU_U,
    rate_seconds: float = 300.0,
    spread_seconds: float = 600.0,
) -> float:
    """Least cost (in $) for tau_U <= `tau_u` % of a fleet that knows each bucket's rate ahead.

    The rate of a bucket is the mean count of the buckets within `rate_seconds` either side
    (not itself); its spread, the variance of the counts about those rates within
    `spread_seconds` either side, as a multiple of the rate. Knowing both in advance, the fleet
    still cannot know the count itself, taken as negative binomial with that mean and variance.
    Each bucket gets the count of slaves that, over the whole trace, buys the most cover per
    slave (the Lagrangian of "fewest slave-seconds with short buckets <= tau_u %", exact for
    the fractional problem), boots and dwells free. A bound under that model, optimistic for
    the fleet: where it is above 1.25x the oracle, no causal policy meets the goal.
    """
    b = trace.bucket_seconds
    per_slave = cfg.scaling.slave_capacity_rps * b  # requests one slave serves in a bucket
    counts = [r * b for r in trace.rps]
    n = len(counts)
    k = max(1, round(rate_seconds / b))
    cum = [0.0, *itertools.accumulate(counts)]
    rate = []
    for i in range(n):
        lo, hi = max(0, i - k), min(n, i + k + 1)
        rate.append((cum[hi] - cum[lo] - counts[i]) / max(1, hi - lo - 1))
    kv = max(1, round(spread_seconds / b))
    sq = [0.0, *itertools.accumulate((c - m) ** 2 for c, m in zip(counts, rate, strict=True))]
    rsum = [0.0, *itertools.accumulate(rate)]
    steps: list[tuple[float, int, float]] = []  # (slaves saved per short added, slaves, short)
    slaves = 0.0
    for i, mean in enumerate(rate):
        lo, hi = max(0, i - kv), min(n, i + kv + 1)
        tail = _count_tail(mean, (sq[hi] - sq[lo]) / max(1e-9, rsum[hi] - rsum[lo]))
        hull: list[tuple[int, float]] = []  # lower convex hull of (slaves, P(short))
        q = 0
        while True:
            point = (q, tail(q * per_slave))
            while len(hull) >= 2 and (hull[-1][1] - hull[-2][1]) * (point[0] - hull[-2][0]) >= (
                point[1] - hull[-2][1]
            ) * (hull[-1][0] - hull[-2][0]):
                hull.pop()
            hull.append(point)
            if point[1] < 1e-9:
                break
            q += 1
        slaves += hull[-1][0]
        for (q0, s0), (q1, s1) in itertools.pairwise(hull):
            steps.append(((q1 - q0) / max(1e-300, s0 - s1), q1 - q0, s0 - s1))
    budget, used = tau_u / 100 * n, 0.0
    for _, dq, ds in sorted(steps, reverse=True):  # from the top of each hull down
        if used + ds > budget:
            slaves -= dq * (budget - used) / ds
            break
        used += ds
        slaves -= dq
    return slaves * b * cfg.simulate.spot_price / 3600.0


def row(name: str, r: SimReport, oracle_cost: float) -> str:
    e = r.elasticity
    ratio = r.cost / oracle_cost if oracle_cost > 0 else float("nan")
    return (
        f"  {name:<12} {r.cost:>9.2f} {ratio:>6.3f} {e.theta_u:>7.2f} {e.tau_u:>7.2f} "
        f"{e.theta_o:>7.2f} {e.tau_o:>7.2f} {e.instability:>7.2f} {r.launches:>8}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--traces", type=Path, default=default_traces_dir())
    parser.add_argument("--peak", type=int, default=40, help="slaves the peak load needs")
    parser.add_argument("--boot", type=float, default=90.0, help="boot seconds")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--spread", type=int, default=4, help="also replay ours under this many more seeds"
    )
    args = parser.parse_args(argv)

    started = time.monotonic()
    print(
        f"boot {args.boot:g} s, capacity per trace so the peak needs {args.peak} slaves, "
        f"{TABLE_NOTE}; goal: tau_U <= 2 %, cost <= 1.25x oracle"
    )
    for name, window in TRACES:
        path = args.traces / name
        if not path.exists():
            print(f"{path}: missing, skipped")
            continue
        trace = read_trace(str(path))
        if window is not None:
            trace = trace.window(*window)
        cfg = bench_config(trace, args.peak, args.boot)
        hours = (trace.end - trace.start) / 3600.0
        demand = [min(args.peak, int(-(-r // cfg.scaling.slave_capacity_rps))) for r in trace.rps]
        short = table_short_pct(trace=trace, config=cfg, demand=demand)
        print()
        print(
            f"{name}: {len(trace.rps)} buckets of {trace.bucket_seconds:g} s ({hours:.0f} h), "
            f"peak {max(trace.rps):.1f} rps, capacity {cfg.scaling.slave_capacity_rps:.4g} "
            f"rps/slave, table_short {short:.1f} %"
        )
        print(
            f"  {'policy':<12} {'cost $':>9} {'xorac':>6} {'thetaU%':>7} {'tauU%':>7} "
            f"{'thetaO%':>7} {'tauO%':>7} {'instab%':>7} {'launches':>8}"
        )
        reports = {p: simulate(trace, cfg, p, seed=args.seed).report for p in POLICIES}
        oracle_cost = reports["oracle"].cost
        for p in POLICIES:
            print(row(p, reports[p], oracle_cost))
        tight = simulate(trace, tight_config(cfg, args.peak), "gbrowse", seed=args.seed).report
        print(row("gbrowse/d+2", tight, oracle_cost) + "  (reference: max = min + 2)")
        ours, gb = reports["ours"], reports["gbrowse"]
        checks = {
            "tau_U <= 2 %": ours.elasticity.tau_u <= GOAL_TAU_U,
            "cost <= 1.25x oracle": ours.cost <= GOAL_COST_RATIO * oracle_cost,
            "cheaper than gbrowse": ours.cost < gb.cost,
            "lower tau_U than gbrowse": ours.elasticity.tau_u < gb.elasticity.tau_u,
        }
        verdict = ", ".join(f"{k}: {'yes' if v else 'NO'}" for k, v in checks.items())
        print(f"  goal -> {verdict}")
        if args.spread > 0:
            seeds = range(args.seed + 1, args.seed + 1 + args.spread)
            more = [ours] + [simulate(trace, cfg, "ours", seed=s).report for s in seeds]
            costs = [r.cost / oracle_cost for r in more]
            taus = [r.elasticity.tau_u for r in more]
            print(
                f"  ours under seeds {args.seed}..{seeds[-1]} (boot times, interruptions): "
                f"cost {min(costs):.3f}-{max(costs):.3f}x oracle, "
                f"tau_U {min(taus):.2f}-{max(taus):.2f} %"
            )
        ref = half_hour_reference(trace, cfg) / oracle_cost
        print(
            f"  half-hour reference {ref:.3f}x oracle: a fleet knowing each half hour's demand "
            f"in advance, short <= {GOAL_TAU_U:g} %"
        )
        known = known_rate_bound(trace, cfg) / oracle_cost
        print(
            f"  known-rate bound {known:.3f}x oracle: least for short <= {GOAL_TAU_U:g} % knowing "
            "each bucket's rate and spread ahead, not its count"
        )
        bound = table_tau_u_bound(trace, cfg)
        note = " (the tau_U goal is out of reach here)" if bound > GOAL_TAU_U else ""
        print(f"  bound tauU {bound:.2f} %: least any causal policy honouring the table gets{note}")
    print(f"\n({time.monotonic() - started:.0f} s on {os.cpu_count()} cpus)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
