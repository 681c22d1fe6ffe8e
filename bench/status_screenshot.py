"""docs/status-page.png from a real run: `controller run` against moto's EC2 server, a real
Apache with mod_status and fake render slaves, with load rising, bursting, losing a slave and
falling for a few minutes; then Debian's headless Chromium photographs its status page.

    .venv/bin/python bench/status_screenshot.py [--out docs/status-page.png] [--minutes-scale 1.0]

Everything stays on loopback: the script re-executes itself in a network namespace that holds
only loopback, as the test suite does.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

from gbrowse_rig import (
    ROOT,
    BenchError,
    Rig,
    Settings,
    dummy_aws_environment,
    enter_private_network,
)

from tests.harness.chromium import screenshot
from tests.harness.e2e import Controller, listed

# (seconds, requests per second): a quiet start, a climb, a burst, the way down
PHASES = ((40, 1.0), (60, 5.0), (70, 12.0), (60, 6.0), (60, 2.0))
ROWS = [[1.5, 0, 1], [4, 1, 3], [8, 3, 5], [16, 5, 8]]
KILL_AT = 40  # seconds into the burst: one listed slave stops answering


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "status-page.png")
    parser.add_argument("--height", type=int, default=1250, help="the page's height in pixels")
    parser.add_argument(
        "--minutes-scale", type=float, default=1.0, help="stretch (>1) or shrink every phase"
    )
    return parser.parse_args(argv)


def drive(rig: Rig, ctl: Controller, scale: float) -> None:
    """Put the load of PHASES on Apache; one listed slave stops answering in the burst."""
    for number, (seconds, rps) in enumerate(PHASES):
        print(f"  {rps:4.1f} req/s for {seconds * scale:.0f} s", file=sys.stderr)
        load = rig.load(rps)
        start = time.monotonic()
        killed = number != 2
        try:
            while time.monotonic() < start + seconds * scale:
                rig.check_alive(ctl, "the load phases")
                if not killed and time.monotonic() > start + KILL_AT * scale:
                    killed = kill_one(rig, ctl)
                time.sleep(0.5)
        finally:
            load.stop()


def kill_one(rig: Rig, ctl: Controller) -> bool:
    """The first listed slave stops answering (its port refuses from now on)."""
    ids = {address: iid for iid, address in rig.instances().items()}
    for url in sorted(listed(ctl.farm)):
        address = url.split("//", 1)[1].rsplit(":", 1)[0]
        if address in ids:
            rig.farm.kill(ids[address], address)
            print(f"  slave {address} stops answering", file=sys.stderr)
            return True
    return False


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    enter_private_network()
    dummy_aws_environment()
    try:
        rig = Rig()
    except AssertionError as exc:  # the harness says which server did not start and why
        print(f"status_screenshot: a server did not start: {exc}", file=sys.stderr)
        return 1
    try:
        run_dir = rig.fresh()
        ctl = rig.start_controller(run_dir, Settings(poll_interval=5.0, rows=ROWS))
        try:
            drive(rig, ctl, args.minutes_scale)
            shot = run_dir / "status-page.png"
            screenshot(ctl.farm.stats_url + "/", shot, run_dir, height=args.height)
        finally:
            ctl.terminate()
        args.out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, args.out)
        print(f"wrote {args.out}", file=sys.stderr)
    except (BenchError, RuntimeError) as exc:
        print(f"status_screenshot: {exc}", file=sys.stderr)
        return 1
    finally:
        rig.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
