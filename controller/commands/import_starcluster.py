"""`controller import-conf --starcluster`: print the TOML equivalent of a StarCluster config."""

from __future__ import annotations

import os
import sys

from controller.commands.exit_codes import EXIT_BAD_INPUT, EXIT_OK
from controller.config.reader import ConfigError
from controller.gridengine.starcluster_import import convert_starcluster_config


def import_starcluster(path: str) -> int:
    """Print the converted TOML and return 0, or print each problem to stderr and return 2."""
    try:
        text = _read(path)
    except OSError as exc:
        print(f"{path}: cannot read: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        toml = convert_starcluster_config(text, path, read_include=_read_include)
    except ConfigError as exc:
        for line in exc.errors:
            print(line, file=sys.stderr)
        return EXIT_BAD_INPUT
    sys.stdout.write(toml)
    return EXIT_OK


def _read_include(path: str) -> str:
    """An INCLUDE file, its path expanded as StarCluster expanded it (~ and $VARS)."""
    return _read(os.path.expandvars(os.path.expanduser(path)))


def _read(path: str) -> str:
    with open(path, "rb") as f:
        raw = f.read()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")  # Python 2 era files; every byte decodes
