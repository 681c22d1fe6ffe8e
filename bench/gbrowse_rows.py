"""Our row of the "faster than GBrowse's balancer" table, and the instance-type fallback case.

    .venv/bin/python bench/gbrowse_rows.py [--runs 3] [--seed 1] [--json]

It re-executes itself in a private network namespace with loopback only (`unshare --net`, as
scripts/test runs pytest), then runs the real `controller run` against moto's EC2 server behind a
counting proxy, a real Apache with mod_status and fake render slaves on the instances' 127.x
addresses (bench/gbrowse_rig.py). Each run starts from an empty EC2 and a fresh controller.

rows (the table's setting): poll_interval 6 s, load table 1.5:0-1, 4:1-3, 8:5-5, every other key
at its default. Once the controller is up, after a random part of a poll (`--seed`), a burst of
20 req/s hits Apache's index page and stays. Measured:
- burst -> first launch call: from the burst's first request to the proxy's receipt of the first
  RunInstances (or CreateFleet);
- EC2 calls from the controller's start until 5 slaves listed (total and by action), and the
  part of them from the burst on;
- burst -> 5 listed: until the reload that lists 5 slaves in renderfarm.conf (the reload command
  stamps each reload);
- reloads until 5 listed: reloads from the burst to that one, inclusive;
- steady EC2 calls per poll with 5 slaves: calls over `--steady-polls` polls (from one poll
  after the listing, half a poll after a call), divided by the polls;
- unreachable slave: after a random part of a poll more, one fake slave stops answering
  (connections refused); seconds until a reload drops it, and until a reload lists 5 again
  without it.

fallback: instance_types = ["m5.large", "c5.large"], every m5.large RunInstances refused with
InsufficientInstanceCapacity (HTTP 500, as EC2 answers), a 2 s poll, a load of 5 req/s against a
table row [1.0, 3, 3]. Measured: load -> 3 listed in seconds and polls, the RunInstances calls by
type and zone and which were refused (target: at most one refused call per type and zone per
capacity cooldown), and whether the 3 listed are c5.large within 3 polls.

Figures, not assertions: tests/test_bench_gbrowse_rows.py only checks that every row is printed.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from gbrowse_rig import (
    BenchError,
    Call,
    Controller,
    Load,
    Reload,
    Rig,
    Settings,
    dummy_aws_environment,
    enter_private_network,
    reloads,
)

ROWS = [[1.5, 0, 1], [4.0, 1, 3], [8.0, 5, 5]]
SLAVES = 5  # the last row's band at the burst
FALLBACK_TYPES = ["m5.large", "c5.large"]
FALLBACK_ROWS = [[1.0, 3, 3]]
FALLBACK_SLAVES = 3
FALLBACK_RPS = 5.0

LAUNCH_ACTIONS = ("RunInstances", "CreateFleet", "RequestSpotInstances")

FIRST_LAUNCH = "burst -> first launch call (s)"
CALLS_TO_LISTED = f"EC2 calls from start until {SLAVES} slaves listed"
CALLS_AFTER_BURST = f"EC2 calls from burst until {SLAVES} slaves listed"
LISTED = f"burst -> {SLAVES} listed in renderfarm.conf (s)"
RELOADS = f"reloads until {SLAVES} listed"
STEADY = f"steady EC2 calls per poll, {SLAVES} slaves"
UNLISTED = "unreachable slave leaves renderfarm.conf (s)"
REPLACED = "unreachable slave is replaced (s)"
FB_SECONDS = f"load -> {FALLBACK_SLAVES} listed (s)"
FB_POLLS = f"load -> {FALLBACK_SLAVES} listed (polls)"
FB_REFUSED = "RunInstances refused"
FB_WITHIN = "listed on c5.large within 3 polls"


@dataclass
class RowsRun:
    first_launch: float | None = None
    calls_to_listed: dict[str, int] | None = None
    calls_after_burst: int | None = None
    listed: float | None = None
    reloads: int | None = None
    steady: dict[str, float] | None = None
    unlisted: float | None = None
    replaced: float | None = None


@dataclass
class FallbackRun:
    poll: float
    listed: float | None = None
    refused: dict[str, int] = field(default_factory=dict)  # "type@zone" -> refused calls
    launches: list[str] = field(default_factory=list)  # "+1.2s m5.large@us-east-1a refused"
    listed_types: list[str] = field(default_factory=list)

    @property
    def within_three_polls(self) -> bool:
        on_second = self.listed_types == [FALLBACK_TYPES[1]] * FALLBACK_SLAVES
        return on_second and self.listed is not None and self.listed <= 3 * self.poll


def wait_for(rig: Rig, ctl: Controller, what: str, found: Callable, timeout: float):
    """The first truthy `found()`, or None (said on stderr) after `timeout` seconds."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = found()
        if value:
            return value
        rig.check_alive(ctl, what)
        time.sleep(0.05)
    print(f"  no {what} within {timeout:.0f} s", file=sys.stderr)
    return None


def first_reload(ctl: Controller, after: float, test: Callable[[Reload], bool]):
    return lambda: next((r for r in reloads(ctl.farm) if r.at >= after and test(r)), None)


def rows_run(rig: Rig, args: argparse.Namespace, rng: random.Random) -> RowsRun:
    out = RowsRun()
    run_dir = rig.fresh()
    ctl = rig.start_controller(run_dir, Settings(poll_interval=args.poll, rows=ROWS))
    load = None
    try:
        time.sleep(rng.uniform(0.0, args.poll))
        load = rig.load(args.rps)
        burst = load.started
        full = wait_for(
            rig,
            ctl,
            f"{SLAVES} listed",
            first_reload(ctl, burst, lambda r: len(r.urls) >= SLAVES),
            args.timeout,
        )
        calls = rig.proxy.history()
        launches = [c.at for c in calls if c.action in LAUNCH_ACTIONS]
        out.first_launch = launches[0] - burst if launches else None
        if full is None:
            return out
        out.listed = full.at - burst
        out.calls_to_listed = dict(Counter(c.action for c in calls if c.at <= full.at))
        out.calls_after_burst = sum(1 for c in calls if burst <= c.at <= full.at)
        out.reloads = sum(1 for r in reloads(ctl.farm) if burst <= r.at <= full.at)
        out.steady = steady_calls(rig, ctl, full.at, args)
        time.sleep(rng.uniform(0.0, args.poll))  # the death at any point of the probe cycle
        out.unlisted, out.replaced = kill_one(rig, ctl, sorted(full.urls)[0], args)
        return out
    finally:
        stop(ctl, load)


def steady_calls(rig: Rig, ctl: Controller, listed: float, args: argparse.Namespace):
    """EC2 calls per poll, by action, over `--steady-polls` polls after one poll of settling.

    The window opens half a poll after the last call, so that its edges fall between the
    controller's cycles rather than on one (a cycle lasts a poll plus its own work)."""
    sleep_until(rig, ctl, listed + args.poll)
    calls = rig.proxy.history()
    start = max(time.time(), calls[-1].at + args.poll / 2 if calls else 0.0)
    end = start + args.steady_polls * args.poll
    sleep_until(rig, ctl, end + 0.2)
    window = [c.action for c in rig.proxy.history() if start <= c.at < end]
    return {action: n / args.steady_polls for action, n in Counter(window).items()}


def sleep_until(rig: Rig, ctl: Controller, moment: float) -> None:
    while time.time() < moment:
        rig.check_alive(ctl, "the steady polls")
        time.sleep(min(0.2, max(0.0, moment - time.time())))


def kill_one(rig: Rig, ctl: Controller, victim_url: str, args: argparse.Namespace):
    address = address_of(victim_url)
    instance_id = next(i for i, a in rig.instances().items() if a == address)
    rig.farm.kill(instance_id, address)
    killed = time.time()
    gone = wait_for(
        rig,
        ctl,
        "dead slave unlisted",
        first_reload(ctl, killed, lambda r: victim_url not in r.urls),
        args.timeout,
    )
    if gone is None:
        return None, None
    back = wait_for(
        rig,
        ctl,
        "replacement listed",
        first_reload(ctl, killed, lambda r: victim_url not in r.urls and len(r.urls) >= SLAVES),
        args.timeout,
    )
    return gone.at - killed, (back.at - killed if back else None)


def fallback_run(rig: Rig, args: argparse.Namespace, rng: random.Random) -> FallbackRun:
    out = FallbackRun(poll=args.fallback_poll)
    run_dir = rig.fresh()
    rig.proxy.refused_types = {FALLBACK_TYPES[0]}
    settings = Settings(
        poll_interval=args.fallback_poll, rows=FALLBACK_ROWS, instance_types=FALLBACK_TYPES
    )
    ctl = rig.start_controller(run_dir, settings)
    load = None
    try:
        time.sleep(rng.uniform(0.0, args.fallback_poll))
        load = rig.load(FALLBACK_RPS)
        start = load.started
        full = wait_for(
            rig,
            ctl,
            f"{FALLBACK_SLAVES} listed",
            first_reload(ctl, start, lambda r: len(r.urls) >= FALLBACK_SLAVES),
            args.timeout,
        )
        launches = [c for c in rig.proxy.history() if c.action == "RunInstances"]
        out.refused = {f"{t}@{rig.zone_of({})}": 0 for t in FALLBACK_TYPES}
        for call in launches:
            where = _where(rig, call)
            out.refused[where] = out.refused.get(where, 0) + int(call.refused)
            verdict = "refused" if call.refused else "ok"
            out.launches.append(f"{call.at - start:+.1f}s {where} {verdict}")
        if full is not None:
            out.listed = full.at - start
            out.listed_types = rig.types_of(
                {u.split("//", 1)[1].rsplit(":", 1)[0] for u in full.urls}
            )
        return out
    finally:
        stop(ctl, load)


def address_of(url: str) -> str:
    """127.0.20.5 of http://127.0.20.5:8101."""
    return url.split("//", 1)[1].rsplit(":", 1)[0]


def _where(rig: Rig, call: Call) -> str:
    return f"{call.params.get('InstanceType', '?')}@{rig.zone_of(call.params)}"


def stop(ctl: Controller, load: Load | None) -> None:
    if load is not None:
        load.stop()
        if load.failed:
            print(f"  {load.failed} of {load.sent} load requests failed", file=sys.stderr)
    code = ctl.terminate(timeout=60) if ctl.proc.poll() is None else ctl.proc.returncode
    if code != 0:
        print(f"  the controller exited {code}:\n{ctl.log_text()}", file=sys.stderr)


# --- figures -------------------------------------------------------------------------------------


def spread(values: list[float | None]) -> str:
    """min / median / max of the runs that reached the figure, and how many did not."""
    got = [v for v in values if v is not None]
    if not got:
        return "not reached"
    text = f"{min(got):7.1f} {statistics.median(got):7.1f} {max(got):7.1f}"
    missed = len(values) - len(got)
    return text + (f"   ({missed} of {len(values)} runs did not reach it)" if missed else "")


def by_action(runs: list[dict | None]) -> dict[str, list[float | None]]:
    actions = sorted({a for r in runs if r is not None for a in r})
    return {a: [None if r is None else r.get(a, 0) for r in runs] for a in actions}


def print_rows(runs: list[RowsRun], args: argparse.Namespace) -> None:
    print(
        f"rows: poll_interval {args.poll:g} s, load table 1.5:0-1 4:1-3 8:5-5, burst "
        f"{args.rps:g} req/s, {len(runs)} runs, RunInstances filled to "
        + ("MaxCount (as EC2 with capacity)" if args.ec2_fills == "max" else "MinCount (moto)")
    )
    print(f"  {'':52} {'min':>7} {'median':>7} {'max':>7}")
    line = "  {:52} {}"
    print(line.format(FIRST_LAUNCH, spread([r.first_launch for r in runs])))
    totals = [None if r.calls_to_listed is None else sum(r.calls_to_listed.values()) for r in runs]
    print(line.format(CALLS_TO_LISTED, spread(totals)))
    for action, values in by_action([r.calls_to_listed for r in runs]).items():
        print(line.format(f"  {action}", spread(values)))
    print(line.format(CALLS_AFTER_BURST, spread([r.calls_after_burst for r in runs])))
    print(line.format(LISTED, spread([r.listed for r in runs])))
    print(line.format(RELOADS, spread([r.reloads for r in runs])))
    steady = [None if r.steady is None else sum(r.steady.values()) for r in runs]
    print(line.format(STEADY, spread(steady)))
    for action, values in by_action([r.steady for r in runs]).items():
        print(line.format(f"  {action}", spread(values)))
    print(line.format(UNLISTED, spread([r.unlisted for r in runs])))
    print(line.format(REPLACED, spread([r.replaced for r in runs])))


def print_fallback(runs: list[FallbackRun], args: argparse.Namespace) -> None:
    print(
        f"fallback: instance_types {', '.join(FALLBACK_TYPES)}; every {FALLBACK_TYPES[0]} "
        f"RunInstances refused (InsufficientInstanceCapacity, HTTP 500); {FALLBACK_RPS:g} req/s "
        f"wanting {FALLBACK_SLAVES}; poll_interval {args.fallback_poll:g} s; {len(runs)} runs"
    )
    line = "  {:52} {}"
    print(line.format(FB_SECONDS, spread([r.listed for r in runs])))
    polls = [None if r.listed is None else r.listed / r.poll for r in runs]
    print(line.format(FB_POLLS, spread(polls)))
    for where in sorted({w for r in runs for w in r.refused}):
        label = f"{FB_REFUSED}, {where}"
        print(line.format(label, spread([r.refused.get(where, 0) for r in runs])))
    print(line.format(FB_WITHIN, " ".join("yes" if r.within_three_polls else "no" for r in runs)))
    for number, run in enumerate(runs, 1):
        print(f"  run {number} launch calls: {', '.join(run.launches) or 'none'}")
        print(f"  run {number} listed types: {', '.join(run.listed_types) or 'none'}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=3, help="runs of each scenario (3)")
    parser.add_argument("--seed", type=int, default=1, help="draws when the burst starts (1)")
    parser.add_argument("--poll", type=float, default=6.0, help="rows: poll_interval (6)")
    parser.add_argument("--rps", type=float, default=20.0, help="rows: the burst's req/s (20)")
    parser.add_argument(
        "--steady-polls", type=int, default=3, help="rows: polls the steady calls are counted (3)"
    )
    parser.add_argument(
        "--fallback-poll", type=float, default=2.0, help="fallback: poll_interval (2)"
    )
    parser.add_argument(
        "--timeout", type=float, default=90.0, help="longest wait for one step of a run (90 s)"
    )
    parser.add_argument(
        "--ec2-fills",
        choices=("moto", "max"),
        default="moto",
        help="moto: RunInstances launches MinCount (1), as moto does (default); max: MaxCount, "
        "as EC2 does when it has the capacity",
    )
    parser.add_argument("--json", action="store_true", help="every run's figures as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the runs' logs and configs")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.steady_polls < 1 or args.poll <= 0 or args.fallback_poll <= 0:
        parser.error("--runs and --steady-polls must be at least 1, the polls positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    enter_private_network()
    dummy_aws_environment()
    rng = random.Random(args.seed)
    try:
        rig = Rig(keep=args.keep, fill_max=args.ec2_fills == "max")
    except AssertionError as exc:  # the harness's ServerStartError says which server and why
        print(f"gbrowse_rows: a server did not start: {exc}", file=sys.stderr)
        return 1
    rows: list[RowsRun] = []
    fallback: list[FallbackRun] = []
    try:
        for number in range(1, args.runs + 1):
            print(f"rows run {number}/{args.runs}", file=sys.stderr)
            rows.append(rows_run(rig, args, rng))
        for number in range(1, args.runs + 1):
            print(f"fallback run {number}/{args.runs}", file=sys.stderr)
            fallback.append(fallback_run(rig, args, rng))
    except BenchError as exc:
        print(f"gbrowse_rows: {exc}", file=sys.stderr)
        return 1
    finally:
        rig.close()
    if args.json:
        fb = [{**asdict(r), "within_three_polls": r.within_three_polls} for r in fallback]
        print(json.dumps({"rows": [asdict(r) for r in rows], "fallback": fb}, indent=2))
    else:
        print_rows(rows, args)
        print_fallback(fallback, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
