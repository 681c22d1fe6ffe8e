"""The settings bench/cluster.py compares, chosen leave-one-out: a sweep on each batch trace.

    .venv/bin/python bench/cluster_tune.py [--traces DIR] [--days llnl=7] [--seed 1] [--jsonl OUT]

For each trace (the first `--days` of it: LLNL's 11,473 jobs take seconds a run, so its first
7 days by default), every StarCluster `loadbalance` setting of STARCLUSTER_GRID and every
(hold_seconds, idle_seconds) of OURS_GRID is replayed through bench/cluster.py's model, and the
chosen ones are printed:

- StarCluster's best: its cheapest setting (ties: the lower mean wait). Under per-second
  billing its knobs hardly move its waits on these traces, while they move its cost: the
  cheapest is the hardest baseline for "cheaper at no worse wait".
- ours: the cheapest setting whose mean and p95 waits are no worse than StarCluster's best's.

bench/cluster.py then reports each trace with the settings chosen on the *other* one (and the
ones chosen on itself, marked in-sample). Also printed: how many StarCluster settings are both
cheaper than our choice and wait no longer (mean and p95) on the same trace; none is the claim.

The grid spans StarCluster's documented ranges (docs/sphinx/manual/load_balancer.rst and its
SGELoadBalancer docstring): polling interval at most 300 s (about 15 s a pass with its
visualizer), wait_time at least 300 s ("recommended 300 - 900"), add_nodes_per_iteration 1 and
up (1000: unbounded here), stabilization_time, and kill_after in minutes past the hour.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cluster import TRACES, Outcome, default_traces_dir, replay

from controller.policy.queue_policy import QueuePolicy
from controller.policy.starcluster_queue import StarClusterQueuePolicy
from controller.simulation.job_trace import Job, read_jobs
from controller.simulation.queue_model import quantile

STARCLUSTER_GRID = {
    "polling_interval": (15.0, 30.0, 60.0),
    "wait_time": (300.0, 450.0, 600.0, 900.0),
    "add_nodes_per_iteration": (1, 10, 100, 1000),
    "stabilization_time": (0.0, 180.0),
    "kill_after": (0.0, 45.0),
}
OURS_GRID = {
    "hold_seconds": (0.0, 30.0, 60.0, 120.0, 180.0),
    "idle_seconds": (0.0, 30.0, 60.0, 120.0, 300.0),
}
POLL = 30.0  # ours: the controller's default poll_interval
BOOT = 90.0


def grid(axes: dict[str, tuple]) -> list[dict]:
    return [dict(zip(axes, values, strict=True)) for values in itertools.product(*axes.values())]


def score(out: Outcome, bound_hours: float) -> dict:
    waits = sorted(w / 60 for w in out.waits)
    return {
        "xbound": out.node_seconds / 3600 / bound_hours,
        "mean": sum(waits) / len(waits),
        "p95": quantile(waits, 0.95),
        "launches": out.launches,
        "unused": out.never_ran,
    }


def run_starcluster(jobs: list[Job], settings: dict, *, max_nodes: int, slots: int, seed: int):
    policy = StarClusterQueuePolicy(max_nodes=max_nodes, node_slots=slots, **settings)
    return replay(
        jobs,
        policy.decide,
        slots=slots,
        boot=BOOT,
        seed=seed,
        poll=policy.poll_interval,
        wake_on_ready=True,
    )


def run_ours(jobs: list[Job], settings: dict, *, max_nodes: int, slots: int, seed: int):
    policy = QueuePolicy(min_nodes=0, max_nodes=max_nodes, node_slots=slots, **settings)
    return replay(jobs, policy.decide, slots=slots, boot=BOOT, seed=seed, poll=POLL)


def cheapest(rows: list[dict]) -> dict:
    return min(rows, key=lambda r: (r["xbound"], r["mean"]))


def choose(sc_rows: list[dict], our_rows: list[dict]) -> tuple[dict, dict | None]:
    """StarCluster's best and ours (None when no setting of ours waits no longer than it)."""
    best = cheapest(sc_rows)
    fit = [r for r in our_rows if r["mean"] <= best["mean"] and r["p95"] <= best["p95"]]
    return best, cheapest(fit) if fit else None


def dominating(sc_rows: list[dict], ours: dict) -> list[dict]:
    """StarCluster settings cheaper than `ours` and waiting no longer (mean and p95)."""
    return [
        r
        for r in sc_rows
        if r["xbound"] < ours["xbound"] and r["mean"] <= ours["mean"] and r["p95"] <= ours["p95"]
    ]


def parse_days(text: str) -> dict[str, float]:
    days = {}
    for part in filter(None, text.split(",")):
        name, _, value = part.partition("=")
        days[name.strip()] = float(value)
    return days


def settings_of(row: dict) -> dict:
    return {k: v for k, v in row.items() if k in STARCLUSTER_GRID or k in OURS_GRID}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--traces", type=Path, default=default_traces_dir())
    parser.add_argument("--days", default="llnl=7", help="per trace prefix: first N days")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--jsonl", type=Path, help="also write every run here")
    parser.add_argument(
        "--reuse", type=Path, help="take StarCluster's runs from an earlier --jsonl (same --days)"
    )
    args = parser.parse_args(argv)
    days = parse_days(args.days)
    reused = _reused(args.reuse) if args.reuse else {}
    log = args.jsonl.open("w") if args.jsonl else None
    started = time.monotonic()
    for name, procs, slots in TRACES:
        path = args.traces / name
        if not path.exists():
            print(f"{path}: missing, skipped")
            continue
        short = name.split("_")[0]
        max_nodes = procs // slots
        jobs = [j for j in read_jobs(str(path)) if j.cores <= max_nodes * slots]
        if short in days:
            jobs = [j for j in jobs if j.submit - jobs[0].submit <= days[short] * 86400]
        bound_hours = sum(j.cores * j.run for j in jobs) / slots / 3600
        rows: dict[str, list[dict]] = {"starcluster": [], "ours": []}
        for kind, axes, run in (
            ("starcluster", STARCLUSTER_GRID, run_starcluster),
            ("ours", OURS_GRID, run_ours),
        ):
            if (short, kind) in reused:
                rows[kind] = reused[short, kind]
                continue
            for settings in grid(axes):
                out = run(jobs, settings, max_nodes=max_nodes, slots=slots, seed=args.seed)
                row = settings | score(out, bound_hours)
                rows[kind].append(row)
                if log:
                    log.write(json.dumps({"trace": short, "policy": kind} | row) + "\n")
                    log.flush()
        best, ours = choose(rows["starcluster"], rows["ours"])
        span = f"first {days[short]:g} days" if short in days else "whole trace"
        print(f"{short} ({span}, {len(jobs)} jobs, seed {args.seed}):")
        print(f"  starcluster best: {settings_of(best)} -> {_figures(best)}")
        if ours is None:
            print("  ours: no setting waits no longer than starcluster's best")
            continue
        print(f"  ours:             {settings_of(ours)} -> {_figures(ours)}")
        beaten = dominating(rows["starcluster"], ours)
        print(
            f"  starcluster settings cheaper than ours at no longer mean and p95 wait: "
            f"{len(beaten)} of {len(rows['starcluster'])}"
        )
    print(f"({time.monotonic() - started:.0f} s)")
    return 0


def _reused(path: Path) -> dict[tuple[str, str], list[dict]]:
    rows: dict[tuple[str, str], list[dict]] = {}
    for line in path.read_text().splitlines():
        row = json.loads(line)
        if row.pop("policy") == "starcluster":
            rows.setdefault((row.pop("trace"), "starcluster"), []).append(row)
    return rows


def _figures(row: dict) -> str:
    return (
        f"{row['xbound']:.4f}x bound, wait mean {row['mean']:.2f} / p95 {row['p95']:.2f} min, "
        f"{row['unused']} of {row['launches']} launches never ran a job"
    )


if __name__ == "__main__":
    sys.exit(main())
