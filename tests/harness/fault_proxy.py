"""An aiohttp reverse proxy in front of moto that injects EC2 faults per API Action.

moto has no fault injection, so tests point the code under test at this proxy and tell it which
Action should fail, be slow, or find the endpoint down. It can also emulate EC2's eventual
consistency: instances a RunInstances just returned stay invisible to DescribeInstances, and
TerminateInstances on them answers InvalidInstanceID.NotFound, for a while (real EC2 does this;
moto is always consistent). It runs on its own event loop in a background thread, so sync tests
and async tests (including looptime ones) can both use it.

A rule may name the Action "*" (every Action without a rule of its own), fail only a share of
the calls (`rate`, drawn from a seeded generator), as a throttling or 5xx storm does, and only
calls with given parameters (`when`: a RunInstances of one InstanceType, as a capacity shortage).
The proxy counts what it injected (`injected`) and the retries (`retries`: requests whose
`amz-sdk-request` header says attempt 2 or later, as botocore sends them, and requests that
repeat an earlier one's ClientToken, as a caller retrying a launch itself does), for the fault
scenarios' figures.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from urllib.parse import parse_qs

import aiohttp
import pytest
from aiohttp import web

from tests.harness.moto_server import MotoEc2
from tests.harness.net import free_port

# Hop-by-hop or recomputed headers that must not be copied through the proxy.
_SKIP_HEADERS = {"host", "content-length", "transfer-encoding", "connection", "content-encoding"}

# Actions that name instances, and the request parameter prefix they name them with.
_ID_PARAM = {
    "DescribeInstances": "InstanceId.",
    "DescribeInstanceStatus": "InstanceId.",
    "TerminateInstances": "InstanceId.",
    "StopInstances": "InstanceId.",
    "StartInstances": "InstanceId.",
    "RebootInstances": "InstanceId.",
    "CreateTags": "ResourceId.",
    "DeleteTags": "ResourceId.",
}

ANY_ACTION = "*"  # a rule for every Action that has none of its own
_BLOCK = 10  # calls over which a rule's rate is exact
_ATTEMPT = re.compile(r"attempt=(\d+)")


@dataclass
class _Rule:
    """What to do with one Action: fail with an error, or wait first; `times` None = forever;
    `rate`: the share of calls it applies to (the others pass untouched): in each run of
    `_BLOCK` calls exactly that share, at random places, so short tests see the stated rate."""

    code: str = ""
    message: str = ""
    status: int = 400
    delay: float = 0.0
    times: int | None = None
    rate: float = 1.0
    when: dict[str, str] = field(default_factory=dict)  # parameters a call must have
    _draws: list[bool] = field(default_factory=list)

    def applies(self, rng: random.Random, params: dict[str, str]) -> bool:
        if any(params.get(k) != v for k, v in self.when.items()):
            return False
        if self.rate >= 1.0:
            return True
        if not self._draws:
            hits = round(self.rate * _BLOCK)
            self._draws = [True] * hits + [False] * (_BLOCK - hits)
            rng.shuffle(self._draws)
        return self._draws.pop()


class FaultProxy:
    """Forwards to moto except where told otherwise. Thread-safe setters; `calls` lists Actions.

    `calls` records every request that reached the proxy (failed, delayed and dropped ones too),
    in order, as the Action name (EC2 query `Action=`, or the operation from `X-Amz-Target`).
    `requests` records the same requests as (Action, parameters) pairs; the parameters are the
    query string and form body merged, e.g. {"Action": "TerminateInstances", "InstanceId.1": ...}.
    `injected` counts the requests answered with an injected error or dropped; `retries` the
    requests that retry an earlier one (botocore's attempt 2 or later, or a ClientToken again).
    """

    def __init__(self, upstream: str, seed: int = 0) -> None:
        self.upstream = upstream
        self.port = free_port()
        self.endpoint_url = f"http://127.0.0.1:{self.port}"
        self.calls: list[str] = []
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.injected = 0
        self.retries = 0
        self._tokens: set[str] = set()
        # Called with (Action, parameters) as each request arrives, before it is answered or
        # forwarded, on the proxy's thread: a test may look at the world as EC2 gets the call.
        self.on_request: Callable[[str, dict[str, str]], None] | None = None
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._hide_for = 0.0
        self._hidden_until: dict[str, float] = {}  # instance id -> time.monotonic() deadline
        self._failures: dict[str, _Rule] = {}
        self._delays: dict[str, _Rule] = {}
        self._down_status: int | None = None
        self._is_down = False
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._session: aiohttp.ClientSession | None = None

    # control, from any thread

    def fail(
        self,
        action: str,
        code: str,
        message: str = "Injected by the test fault proxy",
        status: int = 400,
        times: int | None = None,
        rate: float = 1.0,
        when: dict[str, str] | None = None,
    ) -> None:
        """Answer `action` (or every Action: "*") with EC2 error `code`: the next `times` calls,
        or always; only a `rate` share of them, drawn at random; only those with the parameters
        `when` names."""
        with self._lock:
            self._failures[action] = _Rule(
                code=code, message=message, status=status, times=times, rate=rate, when=when or {}
            )

    def delay(self, action: str, seconds: float, times: int | None = None) -> None:
        """Hold `action` (or every Action: "*") for `seconds` (real time) before forwarding it."""
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

    def heal(self) -> None:
        """Stop injecting (failures, delays, down) but keep the record of calls and counts."""
        self.up()
        with self._lock:
            self._failures.clear()
            self._delays.clear()

    def hide_new_instances(self, seconds: float) -> None:
        """Emulate EC2's eventual consistency for instances launched from now on.

        Each instance id in a RunInstances answer is hidden for `seconds` (real time) after that
        answer passes: DescribeInstances leaves it out (and answers InvalidInstanceID.NotFound if
        the request names it), and TerminateInstances, DescribeInstanceStatus, CreateTags and the
        other instance actions naming it answer InvalidInstanceID.NotFound without reaching moto.
        `seconds` <= 0 stops hiding, and unhides the instances hidden so far.
        """
        with self._lock:
            self._hide_for = max(0.0, seconds)
            if self._hide_for == 0.0:
                self._hidden_until.clear()

    def hidden(self) -> set[str]:
        """The instance ids hidden right now."""
        with self._lock:
            return self._hidden_now()

    def clear(self) -> None:
        """Forget every failure, delay, hiding and down state, and the recorded calls."""
        self.up()
        with self._lock:
            self._failures.clear()
            self._delays.clear()
            self._hide_for = 0.0
            self._hidden_until.clear()
            self.calls.clear()
            self.requests.clear()
            self.injected = self.retries = 0
            self._tokens.clear()

    def count(self, action: str) -> int:
        """How many requests for `action` reached the proxy."""
        with self._lock:
            return self.calls.count(action)

    def params(self, action: str) -> list[dict[str, str]]:
        """The parameters of each request for `action` that reached the proxy, in order."""
        with self._lock:
            return [dict(params) for name, params in self.requests if name == action]

    def instance_ids(self, action: str) -> list[list[str]]:
        """The instance ids each request for `action` named (`InstanceId.N`, or `ResourceId.N`
        for CreateTags/DeleteTags), in order; e.g. which ids each TerminateInstances asked for."""
        with self._lock:
            return [_named_ids(name, params) for name, params in self.requests if name == action]

    # lifecycle

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

    # the proxy itself

    def _take(self, rules: dict[str, _Rule], action: str, params: dict[str, str]) -> _Rule | None:
        """The rule for `action` (its own, else "*") if it applies to this call, spending one of
        its `times`. Call with the lock held."""
        key = action if action in rules else ANY_ACTION
        rule = rules.get(key)
        if rule is None or not rule.applies(self._random, params):
            return None
        if rule.times is not None:
            rule.times -= 1
            if rule.times <= 0:
                del rules[key]
        return rule

    def _hidden_now(self) -> set[str]:
        """Ids still hidden, forgetting expired ones. Call with the lock held."""
        now = time.monotonic()
        for instance_id in [i for i, until in self._hidden_until.items() if until <= now]:
            del self._hidden_until[instance_id]
        return set(self._hidden_until)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        action = _action_of(request, body)
        params = _params_of(request, body)
        attempt = _ATTEMPT.search(request.headers.get("amz-sdk-request", ""))
        with self._lock:
            self.calls.append(action)
            self.requests.append((action, params))
            token = params.get("ClientToken")
            if (attempt is not None and int(attempt.group(1)) > 1) or token in self._tokens:
                self.retries += 1
            if token:
                self._tokens.add(token)
            is_down, down_status = self._is_down, self._down_status
            failure = self._take(self._failures, action, params)
            delay = self._take(self._delays, action, params)
            if is_down or failure is not None:
                self.injected += 1
            hook = self.on_request
        if hook is not None:
            hook(action, params)
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
        with self._lock:
            hidden = self._hidden_now()
        missing = [i for i in _named_ids(action, params) if i in hidden]
        if missing:
            return _error(request, 400, "InvalidInstanceID.NotFound", _not_found_message(missing))
        return await self._forward(request, body, action)

    def _rewrite(self, action: str, status: int, payload: bytes) -> bytes:
        """Start hiding what RunInstances launched; leave hidden instances out of Describe*."""
        if status != 200:
            return payload
        if action == "RunInstances":
            with self._lock:
                if self._hide_for > 0:
                    until = time.monotonic() + self._hide_for
                    for instance_id in launched_instance_ids(payload):
                        self._hidden_until[instance_id] = until
            return payload
        if action not in ("DescribeInstances", "DescribeInstanceStatus"):
            return payload
        with self._lock:
            hidden = self._hidden_now()
        if not hidden:
            return payload
        if action == "DescribeInstances":
            return without_instances(payload, hidden)
        return without_statuses(payload, hidden)

    async def _forward(self, request: web.Request, body: bytes, action: str) -> web.Response:
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _SKIP_HEADERS}
        async with self._session.request(
            request.method,
            self.upstream + request.path_qs,
            headers=headers,
            data=body,
            allow_redirects=False,
        ) as upstream:
            payload = self._rewrite(action, upstream.status, await upstream.read())
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


def _params_of(request: web.Request, body: bytes) -> dict[str, str]:
    """The query-protocol parameters: the query string merged with a form-encoded body."""
    params = dict(request.query)
    if not request.headers.get("X-Amz-Target"):
        form = parse_qs(body.decode("utf-8", errors="replace"), keep_blank_values=True)
        params.update({key: values[0] for key, values in form.items()})
    return params


def _named_ids(action: str, params: dict[str, str]) -> list[str]:
    """The instance (or resource) ids a request names, in parameter order."""
    prefix = _ID_PARAM.get(action)
    if prefix is None:
        return []
    return [v for k, v in params.items() if k.startswith(prefix) and k[len(prefix) :].isdigit()]


def _not_found_message(ids: list[str]) -> str:
    """EC2's wording for InvalidInstanceID.NotFound."""
    if len(ids) == 1:
        return f"The instance ID '{ids[0]}' does not exist"
    return f"The instance IDs '{', '.join(ids)}' do not exist"


def _parse(payload: bytes) -> tuple[ET.Element, str]:
    """The XML root and its namespace URI ("" if none)."""
    root = ET.fromstring(payload)
    uri = root.tag[1:].split("}", 1)[0] if root.tag.startswith("{") else ""
    return root, uri


def _serialise(root: ET.Element, uri: str) -> bytes:
    """XML with the declaration and the namespace as the default one, as EC2 sends it."""
    return ET.tostring(root, encoding="UTF-8", xml_declaration=True, default_namespace=uri or None)


def launched_instance_ids(payload: bytes) -> list[str]:
    """The instance ids in a RunInstances response body."""
    root, uri = _parse(payload)
    ns = f"{{{uri}}}" if uri else ""
    return [e.text or "" for e in root.iterfind(f"{ns}instancesSet/{ns}item/{ns}instanceId")]


def without_instances(payload: bytes, hidden: set[str]) -> bytes:
    """A DescribeInstances body without the `hidden` instances (and reservations left empty)."""
    root, uri = _parse(payload)
    ns = f"{{{uri}}}" if uri else ""
    reservations = root.find(f"{ns}reservationSet")
    if reservations is None:
        return payload
    changed = False
    for reservation in list(reservations):
        instances = reservation.find(f"{ns}instancesSet")
        if instances is None:
            continue
        gone = [item for item in instances if item.findtext(f"{ns}instanceId") in hidden]
        for item in gone:
            instances.remove(item)
        if gone and len(instances) == 0:
            reservations.remove(reservation)
        changed = changed or bool(gone)
    return _serialise(root, uri) if changed else payload


def without_statuses(payload: bytes, hidden: set[str]) -> bytes:
    """A DescribeInstanceStatus body without the `hidden` instances."""
    root, uri = _parse(payload)
    ns = f"{{{uri}}}" if uri else ""
    statuses = root.find(f"{ns}instanceStatusSet")
    if statuses is None:
        return payload
    gone = [item for item in statuses if item.findtext(f"{ns}instanceId") in hidden]
    for item in gone:
        statuses.remove(item)
    return _serialise(root, uri) if gone else payload


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
