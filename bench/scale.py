"""Scale benchmark: the controller's CPU and memory while it follows 100, 1,000 and 10,000 slaves.

    .venv/bin/python bench/scale.py [--sizes 100,1000,10000] [--seconds 150] [--poll 30]
                                    [--boot 5] [--profile]

For each size N a fresh Python process runs the actors `controller run` builds to follow a render
farm, assembled as controller/app.py assembles them, in real time, on the simulated cloud
(SimCloud: no AWS account; it answers at once, so what is measured is the controller itself):

- Stats, serving /status and /metrics (this script scrapes /metrics once a poll, as Prometheus
  would);
- FirewallKeeper, SpotPool (the fleet reconciler, policy `ours`), RenderfarmWriter (renderfarm.conf
  in a temporary directory, no reload command) and LoadSampler, reading a server-status page this
  script serves on 127.0.0.1 (a steady 50 requests/sec);
- in place of SlaveHealth, whose probes would need N real render slaves: a stand-in that passes a
  slave's readiness probe at the first probe (every `sample_interval`) after SimCloud says it has
  booted, the rule `controller simulate` uses. Ready slaves are not probed again.

The load table holds the fleet at N (one row, min = max = N): SpotPool launches N, they boot in
`--boot` seconds and are listed. From the moment all N are listed, the process's CPU seconds
(user + system) over `--seconds` of wall time give its share of one core; its peak RSS is the
most memory it held at any time, ramp included (resource.getrusage). Logs go to a JSON log file,
as with `controller run --logfile`. `--profile` prints what the steady state spends its time on
(cProfile of the measured window) to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import heapq
import io
import json
import pstats
import resource
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from actors.firewall_keeper import FirewallKeeper
from actors.load_sampler import LoadSampler
from actors.renderfarm_writer import RenderfarmWriter
from actors.spot_pool import SpotPool
from actors.stats import Stats
from controller.cloud.simcloud import SimCloud
from controller.config.schema import (
    Config,
    ControllerSection,
    LoadRow,
    LoadTableSection,
    MasterSection,
    StatsSection,
)
from controller.messages import (
    Decision,
    DrainSlave,
    InstanceDown,
    InstanceUp,
    RenderfarmWritten,
    SlaveReady,
)
from controller.policy.factory import make_policy
from controller.runtime.actor import Actor
from controller.runtime.bus import EOI, Bus
from controller.runtime.logs import configure_logging
from controller.runtime.supervisor import Runtime

SIZES = (100, 1000, 10000)
LOAD_RPS = 50  # what the server-status page shows: any load, the table holds the fleet at N
READY_TIMEOUT = 600.0  # seconds for the whole fleet to be listed before the run fails
TARGET = (1000, 2.0, 100.0)  # at 1,000 instances: under 2 % of one core and under 100 MB
HEADER = (
    f"{'instances':>9}  {'poll s':>6}  {'ramp s':>7}  {'CPU s':>7}  {'wall s':>7}  "
    f"{'% of a core':>11}  {'max RSS MB':>10}  {'cycles':>6}"
)


# the measured process


def scale_config(size: int, poll: float, boot: float, status_url: str, workdir: str) -> Config:
    base = Config()
    return replace(
        base,
        controller=ControllerSection(fleet="scale", on_exit="leave"),
        master=MasterSection(
            server_status_url=status_url,
            poll_interval=poll,
            renderfarm_conf=str(Path(workdir) / "renderfarm.conf"),
            reload_command=(),
        ),
        load_table=LoadTableSection(
            rows=(LoadRow(rps=0.0, min_instances=size, max_instances=size),)
        ),
        scaling=replace(base.scaling, boot_seconds=boot),
        slave=replace(base.slave, image_id="ami-0123456789abcdef0"),
        stats=StatsSection(listen="127.0.0.1:0"),
    )


class BootedProbe(Actor):
    """SlaveHealth's readiness rule on simulated slaves: SlaveReady at the first probe (every
    `sample_interval` from InstanceUp) after SimCloud says the slave has booted."""

    def __init__(self, *, bus: Bus, cloud: SimCloud, config: Config) -> None:
        super().__init__(name="slave_health", bus=bus)
        self.cloud = cloud
        self.every = config.master.reading_interval
        self.due: list[tuple[float, str, str]] = []  # (passes at, instance id, address), a heap
        self.gone: set[str] = set()
        bus.subscribe(self.inbox, InstanceUp, InstanceDown, DrainSlave)

    async def run(self) -> None:
        while True:
            now = self.now()
            while self.due and self.due[0][0] <= now:
                _, iid, address = heapq.heappop(self.due)
                if iid not in self.gone and self.cloud.booted(iid):
                    self.publish(SlaveReady(at=now, instance_id=iid, address=address))
            timeout = max(0.0, self.due[0][0] - now) if self.due else None
            msg = await self.inbox.get(timeout=timeout)
            if msg is EOI:
                return
            if isinstance(msg, InstanceUp):
                inst = self.cloud.instance(msg.instance_id)
                if inst is not None:
                    probes = max(0, -int(-(inst.ready_at - now) // self.every))  # ceil
                    passes = now + probes * self.every
                    heapq.heappush(self.due, (passes, msg.instance_id, msg.address))
            elif isinstance(msg, (InstanceDown, DrainSlave)):
                self.gone.add(msg.instance_id)


async def follow(args: argparse.Namespace) -> None:
    """Run the actors until all N are listed, measure `seconds` of steady state, print it."""
    workdir = tempfile.mkdtemp(prefix="scale-bench-")
    configure_logging(verbosity=2, logfile=str(Path(workdir) / "controller.log"))
    config = scale_config(args.child, args.poll, args.boot, args.status_url, workdir)
    loop = asyncio.get_running_loop()
    cloud = SimCloud.from_config(config, clock=loop.time, wall_offset=time.time() - loop.time())
    bus = Bus()
    listed = asyncio.Event()
    cycles = [0]

    def watch(msg: object) -> None:
        if isinstance(msg, RenderfarmWritten) and len(msg.addresses) >= args.child:
            listed.set()
        elif isinstance(msg, Decision):
            cycles[0] += 1

    bus.listen(watch)
    stats = Stats(config=config, bus=bus)
    actors: list[Actor] = [
        stats,
        FirewallKeeper(config=config, bus=bus, cloud=cloud, master_ip="127.0.0.1"),
        SpotPool(config=config, bus=bus, cloud=cloud, policy=make_policy("ours", config)),
        BootedProbe(bus=bus, cloud=cloud, config=config),
        RenderfarmWriter(config=config, bus=bus),
        LoadSampler(config=config, bus=bus),
    ]
    runtime = Runtime(actors, bus=bus)
    stats.bind_runtime(runtime)
    running = asyncio.create_task(runtime.run_until_stopped())
    started = time.perf_counter()
    async with asyncio.timeout(READY_TIMEOUT):
        await listed.wait()
    ramp = time.perf_counter() - started
    print(json.dumps({"stats_port": stats.port}), flush=True)  # scraped from now on

    profile = cProfile.Profile() if args.profile else None
    before, wall0, cycles0 = (
        resource.getrusage(resource.RUSAGE_SELF),
        time.perf_counter(),
        cycles[0],
    )
    if profile is not None:
        profile.enable()
    await asyncio.sleep(args.seconds)
    if profile is not None:
        profile.disable()
    after, wall = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter() - wall0
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    result = {
        "instances": args.child,
        "poll": args.poll,
        "ramp_s": ramp,
        "cpu_s": cpu,
        "wall_s": wall,
        "core_pct": 100.0 * cpu / wall,
        "max_rss_mb": after.ru_maxrss / 1024.0,  # KiB on Linux
        "cycles": cycles[0] - cycles0,
    }
    print(json.dumps(result), flush=True)  # before the stop: the driver stops scraping now
    runtime.request_stop(reason="benchmark done")
    await running
    if profile is not None:
        out = io.StringIO()
        pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(25)
        print(out.getvalue(), file=sys.stderr)


# the driver


class StatusPage(BaseHTTPRequestHandler):
    """Apache's `server-status?auto`, counting a steady LOAD_RPS since the page started."""

    started = time.monotonic()

    def do_GET(self) -> None:
        total = int(LOAD_RPS * (time.monotonic() - self.started))
        body = f"localhost\nTotal Accesses: {total}\nBusyWorkers: 1\nIdleWorkers: 9\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: one line per reading would bury the table


def serve_status() -> tuple[ThreadingHTTPServer, str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), StatusPage)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_port}/server-status?auto"


def scrape_metrics(port: int, every: float, stop: threading.Event) -> None:
    """What a Prometheus server does: GET /metrics every `every` seconds."""
    while not stop.wait(every):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as page:
                page.read()
        except OSError as exc:
            if not stop.is_set():  # else the run has just ended
                print(f"scrape of /metrics failed: {exc}", file=sys.stderr)


def measure(size: int, args: argparse.Namespace, status_url: str) -> dict[str, Any]:
    """One size in a fresh process: its JSON result line."""
    argv = [sys.executable, __file__, "--child", str(size), "--status-url", status_url]
    argv += ["--seconds", str(args.seconds), "--poll", str(args.poll), "--boot", str(args.boot)]
    argv += ["--profile"] if args.profile else []
    child = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    stop = threading.Event()
    result: dict[str, Any] | None = None
    for line in child.stdout:
        got = json.loads(line)
        if "stats_port" in got:
            every = args.poll
            threading.Thread(
                target=scrape_metrics, args=(got["stats_port"], every, stop), daemon=True
            ).start()
        else:
            stop.set()
            result = got
    stop.set()
    if child.wait() != 0 or result is None:
        raise SystemExit(f"the run with {size} instances failed (exit {child.returncode})")
    return result


def row(r: dict[str, Any]) -> str:
    return (
        f"{r['instances']:>9}  {r['poll']:>6g}  {r['ramp_s']:>7.1f}  {r['cpu_s']:>7.2f}  "
        f"{r['wall_s']:>7.1f}  {r['core_pct']:>10.2f}%  {r['max_rss_mb']:>10.1f}  {r['cycles']:>6}"
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--sizes", default=",".join(map(str, SIZES)), help="fleet sizes, comma-separated"
    )
    p.add_argument("--seconds", type=float, default=150.0, help="steady state measured per size")
    p.add_argument("--poll", type=float, default=30.0, help="[master] poll_interval")
    p.add_argument("--boot", type=float, default=5.0, help="seconds a simulated slave boots")
    p.add_argument("--profile", action="store_true", help="cProfile the steady state (stderr)")
    p.add_argument("--child", type=int, help=argparse.SUPPRESS)
    p.add_argument("--status-url", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child is not None:
        asyncio.run(follow(args))
        return 0

    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    server, status_url = serve_status()
    print(f"controller following N simulated slaves: {args.seconds:g} s of steady state each,")
    print("fleet held at N by the load table, one fresh process per size")
    print(HEADER, flush=True)
    try:
        for size in sizes:
            print(row(measure(size, args, status_url)), flush=True)
    finally:
        server.shutdown()
    n, cpu, rss = TARGET
    print(f"target at {n:,} instances: under {cpu:g} % of one core and under {rss:g} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
