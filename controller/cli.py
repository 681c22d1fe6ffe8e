"""The `controller` command: argument parsing and dispatch, nothing else.

Each sub-command lives in its own module and is imported only when used, so `controller --help`
and `check-config` stay fast and work without the cloud libraries being touched.
Exit codes follow ../shared/SPEC.md (controller.commands.exit_codes): 0 success, 1 unreachable
(status) or fleet left (teardown), 2 bad input; 130 after Ctrl-C.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from controller import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="controller",
        description="Keeps a fleet of EC2 spot instances sized to demand.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the controller until SIGTERM/SIGINT")
    run.add_argument("-c", "--config", "--conf", dest="config", help="TOML config file")
    run.add_argument("--dry-run", action="store_true", help="decide and log, never act")
    run.add_argument("--cluster", help="run the batch cluster [cluster.NAME] instead of slaves")
    run.add_argument("--background", action="store_true", help="detach and run as a daemon")
    run.add_argument("--pidfile", help="file holding the daemon's process id (locked)")
    run.add_argument("--logfile", help="append logs to this file (JSON lines; reopened on SIGHUP)")
    run.add_argument(
        "--log-format",
        choices=("json", "console"),
        help="stderr's log lines: JSON objects or aligned text (default: text on a terminal, "
        "JSON otherwise)",
    )
    run.add_argument("--user", help="user to run as (drops privileges after start as root)")
    run.add_argument("--kill", action="store_true", help="stop the daemon named by --pidfile")
    run.add_argument(
        "--verbosity",
        type=int,
        choices=range(4),
        default=2,
        metavar="0..3",
        help="0 errors only, 1 warnings, 2 info (default), 3 debug",
    )

    check = sub.add_parser("check-config", help="validate and print the resolved config")
    check.add_argument("-c", "--config", required=True)
    check.add_argument(
        "-q", "--quiet", action="store_true", help="print problems and notes only (ExecStartPre)"
    )

    status = sub.add_parser("status", help="summary of a running controller")
    status.add_argument("--url", default=None, help="stats endpoint (default from [stats] listen)")
    status.add_argument("-c", "--config", default=None)

    sim = sub.add_parser("simulate", help="replay a load trace against the simulated cloud")
    sim.add_argument("-c", "--config", required=True)
    sim.add_argument("--trace", required=True, help="CSV of t_seconds,requests")
    sim.add_argument(
        "--policy", default="ours", help="ours (default), gbrowse, starcluster, oracle, table"
    )
    sim.add_argument("--json", action="store_true", help="print the report as JSON")
    sim.add_argument("--timeline", help="write one CSV row per bucket to this file")
    sim.add_argument("--plot", help="draw load, demand, billed and ready (.png or .html)")
    sim.add_argument("--seed", type=int, default=1, help="random seed of the simulated cloud")
    sim.add_argument(
        "--cluster",
        metavar="NAME",
        help="replay a batch trace (submit_time_s,run_time_s,cores,mem_mb) through [cluster.NAME]",
    )

    imp = sub.add_parser(
        "import-conf", help="convert GBrowse's aws_balancer.conf or a StarCluster config to TOML"
    )
    imp.add_argument("conf", metavar="AWS_BALANCER_CONF", nargs="?")
    imp.add_argument(
        "--starcluster",
        metavar="STARCLUSTER_CONFIG",
        help="convert a StarCluster config (~/.starcluster/config) instead",
    )

    iam = sub.add_parser("iam-policy", help="print the least-privilege IAM policy")
    iam.add_argument("-c", "--config", required=True)
    iam.add_argument(
        "--kms-key",
        action="append",
        default=[],
        metavar="ARN",
        help="a customer managed KMS key encrypting the image or data snapshots (repeatable)",
    )
    iam.add_argument(
        "--sync-data", action="store_true", help="also grant what `controller sync-data` needs"
    )

    down = sub.add_parser("teardown", help="terminate everything tagged as this fleet's")
    down.add_argument("-c", "--config", required=True)
    down.add_argument("--cluster", help="first take [cluster.NAME]'s nodes out of Grid Engine")
    down.add_argument(
        "--dry-run", action="store_true", help="read the fleet and print the plan; change nothing"
    )
    down.add_argument(
        "--yes", action="store_true", help="do not ask first on a terminal (scripts never are)"
    )
    down.add_argument(
        "--force",
        action="store_true",
        help="go on even while a controller of the same fleet runs (it may launch again)",
    )

    sync = sub.add_parser("sync-data", help="copy the master's data to a new snapshot for slaves")
    sync.add_argument("-c", "--config", "--conf", dest="config", required=True)
    sync.add_argument(
        "--path",
        action="append",
        default=[],
        metavar="DIR",
        help="a directory to copy (repeatable; default GBrowse's /var/lib/gbrowse2/databases)",
    )
    sync.add_argument("--mysql", metavar="DIR", help="MySQL's data directory (copied whole)")
    sync.add_argument("--postgres", metavar="DIR", help="PostgreSQL's data directory (whole)")
    sync.add_argument("--image-id", metavar="AMI", help="slave image; also set as [slave] image_id")
    sync.add_argument(
        "--keep", type=int, default=2, metavar="N", help="snapshot generations kept (default 2)"
    )
    sync.add_argument("--dry-run", action="store_true", help="print the plan; create nothing")
    sync.add_argument("--yes", action="store_true", help="do not ask first on a terminal")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _dispatch(args)
    except KeyboardInterrupt:
        return 130


def _dispatch(args: argparse.Namespace) -> int:
    match args.command:
        case "check-config":
            from controller.commands.check_config import check_config

            return check_config(args.config, quiet=args.quiet)
        case "import-conf" if (args.conf is None) == (args.starcluster is None):
            print(
                "controller import-conf: give either AWS_BALANCER_CONF or "
                "--starcluster STARCLUSTER_CONFIG",
                file=sys.stderr,
            )
            return 2
        case "import-conf" if args.starcluster is not None:
            from controller.commands.import_starcluster import import_starcluster

            return import_starcluster(args.starcluster)
        case "import-conf":
            from controller.commands.import_conf import import_conf

            return import_conf(args.conf)
        case "run":
            from controller.commands.run import run_command

            return run_command(args)
        case "status":
            from controller.commands.status import status_command

            return status_command(url=args.url, config_path=args.config)
        case "simulate" if args.cluster is not None:
            from controller.commands.simulate_cluster import simulate_cluster_command

            return simulate_cluster_command(args)
        case "simulate":
            from controller.commands.simulate import simulate_command

            return simulate_command(args)
        case "iam-policy":
            from controller.commands.iam_policy import iam_policy_command

            return iam_policy_command(args.config, args.kms_key, sync_data=args.sync_data)
        case "teardown":
            from controller.commands.teardown import teardown_command

            return teardown_command(
                args.config,
                cluster=args.cluster,
                dry_run=args.dry_run,
                yes=args.yes,
                force=args.force,
            )
        case "sync-data":
            from controller.commands.sync_data import sync_data_command

            return sync_data_command(args)
    raise AssertionError(f"unhandled command {args.command}")


if __name__ == "__main__":
    sys.exit(main())
