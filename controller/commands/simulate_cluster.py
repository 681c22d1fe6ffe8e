"""`controller simulate --cluster NAME --trace JOBS`: replay a batch trace through the cluster's
node pool; print cost, job waits and churn.

Bad input (config, cluster name, policy, trace, an option only the render farm's replay has) is
reported in one line naming the thing and the problem, exit 2, before anything runs. While it
replays, a progress bar is drawn on stderr when stderr is a terminal.
"""

from __future__ import annotations

import argparse
import json
import sys

from controller.app import StartupError, find_cluster
from controller.commands.exit_codes import EXIT_BAD_INPUT, EXIT_OK
from controller.commands.progress import ProgressBar
from controller.config.reader import ConfigError, load_config
from controller.simulation.cluster_replay import ClusterReplayError, simulate_cluster
from controller.simulation.cluster_report import cluster_summary
from controller.simulation.job_trace import JobTraceError, read_jobs


def simulate_cluster_command(args: argparse.Namespace) -> int:
    for option in ("timeline", "plot"):
        if getattr(args, option, None):
            return _bad(f"controller simulate: --{option} is for load traces, not with --cluster")
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        for line in exc.errors:
            print(line, file=sys.stderr)
        return EXIT_BAD_INPUT
    for line in config.notes:
        print(line, file=sys.stderr)
    bar = ProgressBar(sys.stderr, "simulating") if sys.stderr.isatty() else None
    try:
        cluster = find_cluster(config, args.cluster)
        jobs = read_jobs(args.trace)
        report = simulate_cluster(
            jobs,
            config,
            cluster,
            args.policy,
            seed=args.seed,
            trace_name=args.trace,
            progress=bar.update if bar else None,
        )
    except (StartupError, JobTraceError, ClusterReplayError) as exc:
        return _bad(str(exc))
    finally:
        if bar is not None:
            bar.close()
    if args.json:
        print(json.dumps(report.as_dict(), indent=2, sort_keys=True))
    else:
        print(cluster_summary(report))
    return EXIT_OK


def _bad(line: str) -> int:
    print(line, file=sys.stderr)
    return EXIT_BAD_INPUT
