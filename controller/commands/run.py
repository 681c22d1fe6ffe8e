"""`controller run`: config, logging, the seed's daemon options, then the actor runtime."""

from __future__ import annotations

import argparse
import asyncio
import sys

from controller.commands.exit_codes import EXIT_BAD_INPUT


def run_command(args: argparse.Namespace) -> int:
    from controller.config.reader import ConfigError, load_config
    from controller.runtime.logs import configure_logging

    if args.kill:
        from controller.runtime.daemon import kill_daemon

        if not args.pidfile:
            print("controller run --kill: give --pidfile of the daemon to stop", file=sys.stderr)
            return EXIT_BAD_INPUT
        return kill_daemon(args.pidfile)
    if not args.config:
        print("controller run: give the config file with -c CONFIG", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        for line in exc.errors:
            print(line, file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.cluster is not None and args.cluster not in {c.name for c in config.clusters}:
        known = ", ".join(c.name for c in config.clusters) or "none"
        print(
            f"{args.config}: --cluster {args.cluster}: no [cluster.{args.cluster}] section "
            f"(defined: {known})",
            file=sys.stderr,
        )
        return EXIT_BAD_INPUT

    pidfile = None
    try:
        if args.background:
            from controller.runtime.daemon import daemonize

            # Returns in the daemon only, holding the pidfile with the daemon's own PID.
            pidfile = daemonize(logfile=args.logfile, pidfile=args.pidfile)
        elif args.pidfile:
            from controller.runtime.daemon import PidFile

            pidfile = PidFile(args.pidfile)
            pidfile.acquire()
    except Exception as exc:  # DaemonError, or OSError on an unwritable path
        print(f"controller run: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        configure_logging(verbosity=args.verbosity, logfile=args.logfile)
    except OSError as exc:
        print(f"controller run: --logfile {args.logfile}: {exc.strerror}", file=sys.stderr)
        return EXIT_BAD_INPUT

    from controller.app import StartupError, run_controller

    try:
        return asyncio.run(
            run_controller(config, dry_run=args.dry_run, user=args.user, cluster=args.cluster)
        )
    except StartupError as exc:
        print(f"{args.config}: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    finally:
        if pidfile is not None:
            pidfile.release()
