"""`controller import-conf`: print the TOML equivalent of a GBrowse aws_balancer.conf."""

from __future__ import annotations

import sys

from controller.commands.exit_codes import EXIT_BAD_INPUT, EXIT_OK
from controller.config.reader import ConfigError
from controller.gbrowse.import_conf import convert_aws_balancer_conf


def import_conf(path: str) -> int:
    """Print the converted TOML and return 0, or print each problem to stderr and return 2."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as exc:
        print(f"{path}: cannot read: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")  # old Perl-era files; every byte decodes
    try:
        toml = convert_aws_balancer_conf(text, path)
    except ConfigError as exc:
        for line in exc.errors:
            print(line, file=sys.stderr)
        return EXIT_BAD_INPUT
    sys.stdout.write(toml)
    return EXIT_OK
