"""`controller iam-policy`: print the least-privilege IAM policy for a config, as JSON."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Sequence

from controller.cloud.iam import iam_policy
from controller.cloud.master_defaults import MasterDefaultsError, fill_from_metadata, taken_text
from controller.commands.exit_codes import EXIT_BAD_INPUT, EXIT_OK
from controller.config.reader import ConfigError, load_config


def iam_policy_command(
    config_path: str, kms_keys: Sequence[str] = (), *, sync_data: bool = False
) -> int:
    """The policy on stdout (ready for `aws iam create-policy --policy-document file://...`).

    `kms_keys` (`--kms-key`, repeatable): customer managed keys that encrypt the images or data
    snapshots the config launches from; each adds the KMS use EC2 makes of it on our behalf.
    `sync_data` (`--sync-data`): also what `controller sync-data` needs (a config with data
    snapshots gets it anyway).
    """
    try:
        config = load_config(config_path)
        # The policy names the region: a blank one is the master's (run on the master).
        config, taken = asyncio.run(fill_from_metadata(config, launches=False))
    except ConfigError as exc:
        for line in exc.errors:
            print(line, file=sys.stderr)
        return EXIT_BAD_INPUT
    except MasterDefaultsError as exc:
        print(f"{config_path}: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if taken:
        print(f"from the master's instance metadata: {taken_text(taken)}", file=sys.stderr)
    try:
        policy = iam_policy(config, kms_keys, sync_data=sync_data)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return EXIT_BAD_INPUT
    print(json.dumps(policy, indent=2))
    return EXIT_OK
