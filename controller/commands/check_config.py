"""`controller check-config`: validate a config and print it resolved, defaults filled in.

Beyond the config's own validity it checks what a real run would trip over on this machine
(controller.commands.preflight): an unknown region, a placeholder image id, a token file that is
missing or readable by others, a cluster whose plugins name no scheduler. The exit code is about
the config (0 valid, 2 invalid): what this machine lacks for now (GBrowse's directory, the EC2
instance metadata a blank region or image_id is taken from) is a note on stderr.
"""

from __future__ import annotations

import sys

from controller.commands.exit_codes import EXIT_BAD_INPUT, EXIT_OK
from controller.commands.preflight import preflight
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
    problems, notes = preflight(config)
    for line in (*problems, *config.notes, *notes):
        print(line, file=sys.stderr)
    if problems:
        return EXIT_BAD_INPUT
    if not quiet:
        sys.stdout.write(render_toml(config))
    return EXIT_OK
