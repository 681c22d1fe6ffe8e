"""Fake render slaves on every address of a subnet, in a process of their own, for the EC2 bench.

    python bench/slave_farm.py --cidr 127.0.20.0/24 --port 8101

moto hands out the subnet's addresses in order, so a listener on every host address of the
subnet (127.x: loopback inside the bench's network namespace) is one on every instance's. Each
answers any GET with 403, as a GBrowse render slave does (tests/harness/fake_slave.py), one
asyncio server an address, all on one loop. A process of its own keeps the probes' work off the
bench process, which timestamps EC2 calls. It runs until SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.harness.fake_slave import FakeSlave


async def serve(cidr: str, port: int) -> None:
    slaves = [FakeSlave(str(a), port) for a in ipaddress.ip_network(cidr).hosts()]
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    try:
        for slave in slaves:
            await slave.start()
        print(f"serving {len(slaves)} fake slaves on {cidr} port {port}", flush=True)
        await stop.wait()
    finally:
        for slave in slaves:
            await slave.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cidr", required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    asyncio.run(serve(args.cidr, args.port))


if __name__ == "__main__":
    main()
