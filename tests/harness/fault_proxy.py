"""An aiohttp reverse proxy in front of moto that injects EC2 faults per API Action.

moto has no fault injection, so tests point the code under test at this proxy and tell it which
Action should fail, be slow, or find the endpoint down. It runs on its own event loop in a
background thread, so sync tests and async tests (including looptime ones) can both use it.
"""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import parse_qs

import aiohttp
import pytest
from aiohttp import web

from tests.harness.moto_server import MotoEc2
from tests.harness.net import free_port

# Hop-by-hop or recomputed headers that must not be copied through the proxy.
_SKIP_HEADERS = {"host", "content-length", "transfer-encoding", "connection", "content-encoding"}


@dataclass
class _Rule:
    """What to do with one Action: fail with an error, or wait first; `times` None = forever."""

    code: str = ""
    message: str = ""
    status: int = 400
    delay: float = 0.0
    times: int | None = None


class FaultProxy:
    """Forwards to moto except where told otherwise. Thread-safe setters; `calls` lists Actions.

    `calls` records every request that reached the proxy (failed, delayed and dropped ones too),
    in order, as the Action name (EC2 query `Action=`, or the operation from `X-Amz-Target`).
    """

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.port = free_port()
        self.endpoint_url = f"http://127.0.0.1:{self.port}"
        self.calls: list[str] = []
        self._lock = threading.Lock()
        self._failures: dict[str, _Rule] = {}
        self._delays: dict[str, _Rule] = {}
        self._down_status: int | None = None
        self._is_down = False
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._session: aiohttp.ClientSession | None = None

    # --- control, from any thread -------------------------------------------------------

    def fail(
        self,
        action: str,
        code: str,
        message: str = "Injected by the test fault proxy",
        status: int = 400,
        times: int | None = None,
    ) -> None:
        """Answer `action` with EC2 error `code` (the next `times` calls, or always)."""
        with self._lock:
            self._failures[action] = _Rule(code=code, message=message, status=status, times=times)

    def delay(self, action: str, seconds: float, times: int | None = None) -> None:
        """Hold `action` for `seconds` (real time) before forwarding it."""
        with self._lock:
            self._delays[action] = _Rule(delay=seconds, times=times)

    def down(self, status: int | None = None) -> None:
        """Make the endpoint unreachable: refuse new connections and drop requests on open ones.

        With `status` (e.g. 503) it stays reachable but answers every request with that status.
        """
        with self._lock:
            self._is_down = True
            self._down_status = status
        if status is None:
            self._run(self._stop_listening())

    def up(self) -> None:
        """Undo `down()`: listen again on the same port and forward."""
        with self._lock:
            was_refusing = self._is_down and self._down_status is None
            self._is_down = False
            self._down_status = None
        if was_refusing:
            self._run(self._listen())

    def clear(self) -> None:
        """Forget every failure, delay and down state, and the recorded calls."""
        self.up()
        with self._lock:
            self._failures.clear()
            self._delays.clear()
            self.calls.clear()

    def count(self, action: str) -> int:
        """How many requests for `action` reached the proxy."""
        with self._lock:
            return self.calls.count(action)

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()
        self._run(self._start())

    def stop(self) -> None:
        try:
            self._run(self._shutdown())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            self._loop.close()

    def _run(self, coro) -> None:
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=30)

    async def _start(self) -> None:
        self._session = aiohttp.ClientSession(auto_decompress=False)
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await self._listen()

    async def _listen(self) -> None:
        assert self._runner is not None
        self._site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
        await self._site.start()

    async def _stop_listening(self) -> None:
        if self._site is not None:
            await self._site.stop()
            self._site = None

    async def _shutdown(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    # --- the proxy itself -----------------------------------------------------------------

    def _take(self, rules: dict[str, _Rule], action: str) -> _Rule | None:
        """The rule for `action`, spending one of its `times`. Call with the lock held."""
        rule = rules.get(action)
        if rule is None:
            return None
        if rule.times is not None:
            rule.times -= 1
            if rule.times <= 0:
                del rules[action]
        return rule

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        action = _action_of(request, body)
        with self._lock:
            self.calls.append(action)
            is_down, down_status = self._is_down, self._down_status
            failure = self._take(self._failures, action)
            delay = self._take(self._delays, action)
        if is_down and down_status is None:
            if request.transport is not None:
                request.transport.close()
            raise asyncio.CancelledError  # aiohttp drops the connection without an answer
        if is_down:
            return _error(request, down_status, "ServiceUnavailable", "Injected: endpoint down")
        if delay is not None:
            await asyncio.sleep(delay.delay)
        if failure is not None:
            return _error(request, failure.status, failure.code, failure.message)
        return await self._forward(request, body)

    async def _forward(self, request: web.Request, body: bytes) -> web.Response:
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _SKIP_HEADERS}
        async with self._session.request(
            request.method,
            self.upstream + request.path_qs,
            headers=headers,
            data=body,
            allow_redirects=False,
        ) as upstream:
            payload = await upstream.read()
            out_headers = {
                k: v for k, v in upstream.headers.items() if k.lower() not in _SKIP_HEADERS
            }
            return web.Response(status=upstream.status, body=payload, headers=out_headers)


def _action_of(request: web.Request, body: bytes) -> str:
    """The API operation a request asks for: query `Action=`, or the `X-Amz-Target` suffix."""
    target = request.headers.get("X-Amz-Target")
    if target:
        return target.rsplit(".", 1)[-1]
    if "Action" in request.query:
        return request.query["Action"]
    form = parse_qs(body.decode("utf-8", errors="replace"))
    return form.get("Action", ["?"])[0]


def _error(request: web.Request, status: int, code: str, message: str) -> web.Response:
    """An AWS error response in the shape the request's protocol expects."""
    request_id = str(uuid.uuid4())
    if request.headers.get("X-Amz-Target"):  # JSON protocol (e.g. SQS)
        return web.Response(
            status=status,
            body=json.dumps({"__type": code, "message": message}).encode(),
            headers={
                "Content-Type": "application/x-amz-json-1.0",
                "x-amzn-RequestId": request_id,
                "x-amzn-query-error": f"{code};Sender",
            },
        )
    xml = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Response><Errors><Error><Code>{code}</Code><Message>{message}</Message></Error>"
        f"</Errors><RequestID>{request_id}</RequestID></Response>"
    )
    return web.Response(status=status, body=xml.encode(), content_type="text/xml")


@pytest.fixture
def fault_proxy(moto_ec2: MotoEc2) -> Iterator[FaultProxy]:
    proxy = FaultProxy(moto_ec2.endpoint_url)
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()
