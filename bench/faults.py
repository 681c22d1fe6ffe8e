"""The fault scenarios in their long forms, and the table of their figures.

    .venv/bin/python bench/faults.py [--only NAME ...] [--outage 120] [--latency 5]
                                     [--kills 20] [--hold 30] [--cooldown 30] [--seed 1] [--json]

It re-executes itself in a private network namespace with loopback only (as scripts/test runs
pytest), starts moto's EC2 server (in-process), a real Apache with mod_status, the fault proxy
and the render farm stand-in, and runs each scenario of tests/harness/fault_scenarios.py,
renderfarm_faults.py and fleet_scenarios.py (the ones tests/test_e2e_fault_scenarios.py runs
short) on a freshly reset EC2:

- throttling / server_errors: RequestLimitExceeded (HTTP 503) / InternalError (HTTP 500) on
  30 % of every EC2 call for `--outage` seconds; endpoint_down: connections refused that long;
  latency: `--latency` seconds added to every call that long. A slave dies as the fault starts;
- teardown_throttled / teardown_5xx: SIGTERM while 30 % of the calls are throttled / fail;
- interruptions: EC2 reclaims one slave, then all three;
- apache: Apache down, then garbage on its port, then Apache restarted (counter reset),
  `--hold` seconds each; hung_slave: a slave accepts connections and never answers;
- kill_storm: `kill -9` at a random moment of a scale-out, a scale-in or a teardown, `--kills`
  times, each followed by a restart;
- read_only / read_only_lost: renderfarm.conf's directory read-only for `--hold` seconds during
  a scale-out / while a slave dies (held, not terminated, while listed); full: its file system
  full (a filled tmpfs) for `--hold` seconds during a scale-out; teardown_read_only: SIGTERM
  while it is read-only (terminated anyway: its violations are the expected ones, exit 1);
- capacity: no capacity for the first instance type; after `--cooldown` seconds asked again
  (still none), then capacity back: a replacement on the first type again;
- ingress / ingress_ssh: the slaves' security group read back from EC2, without / with ssh_key;
- sighup_storm: SIGHUP every 20 ms for `--hold` seconds through a scale-out.

Columns: EC2 calls that reached the proxy; failed: those it failed or dropped (refused
connections never reach it); retries: botocore's second and later attempts and launches sent
again with their ClientToken; errors seen: the EC2 errors the controller counted
(controller_ec2_errors_total); recover: seconds, by what recovered; left: what carries the
fleet's tag after the teardown; violations: the invariants broken (tests/harness/fleet_watch.py),
listed under the table; secrets: finds of the run's test secrets in the controller's argv,
stdout/stderr, --logfile, /status or /metrics (counted among the violations too). Figures, not
assertions: exit 1 only when a scenario could not run to its end (it says why).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from gbrowse_rig import ROOT, dummy_aws_environment, enter_private_network

sys.path.insert(0, str(ROOT))

from tests.harness import fault_scenarios as scenarios
from tests.harness import fleet_scenarios, renderfarm_faults
from tests.harness.apache import Apache
from tests.harness.fault_proxy import FaultProxy
from tests.harness.moto_server import (
    NO_RETRY,
    REGION,
    SUBNET_CIDR,
    VPC_CIDR,
    ZONE,
    MotoEc2,
    MotoServer,
)
from tests.harness.net import free_port
from tests.harness.render_farm import RenderFarm
from tests.harness.scenario_run import Figures, Rig

SCENARIOS: dict[str, Callable[[Rig, argparse.Namespace], Figures]] = {
    "throttling": lambda rig, a: scenarios.ec2_storm(rig, "throttling", a.outage),
    "server_errors": lambda rig, a: scenarios.ec2_storm(rig, "server_errors", a.outage),
    "endpoint_down": lambda rig, a: scenarios.ec2_storm(rig, "endpoint_down", a.outage),
    "latency": lambda rig, a: scenarios.ec2_storm(rig, "latency", a.outage, latency=a.latency),
    "teardown_throttled": lambda rig, a: scenarios.teardown_under_fault(rig, "throttling"),
    "teardown_5xx": lambda rig, a: scenarios.teardown_under_fault(rig, "server_errors"),
    "interruptions": lambda rig, a: scenarios.interruptions(rig),
    "apache": lambda rig, a: scenarios.apache_faults(rig, a.hold),
    "hung_slave": lambda rig, a: scenarios.hung_slave(rig),
    "kill_storm": lambda rig, a: scenarios.kill_storm(rig, a.kills, a.seed),
    "read_only": lambda rig, a: scenarios.renderfarm_read_only(rig, a.hold),
    "read_only_lost": lambda rig, a: scenarios.lost_slave_read_only(rig, a.hold),
    "full": lambda rig, a: renderfarm_faults.renderfarm_full(rig, a.hold),
    "teardown_read_only": lambda rig, a: renderfarm_faults.teardown_read_only(rig),
    "sighup_storm": lambda rig, a: scenarios.sighup_storm(rig, a.hold),
    "capacity": lambda rig, a: fleet_scenarios.capacity_fallback(rig, a.cooldown),
    "ingress": lambda rig, a: fleet_scenarios.group_ingress(rig, ssh_key=False),
    "ingress_ssh": lambda rig, a: fleet_scenarios.group_ingress(rig, ssh_key=True),
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=sorted(SCENARIOS), help="these scenarios")
    parser.add_argument("--outage", type=float, default=120.0, help="seconds of each EC2 fault")
    parser.add_argument("--latency", type=float, default=5.0, help="seconds added to each call")
    parser.add_argument("--kills", type=int, default=20, help="kill -9 and restart, times")
    parser.add_argument("--hold", type=float, default=30.0, help="seconds of the other faults")
    parser.add_argument("--cooldown", type=float, default=30.0, help="capacity_cooldown, seconds")
    parser.add_argument("--seed", type=int, default=1, help="the kill storm's random moments")
    parser.add_argument("--json", action="store_true", help="the figures as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the runs' logs and configs")
    return parser.parse_args(argv)


class Servers:
    """moto, Apache and the temp dir, for every scenario; a fresh EC2, proxy and render farm
    stand-in for each."""

    def __init__(self, keep: bool) -> None:
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto logs every request
        self.keep = keep
        self.tmp = Path(tempfile.mkdtemp(prefix="bench-faults-"))
        self.tmp.chmod(0o755)  # Apache's workers run as www-data when the bench runs as root
        os.environ["CONTROLLER_LOCK_DIR"] = str(self.tmp)  # the fleet lock: this bench's own
        self._moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._moto.start()
        host, port = self._moto.get_host_and_port()
        self.moto = MotoServer(endpoint_url=f"http://{host}:{port}")
        self.apache = Apache(self.tmp / "httpd")
        self.apache.start()

    def rig(self, name: str) -> tuple[Rig, Callable[[], None]]:
        import boto3

        self.moto.reset()
        ec2 = boto3.client(
            "ec2", region_name=REGION, endpoint_url=self.moto.endpoint_url, config=NO_RETRY
        )
        vpc = ec2.create_vpc(CidrBlock=VPC_CIDR)["Vpc"]["VpcId"]
        subnet = ec2.create_subnet(VpcId=vpc, CidrBlock=SUBNET_CIDR, AvailabilityZone=ZONE)
        moto_ec2 = MotoEc2(self.moto.endpoint_url, REGION, vpc, subnet["Subnet"]["SubnetId"])
        proxy = FaultProxy(self.moto.endpoint_url)
        proxy.start()
        farm = RenderFarm(free_port())
        if not self.apache.running():
            self.apache.start()
        run_dir = self.tmp / name
        run_dir.mkdir()

        def close() -> None:
            farm.close()
            proxy.stop()

        return Rig(moto_ec2, proxy, self.apache, farm, run_dir), close

    def close(self) -> None:
        self.apache.close()
        self._moto.stop()
        if self.keep:
            print(f"runs kept in {self.tmp}", file=sys.stderr)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)


def run_all(servers: Servers, args: argparse.Namespace) -> dict[str, Figures | str]:
    results: dict[str, Figures | str] = {}
    for name in args.only or list(SCENARIOS):
        print(f"{name} ...", file=sys.stderr, flush=True)
        started = time.monotonic()
        rig, close = servers.rig(name)
        try:
            results[name] = SCENARIOS[name](rig, args)
        except AssertionError as exc:  # ScenarioError, or a server that did not start
            results[name] = str(exc)
            print(f"  {name} did not finish: {exc}", file=sys.stderr)
        finally:
            close()
        print(f"  {time.monotonic() - started:.0f} s", file=sys.stderr)
    return results


def print_table(results: dict[str, Figures | str]) -> None:
    header = ("scenario", "calls", "failed", "retries", "errors seen", "left", "violations")
    header += ("secrets",)
    print(f"{header[0]:<20}{''.join(f'{h:>12}' for h in header[1:])}  recover (s)")
    for name, f in results.items():
        if isinstance(f, str):
            print(f"{name:<20}  did not finish: {f.splitlines()[0]}")
            continue
        left = sum(f.left.values())
        secrets = sum(1 for v in f.violations if "appears in the controller's" in v)
        row = (f.calls, f.injected, f.retries, f.surfaced, left, len(f.violations), secrets)
        recover = ", ".join(f"{what} {seconds:g}" for what, seconds in f.recover.items())
        print(f"{name:<20}{''.join(f'{v:>12}' for v in row)}  {recover}")
    for name, f in results.items():
        if isinstance(f, Figures) and (f.violations or any(f.left.values()) or f.exit_code):
            print(f"\n{name}: exit {f.exit_code}, left {f.left}")
            for line in f.violations[:10]:
                print(f"  {line}")
        if isinstance(f, Figures) and f.notes:
            print(f"{name}: {f.notes}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    enter_private_network()
    dummy_aws_environment()
    try:
        servers = Servers(args.keep)
    except AssertionError as exc:  # the harness's ServerStartError says which server and why
        print(f"faults: a server did not start: {exc}", file=sys.stderr)
        return 1
    try:
        results = run_all(servers, args)
    finally:
        servers.close()
    if args.json:
        print(json.dumps({k: v if isinstance(v, str) else asdict(v) for k, v in results.items()}))
    else:
        print_table(results)
    return 1 if any(isinstance(f, str) for f in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
