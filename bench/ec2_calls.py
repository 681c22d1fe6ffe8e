"""What the controller asks of EC2, and how fast it answers a load step, on moto's server.

    .venv/bin/python bench/ec2_calls.py [--parts steady,step,latency] [--sizes 3,12,50,200]
        [--step-sizes 10,50] [--steps 20] [--poll 6] [--cycles 3] [--ec2-fills max|moto]

The real `controller run` process runs against moto's EC2 server behind a proxy that counts and
timestamps every call (bench/ec2_rig.py), with a real Apache and its mod_status as the load
sensor and a fake render slave (403) on every address moto hands out. Everything listens on
127.x: the script re-runs itself in a new network namespace with only loopback
(`unshare --net`; root, or a user namespace otherwise) unless it already is in one. The
controller uses the table policy (`[scaling] policy = "table"`), so a row of the load table
says exactly how many slaves a load wants; scale-in is kept out of every run.

Parts (each prints one table):

- steady: for each size N, a load table of one row `[0, N, N]` (N slaves whatever the load).
  Once N are listed in renderfarm.conf, one cycle more is let pass, then the calls of the next
  `--cycles` cycles are counted. A cycle starts with the first page of a DescribeInstances (the
  pool reads the fleet first each cycle); later pages are counted as calls too.
- step: for each N, a table `[5, N, N]` and no load but the sampler's own fetches; once the
  controller has a load sample, 20 requests/sec start (the step) and the calls and seconds until
  renderfarm.conf lists N slaves are counted (the file's mtime), with the reloads.
- latency: decision latency, from the mod_status reading that crossed a load-table row to the
  RunInstances it brought reaching the proxy, p50 and p99 over `--steps` steps
  (bench/ec2_latency.py says how the crossing reading is found).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ec2_latency import latency, print_latency
from ec2_rig import BenchError, Call, Rig, Run, controller, dummy_aws_env

from tests.harness.e2e import reload_snapshots
from tests.harness.net import ServerStartError
from tests.harness.render_farm import SteadyLoad

STEP_ROW_RPS = 5.0  # the step part's one row; the sampler's own fetches stay well under it
STEP_LOAD_RPS = 20.0
PARTS = ("steady", "step", "latency")


# steady


@dataclass
class SteadyRow:
    size: int
    listed_after: float
    cycles: int
    calls: list[Call]
    cycle_seconds: float


def cycle_starts(calls: list[Call]) -> list[float]:
    return [c.at for c in calls if c.action == "DescribeInstances" and not c.next_page]


def steady(rig: Rig, size: int, poll: float, cycles: int) -> SteadyRow:
    assert rig.proxy is not None
    with controller(rig, f"steady-{size}", [[0.0, size, size]], poll) as run:
        run.wait(f"{size} slaves listed", lambda: run.listed() >= size, 90 + poll * (5 + size / 10))
        listed_at = time.time()
        need = cycles + 2  # the one after listing is let pass; then `cycles` whole cycles

        def enough() -> bool:
            return len(cycle_starts(rig.proxy.between(listed_at))) >= need

        run.wait(f"{need} cycles after listing", enough, (need + 2) * poll * 3)
        starts = cycle_starts(rig.proxy.between(listed_at))
        first, last = starts[1], starts[1 + cycles]
        return SteadyRow(
            size=size,
            listed_after=listed_at - run.started_at,
            cycles=cycles,
            calls=rig.proxy.between(first, last),
            cycle_seconds=(last - first) / cycles,
        )


def by_action(calls: list[Call], per: float = 1.0) -> str:
    counts = Counter(c.action for c in calls)
    return ", ".join(f"{a} {n / per:g}" for a, n in sorted(counts.items(), key=lambda x: -x[1]))


def print_steady_header(poll: float) -> None:
    print(f"\nEC2 calls per steady cycle (load table [0, N, N], poll_interval {poll:g} s)")
    print(
        f"{'slaves':>6}  {'listed after':>12}  {'cycles':>6}  {'calls/cycle':>11}  "
        f"{'cycle s':>7}  calls per cycle by action",
        flush=True,
    )


def print_steady(r: SteadyRow) -> None:
    print(
        f"{r.size:>6}  {r.listed_after:>10.1f} s  {r.cycles:>6}  "
        f"{len(r.calls) / r.cycles:>11.2f}  {r.cycle_seconds:>7.1f}  "
        f"{by_action(r.calls, r.cycles) or '-'}",
        flush=True,
    )


# step


@dataclass
class StepRow:
    size: int
    seconds: float
    calls: list[Call]
    reloads: int


def reloaded(run: Run) -> bool:
    """The reload command has run on renderfarm.conf as it is now."""
    snapshots = reload_snapshots(run.farm)
    return bool(snapshots) and snapshots[-1] == run.farm.renderfarm.read_text()


def step(rig: Rig, size: int, poll: float) -> StepRow:
    assert rig.apache is not None and rig.proxy is not None
    with controller(rig, f"step-{size}", [[STEP_ROW_RPS, size, size]], poll) as run:
        run.wait_for_sample(poll)
        time.sleep(poll)  # a cycle on no load first: the start's own calls are not the step's
        reloads_before = len(reload_snapshots(run.farm))
        stepped_at = time.time()
        load = SteadyLoad("127.0.0.1", rig.apache.port, rps=STEP_LOAD_RPS)
        try:
            run.wait(f"{size} slaves listed", lambda: run.listed() >= size, 120 + 3 * poll)
        finally:
            load.stop()
        listed_at = run.farm.renderfarm.stat().st_mtime
        run.wait("the reload of the full list", lambda: reloaded(run), 30)
        return StepRow(
            size=size,
            seconds=listed_at - stepped_at,
            calls=rig.proxy.between(stepped_at, listed_at + 1e-6),
            reloads=len(reload_snapshots(run.farm)) - reloads_before,
        )


def print_step_header(poll: float) -> None:
    print(
        f"\nLoad step 0 -> {STEP_LOAD_RPS:g} requests/sec (table [{STEP_ROW_RPS:g}, N, N], "
        f"poll_interval {poll:g} s) until N listed in renderfarm.conf"
    )
    print(
        f"{'slaves':>6}  {'seconds':>7}  {'calls':>5}  {'reloads':>7}  calls by action", flush=True
    )


def print_step(r: StepRow) -> None:
    print(
        f"{r.size:>6}  {r.seconds:>7.1f}  {len(r.calls):>5}  {r.reloads:>7}  "
        f"{by_action(r.calls) or '-'}",
        flush=True,
    )


# the script


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def sizes(text: str) -> list[int]:
    values = [int(v) for v in text.split(",") if v.strip()]
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers a comma apart, got {text!r}")
    return values


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--parts", default=",".join(PARTS), help="comma list of " + ", ".join(PARTS))
    p.add_argument("--sizes", type=sizes, default=[3, 12, 50, 200], help="steady fleet sizes")
    p.add_argument("--step-sizes", type=sizes, default=[10, 50], help="slaves a load step wants")
    p.add_argument("--steps", type=positive, default=20, help="load steps of the latency part")
    p.add_argument("--poll", type=float, default=6.0, help="[master] poll_interval, seconds")
    p.add_argument("--cycles", type=positive, default=3, help="steady cycles counted per size")
    p.add_argument(
        "--ec2-fills",
        choices=("max", "moto"),
        default="max",
        help="max: a RunInstances gets MaxCount (EC2 with capacity); moto: MinCount",
    )
    p.add_argument("--keep", action="store_true", help="keep the logs and configs, say where")
    args = p.parse_args(argv)
    args.parts = [part.strip() for part in args.parts.split(",") if part.strip()]
    unknown = [part for part in args.parts if part not in PARTS]
    if unknown:
        p.error(f"--parts: unknown {', '.join(unknown)} (choose from {', '.join(PARTS)})")
    return args


def ensure_isolated() -> None:
    """Re-run in a network namespace with only loopback, unless this already is one."""
    if [name for _, name in socket.if_nameindex()] == ["lo"]:  # this process's namespace
        subprocess.run(["ip", "link", "set", "lo", "up"], check=False)  # up already, mostly
        return
    unshare = ["unshare", "--net"] + ([] if os.geteuid() == 0 else ["--map-current-user"])
    script = 'ip link set lo up && exec "$@"'
    os.execvp("unshare", [*unshare, "sh", "-c", script, "sh", sys.executable, *sys.argv])


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    ensure_isolated()
    dummy_aws_env()
    workdir = Path(tempfile.mkdtemp(prefix="bench-ec2-calls-"))
    workdir.chmod(0o755)  # Apache's workers (www-data when run as root) read their tree in it
    fills = (
        "MaxCount (as EC2 with capacity)"
        if args.ec2_fills == "max"
        else "MinCount (moto's own: one instance a call)"
    )
    print(
        f"controller against moto {moto_version()} through a counting proxy; "
        f"RunInstances filled to {fills}",
        flush=True,
    )
    rig = Rig(workdir, fill_max=args.ec2_fills == "max")
    try:
        rig.start()
        if "steady" in args.parts:
            print_steady_header(args.poll)
            for n in args.sizes:
                print_steady(steady(rig, n, args.poll, args.cycles))
        if "step" in args.parts:
            print_step_header(args.poll)
            for n in args.step_sizes:
                print_step(step(rig, n, args.poll))
        if "latency" in args.parts:
            print_latency(latency(rig, args.steps, args.poll), args.poll)
    except (BenchError, ServerStartError) as exc:
        print(f"bench/ec2_calls.py: {exc}\n(files kept in {workdir})", file=sys.stderr)
        return 1
    finally:
        rig.close()
    if args.keep:
        print(f"(files kept in {workdir})")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


def moto_version() -> str:
    from importlib.metadata import version

    return version("moto")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
