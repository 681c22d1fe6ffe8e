"""The `controller` command: argument parsing and dispatch, nothing else.

Each sub-command lives in its own module and is imported only when used, so `controller --help`
stays fast and `check-config` touches no cloud library but botocore's bundled endpoint data.
Exit codes follow ../shared/SPEC.md (controller.commands.exit_codes): 0 success, 1 unreachable
(status) or fleet left (teardown), 2 bad input; 130 after Ctrl-C. Every sub-command's --help
ends with an example and its exit codes (the epilogs below).
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
from collections.abc import Sequence

from controller import __version__

# simulate --policy: controller.policy.factory.POLICY_NAMES and the oracle (a test keeps them
# equal; not imported here so that --help loads no policy code)
SIMULATE_POLICIES = ("ours", "table", "gbrowse", "gbrowse-lifetime", "starcluster", "oracle")
COMPLETION_SHELLS = ("bash", "zsh")
CONFIG_HELP = "the TOML config file (e.g. /etc/controller/config.toml)"


def _epilog(examples: Sequence[str], exits: Sequence[tuple[int | None, str]]) -> str:
    """The example(s) and the exit codes, laid out by hand (RawDescriptionHelpFormatter)."""
    lines = ["Example:" if len(examples) == 1 else "Examples:"]
    lines += [f"  {example}" for example in examples]
    lines += ["", "Exit status:"]
    for code, meaning in exits:
        head = "  " if code is None else f"  {code:<4}"
        lines += textwrap.wrap(meaning, 78, initial_indent=head, subsequent_indent="      ")
    return "\n".join(lines)


def _command(
    sub: argparse._SubParsersAction,
    name: str,
    summary: str,
    examples: Sequence[str],
    exits: Sequence[tuple[int | None, str]],
) -> argparse.ArgumentParser:
    return sub.add_parser(
        name,
        help=summary,
        description=summary[0].upper() + summary[1:] + ".",
        epilog=_epilog(examples, exits),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="controller",
        description="Keeps a fleet of EC2 spot instances sized to demand.",
        epilog="Run `controller COMMAND --help` for a command's options, an example and its "
        "exit codes.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", help="one of these (each has --help)"
    )
    _run_parser(sub)
    _check_config_parser(sub)
    _status_parser(sub)
    _simulate_parser(sub)
    _import_conf_parser(sub)
    _iam_policy_parser(sub)
    _teardown_parser(sub)
    _sync_data_parser(sub)
    _completion_parser(sub)
    return parser


def _run_parser(sub: argparse._SubParsersAction) -> None:
    run = _command(
        sub,
        "run",
        "run the controller until SIGTERM/SIGINT",
        [
            "controller run -c /etc/controller/config.toml --dry-run",
            "controller run -c /etc/controller/config.toml --background --pidfile /run/c.pid",
        ],
        [
            (0, "stopped cleanly (after the teardown, or leaving the fleet with on_exit=leave)"),
            (1, "stopped with part of the fleet left, or an actor kept failing"),
            (2, "bad input: config, options, or a controller of this fleet already runs"),
        ],
    )
    run.add_argument("-c", "--config", "--conf", dest="config", help=CONFIG_HELP)
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


def _check_config_parser(sub: argparse._SubParsersAction) -> None:
    check = _command(
        sub,
        "check-config",
        "validate the config and print it resolved",
        ["controller check-config -c /etc/controller/config.toml"],
        [
            (0, "valid (notes, if any, on stderr)"),
            (2, "invalid: one line per problem on stderr, naming the key and what to do"),
        ],
    )
    check.add_argument("-c", "--config", required=True, help=CONFIG_HELP)
    check.add_argument(
        "-q", "--quiet", action="store_true", help="print problems and notes only (ExecStartPre)"
    )


def _status_parser(sub: argparse._SubParsersAction) -> None:
    status = _command(
        sub,
        "status",
        "summary of a running controller",
        [
            "controller status -c /etc/controller/config.toml",
            "controller status --url http://127.0.0.1:8990 --nagios",
        ],
        [
            (0, "the summary was read"),
            (1, "the stats endpoint cannot be read"),
            (2, "the config cannot be read"),
            (
                None,
                "With --nagios: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (endpoint or config "
                "unreadable)",
            ),
        ],
    )
    status.add_argument("--url", default=None, help="stats endpoint (default from [stats] listen)")
    status.add_argument(
        "-c", "--config", default=None, help="config whose [stats] names the endpoint and token"
    )
    shape = status.add_mutually_exclusive_group()
    shape.add_argument("--json", action="store_true", help="print the endpoint's /status JSON")
    shape.add_argument(
        "--nagios",
        action="store_true",
        help="one status line and a monitoring check's exit code: 0 ok, 1 warning, "
        "2 critical, 3 unknown (as Nagios plugins)",
    )


def _simulate_parser(sub: argparse._SubParsersAction) -> None:
    sim = _command(
        sub,
        "simulate",
        "replay a load trace against the simulated cloud",
        [
            "controller simulate -c config.toml --trace load.csv --policy gbrowse --plot out.html",
            "controller simulate -c config.toml --cluster small --trace jobs.csv",
        ],
        [(0, "replayed"), (2, "bad input: config, trace, cluster, policy or --plot suffix")],
    )
    sim.add_argument("-c", "--config", required=True, help=CONFIG_HELP)
    sim.add_argument("--trace", required=True, help="CSV of t_seconds,requests")
    sim.add_argument(
        "--policy",
        default="ours",
        choices=SIMULATE_POLICIES,
        help="the policy replayed: ours (default) or a baseline",
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


def _import_conf_parser(sub: argparse._SubParsersAction) -> None:
    imp = _command(
        sub,
        "import-conf",
        "convert GBrowse's aws_balancer.conf or a StarCluster config to TOML",
        [
            "controller import-conf /etc/gbrowse2/aws_balancer.conf > config.toml",
            "controller import-conf --starcluster ~/.starcluster/config > config.toml",
        ],
        [(0, "converted (TOML on stdout)"), (2, "unreadable, or a setting that cannot convert")],
    )
    imp.add_argument(
        "conf", metavar="AWS_BALANCER_CONF", nargs="?", help="GBrowse's aws_balancer.conf"
    )
    imp.add_argument(
        "--starcluster",
        metavar="STARCLUSTER_CONFIG",
        help="convert a StarCluster config (~/.starcluster/config) instead",
    )


def _iam_policy_parser(sub: argparse._SubParsersAction) -> None:
    iam = _command(
        sub,
        "iam-policy",
        "print the least-privilege IAM policy",
        ["controller iam-policy -c /etc/controller/config.toml > policy.json"],
        [(0, "printed (JSON on stdout)"), (2, "bad input: config or --kms-key")],
    )
    iam.add_argument("-c", "--config", required=True, help=CONFIG_HELP)
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


def _teardown_parser(sub: argparse._SubParsersAction) -> None:
    down = _command(
        sub,
        "teardown",
        "terminate everything tagged as this fleet's",
        [
            "controller teardown -c /etc/controller/config.toml --dry-run",
            "controller teardown -c /etc/controller/config.toml --yes",
        ],
        [
            (0, "nothing of the fleet is left (or --dry-run printed the plan)"),
            (
                1,
                "something is left, EC2 could not be read, a controller of the fleet runs, "
                "or the question was not answered yes",
            ),
            (2, "bad input: config or cluster name"),
        ],
    )
    down.add_argument("-c", "--config", required=True, help=CONFIG_HELP)
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


def _sync_data_parser(sub: argparse._SubParsersAction) -> None:
    sync = _command(
        sub,
        "sync-data",
        "copy the master's data to a new snapshot for slaves",
        [
            "controller sync-data -c /etc/controller/config.toml --dry-run",
            "controller sync-data -c /etc/controller/config.toml --mysql /var/lib/mysql --yes",
        ],
        [
            (0, "done (or --dry-run printed the plan)"),
            (1, "failed or stopped; nothing was left behind"),
            (2, "bad input: config or options"),
            (130, "interrupted by Ctrl-C; nothing was left behind"),
        ],
    )
    sync.add_argument("-c", "--config", "--conf", dest="config", required=True, help=CONFIG_HELP)
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


def _completion_parser(sub: argparse._SubParsersAction) -> None:
    comp = _command(
        sub,
        "completion",
        "print the shell completion script (generated from these options)",
        [
            "controller completion bash > /usr/local/share/bash-completion/completions/controller",
            "controller completion zsh > /usr/local/share/zsh/site-functions/_controller",
            "source <(controller completion bash)    # this shell only",
        ],
        [(0, "printed")],
    )
    comp.add_argument("shell", choices=COMPLETION_SHELLS, help="the shell: bash or zsh")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code = _dispatch(args)
        sys.stdout.flush()  # a closed pipe shows here, not at the interpreter's exit
        return code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `controller simulate ... | head`: the reader has what it wanted; no traceback, and no
        # second error when Python flushes stdout on the way out.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141  # as a shell reports a command ended by SIGPIPE


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

            return status_command(
                url=args.url, config_path=args.config, as_json=args.json, nagios=args.nagios
            )
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
        case "completion":
            from controller.commands.completion import completion_command

            return completion_command(build_parser(), args.shell)
    raise AssertionError(f"unhandled command {args.command}")


if __name__ == "__main__":
    sys.exit(main())
