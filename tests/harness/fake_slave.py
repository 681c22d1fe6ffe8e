"""Fake GBrowse render slaves: tiny HTTP servers that answer every GET with a set status.

A real render slave answers a bare GET with 403, which is what a health check sees when the
slave is up. Bind them on moto instance addresses (127.0.20.x is loopback on Linux).

`fake_slave_factory` is async and serves on the test's running loop:
    slave = await fake_slave_factory("127.0.20.5", 8101)
    slave.set_status(500); await slave.stop(); await slave.start()
`fake_slave_factory_sync` serves from a background thread for sync tests: same API, but
`start()`/`stop()` are plain calls.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import pytest
from aiohttp import web

from tests.harness.net import free_port

SLAVE_STATUS = 403


class FakeSlave:
    """One fake slave on (address, port) of the running loop. `hits` counts requests served."""

    def __init__(self, address: str = "127.0.0.1", port: int = 0, status: int = SLAVE_STATUS):
        self.address = address
        self.port = port or free_port(address)
        self.url = f"http://{address}:{self.port}/"
        self.status = status
        self.hits = 0
        self.paths: list[str] = []
        self._runner: web.AppRunner | None = None

    def set_status(self, code: int) -> None:
        self.status = code

    async def _answer(self, request: web.Request) -> web.Response:
        self.hits += 1
        self.paths.append(request.path_qs)
        return web.Response(status=self.status, text=f"fake slave: {self.status}\n")

    async def start(self) -> None:
        if self._runner is not None:
            return
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._answer)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await runner.setup()
        try:
            await web.TCPSite(runner, self.address, self.port, reuse_address=True).start()
        except OSError as exc:
            await runner.cleanup()
            raise AssertionError(
                f"fake slave cannot bind {self.address}:{self.port}: {exc}"
            ) from exc
        self._runner = runner

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()


class ThreadedFakeSlave:
    """A FakeSlave served by its own loop in a thread, for sync tests."""

    def __init__(self, address: str = "127.0.0.1", port: int = 0, status: int = SLAVE_STATUS):
        self._slave = FakeSlave(address, port, status)
        self.url = self._slave.url
        self.address, self.port = self._slave.address, self._slave.port
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()

    @property
    def hits(self) -> int:
        return self._slave.hits

    def set_status(self, code: int) -> None:
        self._slave.set_status(code)

    def start(self) -> None:
        asyncio.run_coroutine_threadsafe(self._slave.start(), self._loop).result(timeout=10)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._slave.stop(), self._loop).result(timeout=10)

    def close(self) -> None:
        try:
            self.stop()
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            self._loop.close()


@pytest.fixture
async def fake_slave_factory() -> AsyncIterator[Callable[..., Awaitable[FakeSlave]]]:
    slaves: list[FakeSlave] = []

    async def start(
        address: str = "127.0.0.1", port: int = 0, status: int = SLAVE_STATUS
    ) -> FakeSlave:
        slave = FakeSlave(address, port, status)
        slaves.append(slave)
        await slave.start()
        return slave

    try:
        yield start
    finally:
        for slave in slaves:
            await slave.stop()


@pytest.fixture
def fake_slave_factory_sync() -> Iterator[Callable[..., ThreadedFakeSlave]]:
    slaves: list[ThreadedFakeSlave] = []

    def start(
        address: str = "127.0.0.1", port: int = 0, status: int = SLAVE_STATUS
    ) -> ThreadedFakeSlave:
        slave = ThreadedFakeSlave(address, port, status)
        slaves.append(slave)
        slave.start()
        return slave

    try:
        yield start
    finally:
        for slave in slaves:
            slave.close()
