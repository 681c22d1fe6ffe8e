"""sd_notify over a real AF_UNIX datagram socket, as systemd listens for it."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from actors.stats import Stats
from controller.config.schema import Config, StatsSection
from controller.runtime import sdnotify
from controller.runtime.actor import Actor
from controller.runtime.bus import EOI, Bus
from controller.runtime.supervisor import Runtime

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def notify_socket(tmp_path, monkeypatch):
    """A bound datagram socket standing where systemd's would; NOTIFY_SOCKET points at it."""
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(5)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    try:
        yield sock
    finally:
        sock.close()


def received(sock: socket.socket) -> list[str]:
    """Every datagram waiting on the socket."""
    out = []
    sock.setblocking(False)
    try:
        while True:
            out.append(sock.recv(4096).decode())
    except BlockingIOError:
        pass
    finally:
        sock.settimeout(5)
    return out


def test_each_state_is_one_datagram(notify_socket):
    assert sdnotify.ready("load 0.5 req/s")
    assert sdnotify.watchdog()
    assert sdnotify.status("desired 2, ready 1")
    assert sdnotify.stopping()
    assert sdnotify.reloading()
    assert received(notify_socket) == [
        "READY=1\nSTATUS=load 0.5 req/s",
        "WATCHDOG=1",
        "STATUS=desired 2, ready 1",
        "STOPPING=1",
        "RELOADING=1",
    ]


def test_status_is_one_line(notify_socket):
    sdnotify.status("two\nlines")
    assert notify_socket.recv(4096) == b"STATUS=two lines"


def test_abstract_socket_name(monkeypatch):
    name = f"controller-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert sdnotify.ready()
        assert sock.recv(4096) == b"READY=1"


def test_no_socket_is_a_no_op(monkeypatch, tmp_path):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sdnotify.ready() is False
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody-listens"))
    assert sdnotify.watchdog() is False  # a vanished socket never raises


def test_child_process_notifies(notify_socket, tmp_path):
    """As under systemd: the variable is inherited and the child's datagram arrives."""
    code = "from controller.runtime import sdnotify; sdnotify.ready('up'); sdnotify.stopping()"
    subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env={**os.environ}, check=True, timeout=30
    )
    assert received(notify_socket) == ["READY=1\nSTATUS=up", "STOPPING=1"]


def test_watchdog_period(monkeypatch):
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert sdnotify.watchdog_period() is None
    monkeypatch.setenv("WATCHDOG_USEC", "60000000")
    assert sdnotify.watchdog_period() == 30.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert sdnotify.watchdog_period() == 30.0
    monkeypatch.setenv("WATCHDOG_PID", "1")
    assert sdnotify.watchdog_period() is None  # meant for another process


async def until(bus: Bus, predicate, timeout: float = 10.0) -> None:
    """Wait until `predicate()` holds, checking again after every message on the bus."""
    published = asyncio.Event()
    bus.listen(lambda msg: published.set())
    async with asyncio.timeout(timeout):
        while not predicate():
            published.clear()
            await published.wait()


class Idle(Actor):
    async def run(self) -> None:
        while await self.inbox.get() is not EOI:
            pass


class SlowSetup(Idle):
    async def setup(self) -> None:
        await asyncio.sleep(0.2)


async def test_service_lifecycle_ready_watchdog_stopping(notify_socket):
    """READY=1 only once every actor runs, WATCHDOG=1 from the runtime's heartbeat while they
    do, STOPPING=1 when the teardown begins (the wiring controller.app uses)."""
    bus = Bus()
    stats = Stats(Config(stats=StatsSection(listen="")), bus=bus)
    runtime = Runtime(
        [stats, SlowSetup(name="pool", bus=bus)],
        bus=bus,
        grace_seconds=2,
        heartbeat_seconds=0.05,
        on_heartbeat=sdnotify.watchdog,
    )
    stats.bind_runtime(runtime)
    task = asyncio.create_task(runtime.run_until_stopped())
    await asyncio.sleep(0.1)
    assert received(notify_socket) == []  # pool is still in setup(): not ready
    await until(bus, runtime.all_running)
    await asyncio.sleep(0.2)
    runtime.request_stop("test")
    assert await asyncio.wait_for(task, 10) == 0
    states = received(notify_socket)
    assert states[0].startswith("READY=1\nSTATUS=load ?")
    assert states.count("WATCHDOG=1") >= 2
    stopping = [s for s in states if s.startswith("STOPPING=1")]
    assert len(stopping) == 1
    assert states.index(stopping[0]) > states.index("WATCHDOG=1")
