"""The stats endpoint: a FleetState served over HTTP (the Stats actor, actors.stats, runs it).

    GET /status   (JSON)        GET /metrics  (Prometheus)
    GET /healthz  (200 / 503)   GET /         (the page, from static/)

With a bearer token (`[stats] token` or `token_file`) every endpoint that carries data requires
`Authorization: Bearer <token>`; /healthz (a load balancer's or systemd's probe) and the page's
static files (no data in them) stay open, and the page sends the token it is given in the URL
fragment (`/#token=...`, which browsers never send to the server). The token is never logged.
"""

from __future__ import annotations

import hmac
import importlib.resources
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from aiohttp import web

from controller.config.schema import StatsSection
from controller.runtime.actor import SetupError
from controller.status.fleetstate import FleetState
from controller.status.metrics import CONTENT_TYPE, Metrics

ActorStates = Callable[[], Mapping[str, tuple[str, int]]]
_STATIC = {
    "/": ("index.html", "text/html"),
    "/static/status.js": ("status.js", "text/javascript"),
    "/static/status.css": ("status.css", "text/css"),
}
_OPEN_PATHS = {"/healthz", *_STATIC}

STATE_KEY = web.AppKey("state", FleetState)
METRICS_KEY = web.AppKey("metrics", Metrics)
TOKEN_KEY = web.AppKey("token", str)
CLOCK_KEY = web.AppKey("clock", Callable[[], float])
ACTOR_STATES_KEY = web.AppKey("actor_states", ActorStates)
EXTRA_KEY = web.AppKey("extra", dict)


class StatsError(SetupError):
    """The endpoint cannot start (port taken, token unreadable); the message says what to do."""


def load_token(stats: StatsSection) -> str:
    """The bearer token from `token`, or from `token_file` (relative paths are looked up in
    systemd's $CREDENTIALS_DIRECTORY when set, so `LoadCredential=stats-token:...` works)."""
    if stats.token:
        return stats.token
    if not stats.token_file:
        return ""
    path = Path(stats.token_file)
    credentials = os.environ.get("CREDENTIALS_DIRECTORY", "")
    if not path.is_absolute() and credentials:
        path = Path(credentials) / path
    try:
        token = path.read_text().strip()
    except OSError as exc:
        raise StatsError(
            f"[stats] token_file {path}: cannot read it ({exc.strerror}); "
            "fix the path or its permissions"
        ) from None
    if not token:
        raise StatsError(f"[stats] token_file {path}: the file is empty; put the token in it")
    return token


def create_app(
    state: FleetState,
    metrics: Metrics,
    *,
    clock: Callable[[], float],
    token: str = "",
    actor_states: ActorStates | None = None,
    extra: dict | None = None,
) -> web.Application:
    """The HTTP face of a FleetState. `clock` is the loop time the state's messages carry;
    `actor_states` (the runtime's `states`) answers /healthz, else the ActorStateChanged seen.
    `extra` adds fixed fields to /status (fleet name, budget)."""
    app = web.Application(middlewares=[_auth])
    app[STATE_KEY] = state
    app[METRICS_KEY] = metrics
    app[TOKEN_KEY] = token
    app[CLOCK_KEY] = clock
    app[ACTOR_STATES_KEY] = actor_states or states_from(state)
    app[EXTRA_KEY] = dict(extra or {})
    app.router.add_get("/status", _status)
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/healthz", _healthz)
    for path in _STATIC:
        app.router.add_get(path, _static)
    return app


@web.middleware
async def _auth(request: web.Request, handler):
    token = request.app[TOKEN_KEY]
    if token and request.path not in _OPEN_PATHS:
        given = request.headers.get("Authorization", "")
        expected = f"Bearer {token}"
        if not hmac.compare_digest(given.encode(), expected.encode()):
            return web.Response(
                status=401,
                text="401: send Authorization: Bearer <token> ([stats] token)\n",
                headers={"WWW-Authenticate": 'Bearer realm="controller"'},
            )
    return await handler(request)


async def _status(request: web.Request) -> web.Response:
    app = request.app
    document = app[STATE_KEY].snapshot(app[CLOCK_KEY](), time.time())
    document.update(app[EXTRA_KEY])
    document["actors"] = _merge_actors(document["actors"], app[ACTOR_STATES_KEY]())
    return web.json_response(document, headers={"Cache-Control": "no-store"})


async def _metrics(request: web.Request) -> web.Response:
    body = request.app[METRICS_KEY].render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


async def _healthz(request: web.Request) -> web.Response:
    failing = failing_actors(request.app[ACTOR_STATES_KEY]())
    if failing is None:
        return web.Response(status=503, text="no actor has reported yet\n")
    if failing:
        return web.Response(status=503, text="not running: " + ", ".join(failing) + "\n")
    return web.Response(text="ok\n")


async def _static(request: web.Request) -> web.Response:
    name, content_type = _STATIC[request.path]
    body = importlib.resources.files("controller.status").joinpath("static", name).read_bytes()
    return web.Response(
        body=body,
        content_type=content_type,
        charset="utf-8",
        headers={
            "Cache-Control": "no-cache",
            # The page loads nothing from anywhere else: say so to the browser too.
            "Content-Security-Policy": "default-src 'self'; img-src 'self' data:",
        },
    )


def failing_actors(states: Mapping[str, tuple[str, int]]) -> list[str] | None:
    """Names of actors not running ("name (state)"), or None when no actor is known yet."""
    if not states:
        return None
    return [
        f"{name} ({state})" for name, (state, _) in sorted(states.items()) if state != "running"
    ]


def states_from(state: FleetState) -> ActorStates:
    return lambda: {name: (s.state, s.restarts) for name, s in state.actors.items()}


def _merge_actors(seen: dict, live: Mapping[str, tuple[str, int]]) -> dict:
    merged = dict(seen)
    for name, (actor_state, restarts) in live.items():
        error = seen.get(name, {}).get("error")
        merged[name] = {"state": actor_state, "restarts": restarts, "error": error}
    return dict(sorted(merged.items()))


class StatsServer:
    """An AppRunner and its TCPSite: started in order, cleaned up in reverse, only what started."""

    def __init__(self, app: web.Application) -> None:
        self._app = app
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self.port: int | None = None

    async def start(self, host: str, port: int) -> None:
        runner = web.AppRunner(self._app, access_log=None, handle_signals=False)
        await runner.setup()
        self._runner = runner
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except OSError as exc:
            await self.stop()
            raise StatsError(
                f"[stats] listen {host}:{port}: cannot listen ({exc.strerror}); "
                'pick a free address or set listen = "" to disable the endpoint'
            ) from None
        self._site = site
        self.port = runner.addresses[0][1]

    async def stop(self) -> None:
        site, self._site = self._site, None
        runner, self._runner = self._runner, None
        try:
            if site is not None:
                await site.stop()
        finally:
            if runner is not None:
                await runner.cleanup()
