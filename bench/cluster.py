"""Cluster-mode benchmark: ours against StarCluster's loadbalance on real batch traces.

    .venv/bin/python bench/cluster.py [--traces DIR] [--slots N] [--boot 90] [--seed 1]
                                    [--poll 30] [--idle 300] [--price 0.035] [--max-scale 1]

Each batch trace (Parallel Workloads Archive, first 21 days) is replayed in virtual time through
a small discrete-event model of a Grid Engine cluster, once per policy, and the table gives what
the cluster cost and how long its jobs waited. `controller.policy.queue_policy` claims to beat
StarCluster's `loadbalance` on both; this measures it.

How the comparison is kept honest:

- One model for all (controller.simulation.queue_model, which `controller simulate --cluster`
  also replays through): every policy sees the same jobs, the same boot times (the k-th launch of
  every policy boots in the same `--boot` +- 20 % seconds, drawn from `--seed`), the same
  scheduler and the same price. A node is billed per second from launch to removal (or to the
  end of the replay: the last job's end) and runs jobs once booted.
- The scheduler is Grid Engine's default without reservations: pending jobs in submit order,
  and at every event each one whose cores fit the free slots of the ready nodes starts at once
  (dispatch delay not modelled), filling one node's free slots before the next, oldest node
  first (a `$fill_up` parallel environment, hosts in seqno order); it holds them for its run
  time. A big job can starve behind small ones, as on a real cluster without reservations, for
  every policy alike.
- Policies see what the real sensor would: a QueueSample built from the model as
  `controller.gridengine.sge.queue_sample` builds it from qstat (pending jobs and slots, running
  jobs, the oldest pending job's wait, busy and idle exec hosts: ready nodes only, a booting node
  is not an exec host yet), and the nodes with their launch time and readiness. Removals must be
  idle nodes (both policies promise it; a busy one is an error here, not skipped).
- Sizes: the slots per node (`--slots`) are chosen so a node is an ordinary EC2 size and
  max_nodes x slots is the machine the trace came from, so its load is servable as it was:
  KTH SP2 (100 processors; half its jobs ask <= 4) on 4-slot nodes, max 25; LLNL Thunder
  (4008 processors of 4-CPU nodes; every job asks a multiple of 4) on 8-slot nodes, max 501.
  At that size KTH's load (62 % of the machine, in bursts) queues whatever the policy: waits
  there are mostly the cap's; `--max-scale 2` doubles max_nodes to show the policies' own.
  Jobs larger than max_nodes x slots could never run and are dropped (counted in the header).
- Price: one spot price for every node, `--price` $/h (0.035, the controller's default
  `spot_price`). Only ratios matter: node-hours are printed too.
- ours: `QueuePolicy` as the controller builds it for a cluster (min 0, max as above,
  node_slots, `--idle` 300 s), polled every `--poll` 30 s (the default poll_interval).
- starcluster: `controller.policy.starcluster_queue.StarClusterQueuePolicy` at StarCluster 0.95's
  defaults (poll 60 s, wait_time 900 s, 1 node per pass, stabilization 180 s, kill_after 45);
  its master is left out (it would cost both the same), so min_nodes is 0 workers.
  kill_after keeps idle nodes to minute 45 of their hour, right under hourly billing, waste
  under per-second billing, so `starcluster/tuned` also runs it at its most eager settings:
  poll 30 s, wait_time 300 s (its floor), kill_after 0. Its add_nodes blocks until the node is
  up; the replay calls it again at that moment, as its loop resumes then.
- fixed: max_nodes up from the first job to the last (no balancer), boot not billed.
- bound: the trace's core-seconds packed perfectly into nodes (core-seconds / slots), no boot,
  no idle slot, no wait: a floor no policy reaches.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from controller.policy.band import PolicyDecision
from controller.policy.queue_policy import QueueInput, QueuePolicy
from controller.policy.starcluster_queue import StarClusterQueuePolicy
from controller.simulation.job_trace import Job, read_jobs
from controller.simulation.queue_model import BOOT_SPREAD, INF, JobQueue, Model, quantile

__all__ = ["BOOT_SPREAD", "Job", "Model", "Outcome", "main", "quantile", "read_jobs", "replay"]

TRACES = (  # file, processors of the machine it came from, default slots per node
    ("kth_sp2_1996_first21d.csv", 100, 4),
    ("llnl_thunder_2007_first21d.csv", 4008, 8),
)


def default_traces_dir() -> Path:
    return Path(__file__).resolve().parents[2] / "shared" / "traces"


@dataclass(slots=True)
class Outcome:
    waits: list[float]  # seconds, per job in submit order
    slowdowns: list[float]  # bounded slowdown per job
    node_seconds: float
    launches: int
    peak: int
    end: float
    never_ran: int = 0  # launched nodes that never ran a job


Decide = Callable[[QueueInput], PolicyDecision]


def replay(
    jobs: Sequence[Job],
    decide: Decide | None,
    *,
    slots: int,
    boot: float,
    seed: int,
    poll: float | None,
    prestart: int = 0,
    wake_on_ready: bool = False,
) -> Outcome:
    """Run `jobs` (sorted by submit time) to the last one's end under one policy.

    `decide` is called every `poll` seconds from the first submit (None: no policy, the
    `prestart` nodes are all there is). With `wake_on_ready`, after a launch the next call
    comes when the launched nodes are ready instead (StarCluster's blocking add_nodes).
    """
    model = Model(slots=slots, boot=boot, seed=seed)
    t0 = jobs[0].submit
    prestarted = {model.launch(t0, ready_now=True).instance_id for _ in range(prestart)}
    queue = JobQueue(jobs, model)
    next_poll = t0 if decide is not None and poll else INF
    last_submit = jobs[-1].submit
    now = t0
    while not queue.finished():
        now = min(queue.next_event(), next_poll)
        if now > last_submit + 365 * 86400:
            raise RuntimeError(f"{len(queue.pending)} job(s) never started: the policy is stuck")
        queue.step(now)
        if now >= next_poll:
            assert decide is not None and poll
            decision = decide(
                QueueInput(now=now, sample=queue.sample(now), nodes=model.node_view())
            )
            for iid in decision.remove:
                model.remove(iid, now)
            new = [model.launch(now) for _ in range(decision.launch)]
            next_poll = now + poll
            if new and wake_on_ready:
                next_poll = max(n.ready_at for n in new)

    slowdowns = [
        max(1.0, (w + j.run) / max(j.run, 10.0)) for w, j in zip(queue.waits, jobs, strict=True)
    ]
    return Outcome(
        waits=queue.waits,
        node_seconds=model.node_seconds(now),
        launches=model.launched - prestart,
        peak=model.peak,
        end=now,
        slowdowns=slowdowns,
        never_ran=model.launched - prestart - len(model.worked - prestarted),
    )


@dataclass(frozen=True, slots=True)
class Contender:
    name: str
    make: Callable[[], QueuePolicy | StarClusterQueuePolicy] | None
    poll: float | None
    prestart: int = 0


def contenders(args: argparse.Namespace, max_nodes: int, slots: int) -> list[Contender]:
    def starcluster(**kw) -> StarClusterQueuePolicy:
        return StarClusterQueuePolicy(max_nodes=max_nodes, node_slots=slots, **kw)

    return [
        Contender(
            "ours",
            lambda: QueuePolicy(
                min_nodes=0, max_nodes=max_nodes, node_slots=slots, idle_seconds=args.idle
            ),
            args.poll,
        ),
        Contender("starcluster", starcluster, starcluster().poll_interval),
        Contender(
            "starcluster/tuned",
            lambda: starcluster(wait_time=300.0, kill_after=0.0, polling_interval=30.0),
            30.0,
        ),
        Contender("fixed", None, None, prestart=max_nodes),
    ]


def row(name: str, cost: float, bound: float, node_hours: float, out: Outcome | None) -> str:
    if out is None:  # the bound
        return (
            f"  {name:<18} {cost:>9.2f} {cost / bound:>6.2f} {node_hours:>9.0f} "
            f"{0:>7.1f} {0:>7.1f} {0:>7.1f} {0:>8.1f} {1:>7.2f} {'-':>8} {'-':>6} {'-':>5}"
        )
    waits = sorted(w / 60 for w in out.waits)
    return (
        f"  {name:<18} {cost:>9.2f} {cost / bound:>6.2f} {node_hours:>9.0f} "
        f"{sum(waits) / len(waits):>7.1f} {quantile(waits, 0.5):>7.1f} "
        f"{quantile(waits, 0.95):>7.1f} {waits[-1]:>8.1f} "
        f"{sum(out.slowdowns) / len(out.slowdowns):>7.2f} {out.launches:>8} {out.never_ran:>6} "
        f"{out.peak:>5}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--traces", type=Path, default=default_traces_dir())
    parser.add_argument(
        "--slots", type=int, default=None, help="slots per node (default per trace)"
    )
    parser.add_argument("--boot", type=float, default=90.0, help="boot seconds (+- 20 %%)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--poll", type=float, default=30.0, help="ours' poll interval, seconds")
    parser.add_argument("--idle", type=float, default=300.0, help="ours' idle_seconds")
    parser.add_argument("--price", type=float, default=0.035, help="$ per node-hour")
    parser.add_argument(
        "--max-scale", type=float, default=1.0, help="max_nodes x slots = this x the machine"
    )
    args = parser.parse_args(argv)

    started = time.monotonic()
    print(
        f"boot {args.boot:g} s +- {BOOT_SPREAD:.0%}, seed {args.seed}, {args.price:g} $/node-hour; "
        "waits in minutes; bsld = mean bounded slowdown (run time floored at 10 s); "
        "unused = launched nodes that never ran a job"
    )
    for name, procs, default_slots in TRACES:
        path = args.traces / name
        if not path.exists():
            print(f"{path}: missing, skipped")
            continue
        slots = args.slots or default_slots
        every = read_jobs(path)
        max_nodes = math.ceil(args.max_scale * procs / slots)
        jobs = [j for j in every if j.cores <= max_nodes * slots]
        core_seconds = sum(j.cores * j.run for j in jobs)
        bound_hours = core_seconds / slots / 3600
        bound = bound_hours * args.price
        span = jobs[-1].submit - jobs[0].submit
        print()
        print(
            f"{name}: {len(jobs)} jobs ({len(every) - len(jobs)} dropped: more cores than "
            f"max_nodes x slots) over {span / 86400:.1f} days, {slots} slots/node, max_nodes "
            f"{max_nodes} ({max_nodes * slots} slots; the machine had {procs}), "
            f"mean load {core_seconds / span / slots:.0f} nodes"
        )
        print(
            f"  {'policy':<18} {'cost $':>9} {'xbound':>6} {'node-h':>9} {'wait':>7} {'p50':>7} "
            f"{'p95':>7} {'max':>8} {'bsld':>7} {'launches':>8} {'unused':>6} {'peak':>5}"
        )
        outcomes: dict[str, Outcome] = {}
        for c in contenders(args, max_nodes, slots):
            policy = c.make() if c.make is not None else None
            out = replay(
                jobs,
                policy.decide if policy is not None else None,
                slots=slots,
                boot=args.boot,
                seed=args.seed,
                poll=c.poll,
                prestart=c.prestart,
                wake_on_ready=getattr(policy, "blocks_while_booting", False),
            )
            outcomes[c.name] = out
            hours = out.node_seconds / 3600
            print(row(c.name, hours * args.price, bound, hours, out))
        print(row("bound", bound, bound, bound_hours, None))
        ours = outcomes["ours"]
        verdicts = []
        for other in ("starcluster", "starcluster/tuned"):
            theirs = outcomes[other]
            cheaper = ours.node_seconds < theirs.node_seconds
            sooner = sum(ours.waits) < sum(theirs.waits)
            verdicts.append(
                f"vs {other}: cheaper {'yes' if cheaper else 'NO'} "
                f"({ours.node_seconds / theirs.node_seconds:.3f}x), lower mean wait "
                f"{'yes' if sooner else 'NO'}"
            )
        print("  ours " + "; ".join(verdicts))
    print(f"\n({time.monotonic() - started:.0f} s on {os.cpu_count()} cpus)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
