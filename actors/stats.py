"""The Stats actor: folds every bus message into a FleetState and serves it over HTTP.

    bus ──every message (Bus.listen)──> Stats.fold ──> FleetState ──> GET /status   (JSON)
                                                                 ├──> GET /metrics  (Prometheus)
                                                                 ├──> GET /healthz  (200 / 503)
                                                                 └──> GET /         (the page)

It is also the process's voice to systemd (controller.runtime.sdnotify): READY=1 the first time
every actor runs, STATUS= with a one-line summary when it changes, STOPPING=1 when the teardown
begins. (WATCHDOG=1 comes from the runtime's heartbeat, which beats only while every actor runs.)
The endpoint itself (token, routes, the page) is controller.status.stats.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from controller.config.schema import Config
from controller.messages import ActorStateChanged, Decision
from controller.runtime import sdnotify
from controller.runtime.actor import Actor
from controller.runtime.bus import EOI, Bus
from controller.runtime.supervisor import Runtime
from controller.status.fleetstate import FleetState
from controller.status.metrics import Metrics
from controller.status.stats import (
    ActorStates,
    StatsServer,
    create_app,
    failing_actors,
    load_token,
    states_from,
)

STATUS_EVERY_SECONDS = 5.0  # how often systemd's STATUS= line is refreshed (when it changed)


class Stats(Actor):
    """Folds the bus into a FleetState, serves it, and keeps systemd informed."""

    def __init__(
        self,
        config: Config,
        *,
        bus: Bus,
        dry_run: bool = False,
        actor_states: ActorStates | None = None,
        name: str = "stats",
        clock: Callable[[], float] | None = None,
        cluster: str | None = None,
    ) -> None:
        """`cluster`: the [cluster.NAME] `run --cluster` runs, so /status speaks of jobs and
        nodes from the start (it would once the first queue message came)."""
        super().__init__(name=name, bus=bus, clock=clock)
        self.config = config
        self.cluster = cluster
        self.state = FleetState(dry_run=dry_run, mode="gbrowse" if cluster is None else "cluster")
        self.metrics = Metrics(
            self.state,
            clock=lambda: self.clock(),
            max_cost_per_hour=lambda: self.config.scaling.max_cost_per_hour,
        )
        self.actor_states = actor_states
        self.server: StatsServer | None = None
        self._ready_sent = False
        self._stopping_sent = False
        self._status_line = ""

    def reconfigure(self, config: Config) -> None:
        """SIGHUP: /metrics' budget cap follows the new config."""
        self.config = config

    def bind_runtime(self, runtime: Runtime) -> None:
        """Answer /healthz and READY=1 from the runtime's own view of its actors."""
        self.actor_states = runtime.states

    @property
    def port(self) -> int | None:
        """The bound port (useful with `listen = "127.0.0.1:0"`), None when disabled."""
        return None if self.server is None else self.server.port

    async def setup(self) -> None:
        # A listener, not a mailbox: the state is current the moment a message is published,
        # and it keeps folding while the run() loop restarts.
        self.bus.listen(self.fold)
        stats = self.config.stats
        if not stats.listen:
            self.log.info("stats.disabled", listen="")
            return
        app = create_app(
            self.state,
            self.metrics,
            clock=self.clock,
            token=load_token(stats),
            actor_states=lambda: self._actor_states(),
            extra={
                "fleet": self.config.controller.fleet,
                "cluster": self.cluster,
                "max_cost_per_hour": self.config.scaling.max_cost_per_hour,
            },
        )
        server = StatsServer(app)
        await server.start(stats.host, stats.port)
        self.server = server
        self.log.info("stats.listening", host=stats.host, port=server.port)

    async def run(self) -> None:
        """Refresh systemd's STATUS= line; the inbox only ever carries EOI, at the stop."""
        while await self.inbox.get(timeout=STATUS_EVERY_SECONDS) is not EOI:
            line = self.state.summary()
            if line != self._status_line and not self._stopping_sent:
                sdnotify.status(line)
                self._status_line = line

    def fold(self, msg: object) -> None:
        """Apply one message; observe decision latency before the state moves on."""
        if isinstance(msg, Decision):
            latency = self.state.decision_latency(msg)
            if latency is not None:
                self.metrics.observe_decision_latency(latency)
        self.state.apply(msg)
        if isinstance(msg, ActorStateChanged):
            if msg.state == "stopping":
                self._send_stopping()
            elif not self._ready_sent and failing_actors(self._actor_states()) == []:
                # Type=notify: systemd counts the service as started only now.
                self._ready_sent = True
                sdnotify.ready(self.state.summary())

    def _actor_states(self) -> Mapping[str, tuple[str, int]]:
        if self.actor_states is not None:
            return self.actor_states()
        return states_from(self.state)()

    def _send_stopping(self) -> None:
        if not self._stopping_sent:
            self._stopping_sent = True
            sdnotify.stopping("stopping: teardown in progress")

    async def stop(self) -> None:
        self._send_stopping()
        server, self.server = self.server, None
        if server is not None:
            await server.stop()
