"""`controller teardown -c CONFIG`: remove everything tagged as this fleet's, in SPEC.md's order.

For a fleet whose controller is gone (or was never stopped cleanly): first renderfarm.conf goes
back to its empty form (and the master reloads), so GBrowse stops sending work to slaves that are
about to vanish; then controller.teardown cancels the spot requests, terminates the instances,
waits for them and deletes the fleet's security groups. Each step prints one line.
Exit 0 when nothing of the fleet is left, 1 otherwise, 2 for a config that cannot be used.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Callable

from controller.config import Config, ConfigError, load_config
from controller.renderfarm import render_renderfarm, write_atomic

EXIT_OK = 0
EXIT_LEFT = 1
EXIT_BAD_INPUT = 2
RELOAD_TIMEOUT = 60.0


def teardown_command(config_path: str) -> int:
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        for line in exc.errors or (str(exc),):
            print(line, file=sys.stderr)
        return EXIT_BAD_INPUT

    def say(line: str) -> None:
        print(line, flush=True)

    renderfarm_ok = clear_renderfarm(config, say)
    report = asyncio.run(_teardown(config, say))
    if report.clean and renderfarm_ok:
        return EXIT_OK
    return EXIT_LEFT


async def _teardown(config: Config, say: Callable[[str], None]):
    from controller.ec2cloud import make_ec2_cloud
    from controller.teardown import teardown_fleet

    async with make_ec2_cloud(config) as cloud:
        return await teardown_fleet(
            cloud,
            config.controller.fleet,
            keep_group_ids=(config.slave.security_group,) if config.slave.security_group else (),
            progress=say,
        )


def clear_renderfarm(config: Config, say: Callable[[str], None]) -> bool:
    """Rewrite renderfarm.conf with no slaves and reload the master if that changed it.

    Skipped (True) when there is no file and its directory cannot hold one (this host is not
    the master). False when the file could not be written or the reload failed.
    """
    path = config.master.renderfarm_conf
    if not path:
        return True
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.exists(path) and not os.access(directory, os.W_OK):
        say(f"renderfarm.conf: {path} does not exist and {directory} is not writable: skipped")
        return True
    try:
        changed = write_atomic(path, render_renderfarm(()))
    except OSError as exc:
        say(
            f"renderfarm.conf: cannot rewrite {path}: {exc.strerror or exc}; "
            "run as a user who may write it ([master] renderfarm_conf)"
        )
        return False
    if not changed:
        say(f"renderfarm.conf: {path} already lists no slaves")
        return True
    say(f"renderfarm.conf: {path} now lists no slaves (renderfarm = 0)")
    return _reload(config.master.reload_command, say)


def _reload(command: tuple[str, ...], say: Callable[[str], None]) -> bool:
    if not command:
        return True
    shown = " ".join(command)
    try:
        done = subprocess.run(
            list(command),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=RELOAD_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        say(f"reload: `{shown}` failed: {exc}; fix [master] reload_command or reload by hand")
        return False
    if done.returncode != 0:
        output = (done.stdout + done.stderr).decode(errors="replace").strip()[-300:]
        say(f"reload: `{shown}` exited {done.returncode}: {output}; reload the master by hand")
        return False
    say(f"reload: `{shown}` done")
    return True
