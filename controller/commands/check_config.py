"""`controller check-config`: validate a config and print it resolved, defaults filled in."""

from __future__ import annotations

import sys

from controller.commands.exit_codes import EXIT_BAD_INPUT, EXIT_OK
from controller.config.reader import ConfigError, load_config
from controller.config.render import render_toml


def check_config(path: str, quiet: bool = False) -> int:
    """Print the resolved TOML and return 0 (with any note on stderr), or print every problem to
    stderr and return 2. `quiet` (systemd's ExecStartPre): problems and notes only."""
    try:
        config = load_config(path)
    except ConfigError as exc:
        for line in exc.errors:
            print(line, file=sys.stderr)
        return EXIT_BAD_INPUT
    for line in config.notes:
        print(line, file=sys.stderr)
    if not quiet:
        sys.stdout.write(render_toml(config))
    return EXIT_OK
