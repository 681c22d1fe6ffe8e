"""`controller iam-policy`: print the least-privilege IAM policy for a config, as JSON."""

from __future__ import annotations

import json
import sys

from controller.cli import EXIT_BAD_INPUT, EXIT_OK
from controller.config import ConfigError, load_config
from controller.iam import iam_policy


def iam_policy_command(config_path: str) -> int:
    """The policy on stdout (ready for `aws iam create-policy --policy-document file://...`)."""
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        for line in exc.errors:
            print(line, file=sys.stderr)
        return EXIT_BAD_INPUT
    print(json.dumps(iam_policy(config), indent=2))
    return EXIT_OK
