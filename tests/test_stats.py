"""The Stats actor under the real Runtime, and its HTTP endpoints over real loopback sockets."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from actors.stats import Stats
from controller.config.schema import Config, ScalingSection, StatsSection
from controller.messages import (
    ActorStateChanged,
    Decision,
    ErrorKind,
    FleetObserved,
    InstanceDown,
    InstanceId,
    InstanceUp,
    LoadSample,
    LostReason,
    ProviderErrorSeen,
    SensorLost,
    SlaveReady,
    SlaveView,
)
from controller.runtime.actor import Actor
from controller.runtime.bus import EOI, Bus
from controller.runtime.supervisor import Runtime
from controller.status.fleetstate import FleetState
from controller.status.metrics import Metrics
from controller.status.stats import StatsError, StatsServer, create_app, load_token
from tests import synthetic_fleet

TOKEN = "s3cret-token-value"


class Idle(Actor):
    """An actor that does nothing until its inbox closes."""

    async def run(self) -> None:
        while await self.inbox.get() is not EOI:
            pass


class Crasher(Actor):
    async def run(self) -> None:
        raise RuntimeError("boom")


async def fetch(url: str, token: str | None = None) -> tuple[int, str, dict]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as response:
        return response.status, await response.text(), dict(response.headers)


async def until(bus: Bus, predicate, timeout: float = 10.0) -> None:
    """Wait until `predicate()` holds, checking again after every message on the bus."""
    published = asyncio.Event()
    bus.listen(lambda msg: published.set())
    async with asyncio.timeout(timeout):
        while not predicate():
            published.clear()
            await published.wait()


class Running:
    """A Runtime with Stats first, run in a task, stopped in `close()`."""

    def __init__(self, config: Config, *others_factories, backoff=(30,)) -> None:
        self.bus = Bus()
        self.stats = Stats(config, bus=self.bus)
        self.others = [make(self.bus) for make in others_factories]
        self.runtime = Runtime(
            [self.stats, *self.others], bus=self.bus, grace_seconds=2, backoff=backoff, jitter=0
        )
        self.stats.bind_runtime(self.runtime)
        self.task: asyncio.Task | None = None

    async def __aenter__(self) -> Running:
        self.task = asyncio.create_task(self.runtime.run_until_stopped())
        await until(self.bus, lambda: self.runtime.all_running() or self.task.done())
        assert not self.task.done(), self.task.result()
        return self

    async def __aexit__(self, *exc) -> None:
        self.runtime.request_stop("test")
        assert self.task is not None
        async with asyncio.timeout(10):
            await self.task

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.stats.port}"


def config(listen="127.0.0.1:0", token="", token_file="", budget=None) -> Config:
    return Config(
        stats=StatsSection(listen=listen, token=token, token_file=token_file),
        scaling=ScalingSection(max_cost_per_hour=budget),
    )


def publish_story(bus: Bus) -> None:
    now = asyncio.get_running_loop().time()
    a = InstanceId("i-0123456789abcdef0")
    bus.publish(LoadSample(at=now - 0.5, rps=1.5, window_rps=1.2))
    bus.publish(
        Decision(
            at=now - 0.25,
            load_rps=1.5,
            band=(1, 3),
            desired=2,
            launch=1,
            remove=(),
            reason="load 1.50 req/s: band 1-3",
        )
    )
    bus.publish(InstanceUp(at=now, instance_id=a, address="127.0.20.5"))
    bus.publish(
        FleetObserved(
            at=now,
            members=(
                SlaveView(
                    instance_id=a,
                    address="127.0.20.5",
                    state="running",
                    healthy=False,
                    since=time.time(),
                ),
            ),
            pending_requests=1,
            cost_per_hour=0.07,
        )
    )
    bus.publish(SlaveReady(at=now, instance_id=a, address="127.0.20.5"))
    bus.publish(
        ProviderErrorSeen(
            at=now,
            kind=ErrorKind.CAPACITY,
            code="InsufficientInstanceCapacity",
            message="no capacity",
            operation="RunInstances",
        )
    )
    bus.publish(InstanceDown(at=now, instance_id=a, address="x", reason=LostReason.INTERRUPTED))


async def test_status_reflects_the_bus_under_the_runtime():
    async with Running(config(budget=0.5), lambda bus: Idle(name="pool", bus=bus)) as run:
        publish_story(run.bus)
        status, body, headers = await fetch(run.url + "/status")
        assert status == 200 and headers["Content-Type"].startswith("application/json")
        doc = json.loads(body)
        assert doc["load"] == 1.5 and doc["table_band"] == [1, 3] and doc["desired"] == 2
        assert doc["pending_requests"] == 1 and doc["cost_per_hour"] == 0.07
        assert doc["slaves"][0]["instance_id"] == "i-0123456789abcdef0"
        assert doc["slaves"][0]["healthy"] is True and doc["ready"] == 1
        assert doc["actors"]["pool"] == {"state": "running", "restarts": 0, "error": None}
        assert doc["actors"]["stats"]["state"] == "running"
        assert doc["dry_run"] is False and doc["fleet"] == "gbrowse"
        assert doc["max_cost_per_hour"] == 0.5
        assert doc["sensor"]["ok"] is True
        assert doc["decisions"][0]["reason"] == "load 1.50 req/s: band 1-3"
        assert abs(doc["now"] - time.time()) < 60


async def test_metrics_in_prometheus_format():
    async with Running(config(), lambda bus: Idle(name="pool", bus=bus)) as run:
        publish_story(run.bus)
        status, body, headers = await fetch(run.url + "/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
    }
    assert samples[("controller_load_rps", ())] == 1.5
    assert samples[("controller_band_min", ())] == 1
    assert samples[("controller_band_max", ())] == 3
    assert samples[("controller_desired", ())] == 2
    assert samples[("controller_ready", ())] == 1
    assert samples[("controller_pending", ())] == 1
    assert samples[("controller_cost_per_hour", ())] == 0.07
    assert samples[("controller_spend_dollars_total", ())] >= 0
    assert samples[("controller_launches_total", ())] == 1
    assert samples[("controller_interruptions_total", ())] == 1
    assert samples[("controller_terminations_total", ())] == 0
    assert samples[("controller_ec2_errors_total", (("kind", "capacity"),))] == 1
    assert samples[("controller_actor_restarts_total", (("actor", "pool"),))] == 0
    assert samples[("controller_decision_latency_seconds_count", ())] == 1
    assert samples[("controller_decision_latency_seconds_sum", ())] == pytest.approx(0.25)


async def test_healthz_names_the_actor_that_is_not_running():
    async with Running(config(), lambda bus: Idle(name="pool", bus=bus)) as run:
        assert (await fetch(run.url + "/healthz"))[:2] == (200, "ok\n")
    crashing = Running(config(), lambda bus: Crasher(name="sampler", bus=bus))
    crashing.task = asyncio.create_task(crashing.runtime.run_until_stopped())
    try:
        await until(crashing.bus, lambda: crashing.runtime.states()["sampler"][0] == "restarting")
        status, body, _ = await fetch(f"{crashing.url}/healthz")
        assert status == 503 and body == "not running: sampler (restarting)\n"
        doc = (await fetch(f"{crashing.url}/status"))[1]
        assert "RuntimeError('boom')" in doc
    finally:
        await crashing.__aexit__()


async def test_healthz_without_runtime_uses_actor_state_messages():
    state = FleetState()
    app = create_app(state, Metrics(state, time.monotonic), clock=time.monotonic)
    server = StatsServer(app)
    await server.start("127.0.0.1", 0)
    try:
        url = f"http://127.0.0.1:{server.port}/healthz"
        assert (await fetch(url))[:2] == (503, "no actor has reported yet\n")
        state.apply(ActorStateChanged(at=1.0, actor="pool", state="running", restarts=0))
        assert (await fetch(url))[0] == 200
        state.apply(ActorStateChanged(at=2.0, actor="pool", state="failed", restarts=5))
        assert (await fetch(url))[:2] == (503, "not running: pool (failed)\n")
    finally:
        await server.stop()


async def test_bearer_token_guards_data_but_not_healthz_or_page(caplog, capsys):
    caplog.set_level(logging.DEBUG)
    async with Running(config(token=TOKEN), lambda bus: Idle(name="pool", bus=bus)) as run:
        for path in ("/status", "/metrics"):
            status, _, headers = await fetch(run.url + path)
            assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer")
            assert (await fetch(run.url + path, token="wrong"))[0] == 401
            assert (await fetch(run.url + path, token=TOKEN))[0] == 200
        assert (await fetch(run.url + "/healthz"))[0] == 200
        status, page, headers = await fetch(run.url + "/")
        assert (
            status == 200
            and "<svg" in page
            and "default-src 'self'" in headers["Content-Security-Policy"]
        )
        assert (await fetch(run.url + "/static/status.js"))[0] == 200
    out, err = capsys.readouterr()  # structlog's console output
    assert "stats.listening" in out  # the logs were captured, and the token is not in them
    assert TOKEN not in caplog.text + out + err


async def test_listen_empty_disables_the_endpoint():
    async with Running(config(listen=""), lambda bus: Idle(name="pool", bus=bus)) as run:
        assert run.stats.port is None
        run.bus.publish(LoadSample(at=0.0, rps=3.0, window_rps=3.0))
        assert run.stats.state.load == 3.0  # it still folds, for STATUS= and logs


async def test_stop_closes_the_port():
    async with Running(config(), lambda bus: Idle(name="pool", bus=bus)) as run:
        port = run.stats.port
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass


async def test_port_in_use_is_one_clear_error():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        run = Running(config(listen=f"127.0.0.1:{port}"), lambda bus: Idle(name="pool", bus=bus))
        code = await asyncio.wait_for(run.runtime.run_until_stopped(), 10)
    assert code == 1
    assert run.runtime.states()["stats"][0] == "failed"
    assert "cannot listen" in run.stats.state.actors["stats"].error
    with pytest.raises(StatsError, match=r"\[stats\] listen 127\.0\.0\.1:\d+: cannot listen"):
        with socket.socket() as again:
            again.bind(("127.0.0.1", 0))
            again.listen()
            server = StatsServer(
                create_app(
                    FleetState(), Metrics(FleetState(), time.monotonic), clock=time.monotonic
                )
            )
            await server.start("127.0.0.1", again.getsockname()[1])


def test_token_file_and_credentials_directory(tmp_path, monkeypatch):
    (tmp_path / "stats-token").write_text(TOKEN + "\n")
    assert load_token(StatsSection(token_file=str(tmp_path / "stats-token"))) == TOKEN
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    assert load_token(StatsSection(token_file="stats-token")) == TOKEN
    assert load_token(StatsSection(token="inline", token_file="stats-token")) == "inline"
    assert load_token(StatsSection()) == ""
    with pytest.raises(StatsError, match=r"token_file .*missing: cannot read it"):
        load_token(StatsSection(token_file=str(tmp_path / "missing")))
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(StatsError, match="the file is empty"):
        load_token(StatsSection(token_file=str(tmp_path / "empty")))


async def test_status_page_data_of_a_long_story():
    """Four hours of traffic through the real bus: the series the page draws is there."""
    async with Running(config(), lambda bus: Idle(name="pool", bus=bus)) as run:
        for msg in synthetic_fleet.events():
            if not isinstance(msg, ActorStateChanged):
                run.bus.publish(msg)
        doc = json.loads((await fetch(run.url + "/status"))[1])
    assert len(doc["series"]) > 200
    assert {"t", "load", "desired", "ready", "cost"} <= set(doc["series"][0])


# controller status


async def status(capsys, url=None, config_path=None, **options) -> tuple[int, str, str]:
    from controller.commands.status import status_command

    capsys.readouterr()  # drop the runtime's log lines so far
    code = await asyncio.to_thread(status_command, url, config_path, **options)
    out, err = capsys.readouterr()
    return code, out, err


async def test_status_command_prints_a_summary(capsys):
    async with Running(config(budget=0.5), lambda bus: Idle(name="pool", bus=bus)) as run:
        publish_story(run.bus)
        code, out, err = await status(capsys, url=run.url)
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[0] == "controller gbrowse: all actors running"
    assert lines[1].startswith("load     1.50 req/s (window 1.20)   sensor ok")
    assert lines[2] == "fleet    band 1-3   desired 2   ready 1   pending 1"
    assert lines[3].startswith("cost     $0.070/h (cap $0.500/h)   spent $0.00 in ")
    assert "  pool                 running" in lines
    assert any(
        line.startswith("  i-0123456789abcdef0  127.0.20.5") and "healthy" in line for line in lines
    )
    assert "decided  0s ago: load 1.50 req/s: band 1-3" in lines
    assert "RunInstances InsufficientInstanceCapacity (capacity)" in out


async def test_status_command_unreachable_is_one_line_and_exit_1(capsys):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound but not listening: connection refused
        code, out, err = await status(capsys, url=f"http://127.0.0.1:{port}")
    assert code == 1 and out == ""
    assert err.count("\n") == 1
    assert err.startswith(f"controller status: cannot reach http://127.0.0.1:{port} (")


async def test_status_command_reads_url_and_token_from_config(capsys, tmp_path):
    async with Running(config(token=TOKEN), lambda bus: Idle(name="pool", bus=bus)) as run:
        path = tmp_path / "config.toml"
        (tmp_path / "token").write_text(TOKEN)
        path.write_text(
            f'[stats]\nlisten = "127.0.0.1:{run.stats.port}"\ntoken_file = "{tmp_path}/token"\n'
        )
        code, out, err = await status(capsys, config_path=str(path))
        assert code == 0, err
        assert out.startswith("controller gbrowse: all actors running")
        assert TOKEN not in out + err
        code, out, err = await status(capsys, url=run.url)
        assert code == 1 and "wants a token" in err and TOKEN not in err


async def test_status_command_with_stats_disabled(capsys, tmp_path):
    path = tmp_path / "config.toml"
    path.write_text('[stats]\nlisten = ""\n')
    code, _, err = await status(capsys, config_path=str(path))
    assert code == 1 and "[stats] listen is empty" in err


async def test_status_command_accepts_the_status_url_itself(capsys):
    """`--url` may be the endpoint's base or its /status page (not /status/status)."""
    async with Running(config(), lambda bus: Idle(name="pool", bus=bus)) as run:
        for url in (run.url + "/status", run.url + "/status/", run.url + "/"):
            code, out, err = await status(capsys, url=url)
            assert (code, err) == (0, ""), url
            assert out.startswith("controller gbrowse: all actors running")


async def test_status_command_takes_host_and_port_as_in_stats_listen(capsys):
    async with Running(config(), lambda bus: Idle(name="pool", bus=bus)) as run:
        code, out, err = await status(capsys, url=run.url.removeprefix("http://"))
        assert (code, err) == (0, "")
        assert out.startswith("controller gbrowse: all actors running")


# controller status --json and --nagios


async def test_status_json_prints_the_endpoints_document(capsys):
    async with Running(config(budget=0.5), lambda bus: Idle(name="pool", bus=bus)) as run:
        publish_story(run.bus)
        code, out, err = await status(capsys, url=run.url, as_json=True)
        served = json.loads((await fetch(run.url + "/status"))[1])
    assert (code, err) == (0, "")
    printed = json.loads(out)
    for moving in ("now", "uptime", "spend"):
        printed.pop(moving), served.pop(moving)
    assert printed == served
    assert printed["mode"] == "gbrowse" and printed["queue"] is None


async def test_status_nagios_ok_then_warning_then_critical(capsys):
    async with Running(config(budget=0.5), lambda bus: Idle(name="pool", bus=bus)) as run:
        publish_story(run.bus)
        ok = await status(capsys, url=run.url, nagios=True)
        now = asyncio.get_running_loop().time()
        run.bus.publish(
            Decision(at=now, load_rps=9.0, band=(2, 3), desired=2, launch=0, remove=(), reason="r")
        )
        # 1 ready and 1 open spot request for the band's 2: a scale-up under way is fine;
        # then the fleet view shows nothing left and nothing coming
        booting = await status(capsys, url=run.url, nagios=True)
        run.bus.publish(FleetObserved(at=now, members=(), pending_requests=0, cost_per_hour=0.07))
        below_band = await status(capsys, url=run.url, nagios=True)
        run.bus.publish(SensorLost(at=now, since=now - 60, reason="connection refused"))
        lost_a_minute = await status(capsys, url=run.url, nagios=True)
        run.bus.publish(SensorLost(at=now, since=now - 400, reason="connection refused"))
        lost_long = await status(capsys, url=run.url, nagios=True)
    assert ok == (
        0,
        "CONTROLLER OK - gbrowse: load 1.50 req/s; slaves desired 2, ready 1; $0.070/h"
        " | load=1.5 desired=2 ready=1 cost_per_hour=0.07\n",
        "",
    )
    assert booting[0] == 0, booting
    code, out, _ = below_band
    assert code == 1
    assert out.startswith(
        "CONTROLLER WARNING - 0 ready and 0 coming, below the band's minimum of 2 slaves;"
    )
    code, out, _ = lost_a_minute
    assert code == 1 and "load sensor lost for 60s: connection refused" in out
    code, out, _ = lost_long
    assert code == 2 and out.startswith("CONTROLLER CRITICAL - load sensor lost for 7m: ")
    assert out.count("\n") == 1


async def test_status_nagios_restarting_actor_is_a_warning(capsys):
    crashing = Running(config(), lambda bus: Crasher(name="sampler", bus=bus))
    crashing.task = asyncio.create_task(crashing.runtime.run_until_stopped())
    try:
        await until(crashing.bus, lambda: crashing.runtime.states()["sampler"][0] == "restarting")
        code, out, _ = await status(capsys, url=crashing.url, nagios=True)
    finally:
        await crashing.__aexit__()
    assert code == 1
    assert out.startswith("CONTROLLER WARNING - actor sampler restarting (RuntimeError('boom'))")


async def test_status_nagios_failed_actor_is_critical_and_no_actor_unknown(capsys):
    state = FleetState()
    app = create_app(state, Metrics(state, time.monotonic), clock=time.monotonic)
    server = StatsServer(app)
    await server.start("127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.port}"
    try:
        none_yet = await status(capsys, url=url, nagios=True)
        state.apply(ActorStateChanged(at=1.0, actor="pool", state="failed", restarts=5))
        failed = await status(capsys, url=url, nagios=True)
        plain = await status(capsys, url=url)
    finally:
        await server.stop()
    assert none_yet[0] == 3 and none_yet[1].startswith(
        "CONTROLLER UNKNOWN - no actor has reported yet;"
    )
    assert failed[0] == 2 and failed[1].startswith("CONTROLLER CRITICAL - actor pool failed;")
    assert plain[0] == 0  # without --nagios: 0 whenever the endpoint answers, as SPEC says


async def test_status_options_when_unreachable_or_misconfigured(capsys, tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}"  # bound, not listening
        nagios = await status(capsys, url=url, nagios=True)
        as_json = await status(capsys, url=url, as_json=True)
    assert nagios[0] == 3 and nagios[2] == ""
    assert nagios[1].startswith(f"CONTROLLER UNKNOWN - cannot reach {url} (")
    assert nagios[1].count("\n") == 1
    assert as_json[0] == 1 and as_json[1] == "" and "cannot reach" in as_json[2]

    bad = tmp_path / "config.toml"
    bad.write_text("[stats]\nlisten = 5\n")
    code, out, err = await status(capsys, config_path=str(bad))
    assert code == 2 and out == "" and str(bad) in err
    code, out, err = await status(capsys, config_path=str(bad), nagios=True)
    assert code == 3 and out.startswith(f"CONTROLLER UNKNOWN - {bad}") and err == ""
