"""`controller simulate`: replay a trace, print cost, churn and elasticity, optionally save.

Bad input (config, trace, policy name, plot suffix) is reported in one line naming the file and
the problem, exit 2, before anything runs. While it replays, a progress bar is drawn on stderr
when stderr is a terminal (nothing is added to a log or a pipe).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from controller.commands.exit_codes import EXIT_BAD_INPUT, EXIT_OK
from controller.commands.progress import ProgressBar
from controller.config.reader import ConfigError, load_config
from controller.policy.factory import POLICY_NAMES
from controller.simulation.replay import simulate
from controller.simulation.report import SimResult, write_timeline
from controller.simulation.trace import TraceError, read_trace

ACTIONS_SHOWN = 8


def simulate_command(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        for line in exc.errors:
            print(line, file=sys.stderr)
        return EXIT_BAD_INPUT
    for line in config.notes:
        print(line, file=sys.stderr)
    choices = (*POLICY_NAMES, "oracle")
    if args.policy not in choices:
        print(
            f"controller simulate: unknown --policy {args.policy!r}; "
            f"choose one of {', '.join(choices)}",
            file=sys.stderr,
        )
        return EXIT_BAD_INPUT
    plot = getattr(args, "plot", None)
    if plot:
        from controller.simulation.plot import PlotError, check_plot_path

        try:
            check_plot_path(plot)
        except PlotError as exc:
            print(exc, file=sys.stderr)
            return EXIT_BAD_INPUT
    try:
        trace = read_trace(args.trace)
    except TraceError as exc:
        print(exc, file=sys.stderr)
        return EXIT_BAD_INPUT

    bar = ProgressBar(sys.stderr, "simulating") if sys.stderr.isatty() else None
    try:
        result = simulate(
            trace, config, args.policy, seed=args.seed, progress=bar.update if bar else None
        )
    finally:
        if bar is not None:
            bar.close()

    if args.timeline:
        try:
            write_timeline(result.timeline, args.timeline)
        except OSError as exc:
            reason = exc.strerror or exc
            print(f"{args.timeline}: cannot write the timeline: {reason}", file=sys.stderr)
            return EXIT_BAD_INPUT
    if plot:
        from controller.simulation.plot import PlotError, write_plot

        try:
            write_plot(result, plot)
        except PlotError as exc:
            print(exc, file=sys.stderr)
            return EXIT_BAD_INPUT
    if args.json:
        print(json.dumps(result.report.as_dict(), indent=2, sort_keys=True))
    else:
        print(summary(result, timeline=args.timeline, plot=plot))
    return EXIT_OK


def summary(result: SimResult, *, timeline: str | None = None, plot: str | None = None) -> str:
    """The human report: what was replayed, what it cost, how well supply followed demand."""
    r = result.report
    e = r.elasticity
    hours = (r.end_seconds - r.start_seconds) / 3600.0
    lines = [
        f"trace        {r.trace}: {r.buckets} buckets of {r.bucket_seconds:g} s ({hours:.1f} h)",
        f"policy       {r.policy} (seed {r.seed}); slave serves {r.slave_capacity_rps:g} req/s, "
        f"boots in {r.boot_seconds:g} s, costs ${r.spot_price:g}/h",
        f"cost         ${r.cost:.2f} for {r.instance_hours:.1f} instance-hours "
        f"(the demand itself needs {r.demand_hours:.1f} slave-hours)",
        f"churn        {r.launches} launches, {r.terminations} terminations, "
        f"{r.interruptions} interruptions, {r.capacity_errors} capacity errors, "
        f"{r.unfilled_requests} unfilled requests",
        f"fleet        peak demand {r.peak_demand}, peak billed {r.peak_billed}",
        f"elasticity   under: θU {e.theta_u:.2f} %  τU {e.tau_u:.2f} %   "
        f"over: θO {e.theta_o:.2f} %  τO {e.tau_o:.2f} %   instability {e.instability:.2f} %",
    ]
    if r.table_short_pct > 0:
        lines.append(
            f"load table   its max is below the demand for {r.table_short_pct:.1f} % of the "
            "buckets: the table, not the policy, limits the fleet there"
        )
    if result.actions:
        lines.append(f"decisions    {r.polls} polls; the first that changed the fleet:")
        for t, reason in result.actions[:ACTIONS_SHOWN]:
            lines.append(f"  t={t - r.start_seconds:>8.0f}s  {reason}")
        if len(result.actions) > ACTIONS_SHOWN:
            more = len(result.actions) - ACTIONS_SHOWN
            lines.append(f"  ... {more}{'+' if len(result.actions) >= 2000 else ''} more")
    else:
        lines.append(f"decisions    {r.polls} polls; none changed the fleet")
    if timeline:
        lines.append(f"timeline     {os.path.abspath(timeline)}")
    if plot:
        lines.append(f"plot         {os.path.abspath(plot)}")
    return "\n".join(lines)
