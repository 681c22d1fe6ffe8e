"""`controller run`: config, the fleet's lock, logging, the seed's daemon options, then the actor
runtime.

A run (not --dry-run) holds its fleet's lock (controller.runtime.fleet_lock) until it exits: a
second controller of the same fleet is refused (exit 2), and `controller teardown` refuses while
it runs."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import TYPE_CHECKING

from controller.commands.exit_codes import EXIT_BAD_INPUT

if TYPE_CHECKING:
    from controller.config.schema import Config
    from controller.runtime.fleet_lock import FleetLock


def run_command(args: argparse.Namespace) -> int:
    from controller.config.reader import ConfigError, load_config

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

    fleet_lock = None
    if not args.dry_run:
        from controller.runtime.fleet_lock import FleetBusy, FleetLock

        # Before --background detaches, so the terminal sees a refusal.
        fleet_lock = FleetLock(config.controller.fleet)
        try:
            fleet_lock.acquire()
        except FleetBusy as busy:
            print(
                f"controller run: fleet {config.controller.fleet} is already run by "
                f"{busy.holder}: two controllers of one fleet fight; stop that one first, or "
                "give this config another [controller] fleet",
                file=sys.stderr,
            )
            return EXIT_BAD_INPUT
        except OSError as exc:
            print(f"controller run: cannot take the fleet's lock: {exc}", file=sys.stderr)
            return EXIT_BAD_INPUT
    try:
        return _run(args, config, fleet_lock)
    finally:
        if fleet_lock is not None:
            fleet_lock.release()


def _run(args: argparse.Namespace, config: Config, fleet_lock: FleetLock | None) -> int:
    """The run itself, while this process holds the fleet (None: a dry run holds nothing)."""
    from controller.runtime.logs import configure_logging

    pidfile = None
    try:
        if args.background:
            from controller.runtime.daemon import daemonize

            # Returns in the daemon only, holding the pidfile with the daemon's own PID.
            pidfile = daemonize(logfile=args.logfile, pidfile=args.pidfile)
            if fleet_lock is not None:
                fleet_lock.note_pid()  # the daemon's PID, not the terminal's
        elif args.pidfile:
            from controller.runtime.daemon import PidFile

            pidfile = PidFile(args.pidfile)
            pidfile.acquire()
    except Exception as exc:  # DaemonError, or OSError on an unwritable path
        print(f"controller run: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        log_format = getattr(args, "log_format", None)
        json = None if log_format is None else log_format == "json"
        configure_logging(verbosity=args.verbosity, logfile=args.logfile, json=json)
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
