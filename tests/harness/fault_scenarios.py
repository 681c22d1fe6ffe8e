"""The fault scenarios, shared by tests/test_e2e_fault_scenarios.py (short) and bench/faults.py
(long): each takes a Rig and its durations and returns the Figures of one Run
(tests/harness/scenario_run.py), raising ScenarioError when the controller misbehaves on the way.

- `ec2_storm`: throttling (RequestLimitExceeded) or 5xx on a share of every EC2 call, the
  endpoint refusing connections, or latency on every call, for a while; a slave dies as it
  starts, so a termination and a launch must get through the fault.
- `teardown_under_fault`: SIGTERM while EC2 throttles or fails calls.
- `interruptions`: EC2 reclaims one spot slave, then all of them.
- `apache_faults`: Apache down, then something answering garbage on its port, then Apache
  started again (its counter back at zero): the fleet holds throughout.
- `hung_slave`: a slave accepts connections and never answers.
- `kill_storm`: `kill -9` at a random moment of a scale-out, a scale-in or a teardown, N times,
  each followed by a restart; then a clean teardown.
- `renderfarm_read_only`: renderfarm.conf's directory turns read-only during a scale-out;
  `lost_slave_read_only`: a slave dies while it is.
- `sighup_storm`: SIGHUP every few milliseconds, the config changing under it, during a scale-out.
"""

from __future__ import annotations

import contextlib
import http.server
import os
import random
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from tests.harness.e2e import healthy, listed
from tests.harness.fault_proxy import ANY_ACTION
from tests.harness.scenario_run import (
    LOW_RPS,
    STEADY_RPS,
    TWO_BANDS,
    Figures,
    Rig,
    Run,
    ScenarioError,
)

EC2_FAULTS = ("throttling", "server_errors", "endpoint_down", "latency")
FAULT_RATE = 0.3
TEARDOWN_CALL_SECONDS = 0.3
# EC2's answers: throttling is HTTP 503 RequestLimitExceeded; an internal error HTTP 500.
_FAULT_CODES = {
    "throttling": ("RequestLimitExceeded", 503),
    "server_errors": ("InternalError", 500),
}
ACCOUNT = "123456789012"  # moto's default account


def ec2_storm(rig: Rig, kind: str, seconds: float, *, latency: float = 5.0) -> Figures:
    """Three slaves; the fault starts and one slave dies; after `seconds` the fault ends."""
    run = Run(rig, kind, "[[2.0, 3, 3]]")
    try:
        run.start()
        run.wait_converged(3)
        _inject(rig, kind, latency)
        started = time.monotonic()
        victim, *others = sorted(listed(run.farm))
        rig.render_farm.kill(_address(victim))
        run.figures.recover["unlisted"] = run.wait(
            "the dead slave unlisted", lambda: victim not in listed(run.farm), seconds + 30
        )
        replaced = None
        while time.monotonic() < started + seconds:
            if replaced is None and run.converged(3):
                replaced = time.monotonic()
            time.sleep(0.2)
        run.expect(set(others) <= listed(run.farm), f"the live slaves still listed after {kind}")
        rig.proxy.heal()
        run.figures.recover["after fault"] = run.wait_converged(3)
        replaced = replaced or time.monotonic()
        run.figures.recover["replaced"] = round(replaced - started, 2)
        run.expect(run.status()["actors"], "actors reported")
        run.figures.notes["actor_restarts"] = _restarts(run)
        return run.finish()
    finally:
        run.close()


def teardown_under_fault(rig: Rig, kind: str, *, terminate_failures: int = 0) -> Figures:
    """SIGTERM while EC2 throttles or fails: the teardown must still end every instance (or
    exit non-zero saying what is left). With `terminate_failures`, only that many
    TerminateInstances calls fail (every botocore attempt of one call: 2 in e2e's config), the
    deterministic core of a storm; else `kind` on 30 % of every call, as in `ec2_storm`."""
    run = Run(rig, f"teardown_{kind}", "[[2.0, 3, 3]]")
    try:
        run.start()
        run.wait_converged(3)
        if terminate_failures:
            code, status = _FAULT_CODES[kind]
            rig.proxy.fail("TerminateInstances", code, "Injected", status, times=terminate_failures)
        else:
            _inject(rig, kind, 0.0)
        return run.finish()
    finally:
        run.close()


def _inject(rig: Rig, kind: str, latency: float) -> None:
    proxy = rig.proxy
    if kind in _FAULT_CODES:
        code, status = _FAULT_CODES[kind]
        proxy.fail(ANY_ACTION, code, "Injected by the fault scenario", status, rate=FAULT_RATE)
    elif kind == "endpoint_down":
        proxy.down()
    elif kind == "latency":
        proxy.delay(ANY_ACTION, latency)
    else:
        raise ValueError(f"unknown EC2 fault {kind!r}; one of {EC2_FAULTS}")


def interruptions(rig: Rig) -> Figures:
    """EC2 reclaims one of three slaves; once replaced, all three at once."""
    run = Run(rig, "interruptions", "[[2.0, 3, 3]]")
    try:
        run.start()
        run.wait_converged(3)
        victim = run.alive()[0]
        _interrupt(run, [victim])
        gone = run.urls_of([victim])
        run.figures.recover["one unlisted"] = run.wait(
            "the reclaimed slave unlisted", lambda: not gone & listed(run.farm), 10
        )
        run.figures.recover["one"] = run.wait_converged(3)
        everyone = run.alive()
        _interrupt(run, everyone)
        gone = run.urls_of(everyone)
        run.figures.recover["all unlisted"] = run.wait(
            "the reclaimed slaves unlisted", lambda: not gone & listed(run.farm), 10
        )
        run.figures.recover["all"] = run.wait_converged(3)
        return run.finish()
    finally:
        run.close()


def _interrupt(run: Run, instances: list[dict]) -> None:
    """What EC2 does when it reclaims spot instances (moto's private backend API, pinned)."""
    from moto.ec2.models import ec2_backends
    from moto.ec2.models.instances import StateReason

    backend = ec2_backends[ACCOUNT][run.rig.moto_ec2.region]
    ids = [i["InstanceId"] for i in instances]
    for instance_id in ids:
        run.watch.ended_by_ec2(instance_id)
    backend.terminate_instances(ids)
    for instance_id in ids:
        backend.get_instance(instance_id).state_reason = StateReason(
            "Server.SpotInstanceTermination: Spot instance termination",
            "Server.SpotInstanceTermination",
        )


def apache_faults(rig: Rig, seconds: float) -> Figures:
    """Apache down, then garbage on its port, then Apache again from zero: the fleet holds."""
    run = Run(rig, "apache", "[[2.0, 2, 2]]")
    scale_in_after = 4  # e2e.write_config's
    try:
        run.start()
        run.wait_converged(2)
        rig.apache.stop()
        run.hold(seconds, "while Apache is down")
        run.expect(not run.status()["sensor"]["ok"], "the sensor reported lost")
        with GarbageServer(rig.apache.port):
            run.hold(seconds, "while server-status answers garbage")
            reason = run.status()["sensor"]["reason"]
            run.expect("garbled" in reason, f"a garbled page reported, not {reason!r}")
        rig.apache.start()  # a new process: Total Accesses starts again from zero
        run.figures.recover["sensor"] = run.wait(
            "a load reading in the band again", lambda: _load_at_least(run, 2.0), 30
        )
        run.hold(scale_in_after + 3, "after Apache restarted with its counter reset")
        return run.finish()
    finally:
        run.close()
        if not rig.apache.running():
            rig.apache.start()


def _load_at_least(run: Run, rps: float) -> bool:
    document = run.status()
    return document["sensor"]["ok"] and (document["load"] or 0.0) >= rps


class GarbageServer:
    """Something else on Apache's port: 200 and bytes that are no server-status page."""

    BODY = b"<html><body>\x00\xff\xfe not a status page }{ Total Accesses</body></html>\n"

    def __init__(self, port: int) -> None:
        body = self.BODY

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        http.server.ThreadingHTTPServer.allow_reuse_address = True
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> GarbageServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def hung_slave(rig: Rig) -> Figures:
    """A slave that accepts connections and never answers is unlisted, ended and replaced."""
    run = Run(rig, "hung_slave", "[[2.0, 2, 2]]")
    try:
        run.start()
        run.wait_converged(2)
        victim = sorted(listed(run.farm))[0]
        rig.render_farm.hang(_address(victim))
        run.figures.recover["unlisted"] = run.wait(
            "the hung slave unlisted", lambda: victim not in listed(run.farm), 20
        )
        run.figures.recover["fleet"] = run.wait_converged(2)
        return run.finish()
    finally:
        run.close()


def kill_storm(rig: Rig, rounds: int, seed: int = 1) -> Figures:
    """`kill -9` at a random moment of a scale-out (1 -> 3), a scale-in (3 -> 1) or a teardown,
    `rounds` times, each followed by a restart that must settle on the band; then a teardown."""
    rng = random.Random(seed)
    run = Run(rig, "kill_storm", TWO_BANDS, rps=LOW_RPS)
    kills: list[str] = []
    try:
        run.start()
        size = 1
        run.wait_converged(size)
        for n in range(rounds):
            phase = rng.choice(["out" if size == 1 else "in", "teardown"])
            assert run.ctl is not None
            if phase == "out":
                run.set_load(STEADY_RPS)
                size = 3
                time.sleep(rng.uniform(0.5, 4.0))  # the scale-out takes about 3 s
            elif phase == "in":
                run.set_load(LOW_RPS)
                size = 1
                time.sleep(rng.uniform(3.0, 10.0))  # it drains after scale_in_after (4 s)
            else:
                # moto answers in milliseconds; EC2's pace makes a teardown last long enough to
                # be killed in the middle of it
                rig.proxy.delay(ANY_ACTION, TEARDOWN_CALL_SECONDS)
                run.ctl.proc.send_signal(signal.SIGTERM)
                time.sleep(rng.uniform(0.0, 1.5))
            finished = run.ctl.proc.poll() is not None
            run.ctl.kill9()
            rig.proxy.heal()
            kills.append(f"{phase}{' (done)' if finished else ''}")
            run.start()
            run.figures.recover[f"{n + 1}:{phase}"] = run.wait_converged(size)
        run.figures.notes["kills"] = kills
        return run.finish()
    finally:
        run.close()


def renderfarm_read_only(rig: Rig, seconds: float) -> Figures:
    """renderfarm.conf's directory read-only during a scale-out: the old file stays, the error
    is logged, nothing is terminated; once writable again the new slaves are listed."""
    run = Run(rig, "read_only", TWO_BANDS, rps=LOW_RPS, renderfarm_dir="www")
    try:
        run.start()
        run.wait_converged(1)
        scale_out_blocked(run, read_only(run.farm.renderfarm.parent), seconds)
        return run.finish()
    finally:
        run.close()


def scale_out_blocked(
    run: Run, blocked: contextlib.AbstractContextManager, seconds: float, hint: str = ""
) -> None:
    """From one slave to three while `blocked` keeps renderfarm.conf from being written: the
    old file stays, the error is logged (with `hint`), nothing is terminated, for `seconds`;
    once unblocked, the three are listed."""
    before = run.farm.renderfarm.read_bytes()
    terminations = run.rig.proxy.count("TerminateInstances")
    with blocked:
        run.set_load(STEADY_RPS)
        run.wait("three slaves launched", lambda: len(run.alive()) == 3, 30)
        run.wait("the write error logged", lambda: "renderfarm.write_failed" in run.log_text(), 30)
        run.expect(hint in run.log_text(), f"the error says {hint!r}")
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            run.expect(run.farm.renderfarm.read_bytes() == before, "the old file intact")
            run.expect(len(run.alive()) == 3, "the fleet held")
            time.sleep(0.3)
        run.expect(run.rig.proxy.count("TerminateInstances") == terminations, "nothing terminated")
    run.figures.recover["listed"] = run.wait_converged(3)


def lost_slave_read_only(rig: Rig, seconds: float) -> Figures:
    """A slave dies while renderfarm.conf's directory is read-only: it cannot leave the file,
    so it must not be terminated either (the file would list an ended instance whose address EC2
    may hand to another). Ends early once the watcher sees a listed slave terminated."""
    run = Run(rig, "read_only_lost", "[[2.0, 2, 2]]", renderfarm_dir="www")
    try:
        run.start()
        run.wait_converged(2)
        victim = sorted(listed(run.farm))[0]
        with read_only(run.farm.renderfarm.parent):
            rig.render_farm.kill(_address(victim))
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline and not run.watch.violations:
                time.sleep(0.3)
            run.expect(victim in listed(run.farm), "the dead slave still listed")
            addresses = {i["PrivateIpAddress"] for i in run.alive()}
            run.expect(_address(victim) in addresses, "the dead slave held, not terminated")
            run.expect("slave.held_listed" in run.log_text(), "the hold logged")
        run.figures.recover["unlisted"] = run.wait(
            "the dead slave unlisted", lambda: victim not in listed(run.farm), 30
        )
        run.figures.recover["fleet"] = run.wait_converged(2)
        return run.finish()
    finally:
        run.close()


@contextlib.contextmanager
def read_only(directory: Path) -> Iterator[None]:
    """No file can be created in or renamed into `directory` meanwhile, even by root (the
    immutable attribute; a plain chmod for anyone else)."""
    if os.geteuid() != 0:
        directory.chmod(0o555)
        try:
            yield
        finally:
            directory.chmod(0o755)
        return
    done = subprocess.run(["chattr", "+i", str(directory)], capture_output=True, text=True)
    if done.returncode != 0:
        raise ScenarioError(
            f"cannot make {directory} read-only for root (chattr +i): {done.stderr.strip()}; "
            "run the tests on a file system with the immutable attribute (ext4, xfs, btrfs)"
        )
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(directory)], check=True)


def sighup_storm(rig: Rig, seconds: float, every: float = 0.02) -> Figures:
    """SIGHUP every `every` seconds through a scale-out 0 -> 3, the config file changing (a
    reloadable key) between signals: exactly three launched, no actor restarted."""
    run = Run(rig, "sighup_storm", "[[2.0, 3, 3]]", rps=0)
    try:
        ctl = run.start()
        run.wait("the stats endpoint", lambda: healthy(run.farm), 30)
        text = run.farm.config.read_text()
        variants = [text, text.replace("status_timeout = 2", "status_timeout = 3")]
        run.set_load(STEADY_RPS)
        sent = 0
        started = time.monotonic()
        scaled_out = None
        while time.monotonic() < started + seconds:
            _replace(run.farm.config, variants[sent % 2])
            ctl.proc.send_signal(signal.SIGHUP)
            sent += 1
            time.sleep(every)
            if scaled_out is None and sent % 10 == 0 and run.converged(3):
                scaled_out = time.monotonic()
        run.figures.notes["sighups"] = sent
        run.figures.recover["after storm"] = run.wait_converged(3)
        run.figures.recover["scale-out"] = round((scaled_out or time.monotonic()) - started, 2)
        run.figures.notes["reloaded"] = run.log_text().count("config.reloaded")
        run.figures.notes["rejected"] = run.log_text().count("config.reload_rejected")
        run.figures.notes["actor_restarts"] = _restarts(run)
        return run.finish()
    finally:
        run.close()


def _replace(path: Path, text: str) -> None:
    """Rewrite the config as an editor or a config manager would: whole, by rename."""
    temporary = path.with_suffix(".new")
    temporary.write_text(text)
    temporary.replace(path)


def _restarts(run: Run) -> int:
    return sum(actor.get("restarts", 0) for actor in run.status()["actors"].values())


def _address(url: str) -> str:
    return url.split("//", 1)[1].rsplit(":", 1)[0]
