"""SlaveHealth: which render slaves may be listed in renderfarm.conf, and which must leave it.

GBrowse's readiness rule: a render slave answers `GET http://ADDRESS:PORT/` with 403. A slave is
ready when every configured port does so; it is then announced once (SlaveReady).

Each slave has its own schedule (the pure rule is `after_probe`):
- not yet ready: probed at once when EC2 shows it (InstanceUp), then every `[master]
  sample_interval` (1 s; a refused connection is cheap), so a booted slave is announced about a
  second after it first answers. SpotPool times out the ones that never boot.
- ready: probed every poll_interval (GBrowse's own balancer never looked twice). A failed probe is
  confirmed by a re-probe `recheck_seconds` (0.5 s) after it, not a whole poll later; the
  `failures_to_lose`-th (2nd) failure in a row reports the slave lost (SlaveLost, UNREACHABLE) at
  once, and it is no longer probed; SpotPool replaces it. A killed slave (connection refused) is
  thus reported within poll_interval + recheck_seconds of its death; one that hangs within
  poll_interval + 2 x probe_timeout + recheck_seconds.
A drained slave is simply no longer considered; RenderfarmWriter takes it out of the file.

Probes run concurrently, at most `concurrency` requests at a time and one probe per slave,
each bounded by `[scaling] probe_timeout`; every probe opens a fresh connection, so a kept-alive
socket never hides a dead server. A probe's outcome is queued in this actor's own inbox and
handled in order with the bus messages, so a slave gone meanwhile is reported lost (ready before
its InstanceDown) or not at all (never announced), never left listed.
"""

from __future__ import annotations

import asyncio
import enum
from dataclasses import dataclass

import aiohttp

from controller.config.schema import Config
from controller.messages import (
    DrainSlave,
    InstanceDown,
    InstanceId,
    InstanceUp,
    LostReason,
    Role,
    SlaveLost,
    SlaveReady,
)
from controller.runtime.actor import Actor
from controller.runtime.bus import EOI, Bus


@dataclass(slots=True)
class _Slave:
    address: str
    ready: bool = False
    failures: int = 0  # failed probes in a row while ready
    due: float = 0.0  # loop time of the next probe
    probing: asyncio.Task[None] | None = None


@dataclass(frozen=True, slots=True)
class _Probed:
    """A probe's outcome (None: passed), queued in the actor's own inbox."""

    instance_id: InstanceId
    slave: _Slave
    started: float
    failure: str | None


@dataclass(frozen=True, slots=True)
class Cadence:
    booting: float  # seconds between probes of a slave not yet ready
    ready: float  # seconds between probes of a ready slave
    recheck: float  # seconds from a ready slave's failed probe to the re-probe
    failures_to_lose: int  # failed probes in a row that lose a ready slave


class Outcome(enum.Enum):
    READY = "ready"  # announce it
    FAILED = "failed"  # a ready slave failed; re-probed soon
    LOST = "lost"  # report it lost, probe no more


def after_probe(
    slave: _Slave, failure: str | None, started: float, now: float, cadence: Cadence
) -> Outcome | None:
    """Update `slave` from one probe that began at `started` and ended at `now`; say what to
    report. Pure: no I/O, no clock."""
    if not slave.ready:
        slave.due = started + cadence.booting
        if failure is not None:
            return None
        slave.ready = True
        slave.due = started + cadence.ready
        return Outcome.READY
    if failure is None:
        slave.failures = 0
        slave.due = started + cadence.ready
        return None
    slave.failures += 1
    if slave.failures >= cadence.failures_to_lose:
        return Outcome.LOST
    slave.due = now + cadence.recheck
    return Outcome.FAILED


def slave_url(address: str, port: int) -> str:
    host = f"[{address}]" if ":" in address else address
    return f"http://{host}:{port}/"


class SlaveHealth(Actor):
    def __init__(
        self,
        *,
        config: Config,
        bus: Bus,
        interval: float | None = None,
        concurrency: int = 32,
        failures_to_lose: int = 2,
        recheck_seconds: float = 0.5,
    ) -> None:
        super().__init__(name="slave_health", bus=bus)
        self.ports = config.slave.ports
        self._interval = interval
        self.failures_to_lose = failures_to_lose
        self.recheck_seconds = recheck_seconds
        self.reconfigure(config)
        self._concurrency = concurrency
        self._limit: asyncio.Semaphore | None = None
        self._session: aiohttp.ClientSession | None = None
        self._slaves: dict[InstanceId, _Slave] = {}
        # Drained or lost: not probed again until EC2 says the instance is gone.
        self._retired: set[InstanceId] = set()
        bus.subscribe(self.inbox, InstanceUp, InstanceDown, DrainSlave)

    def reconfigure(self, config: Config) -> None:
        """SIGHUP: new intervals and probe timeout apply from each slave's next probe."""
        ready = config.master.poll_interval if self._interval is None else self._interval
        # `[master] sample_interval` paces the load samples too; never slower than a ready slave.
        booting = min(config.master.sample_interval, ready)
        self.cadence = Cadence(booting, ready, self.recheck_seconds, self.failures_to_lose)
        self.probe_timeout = config.scaling.probe_timeout

    async def setup(self) -> None:
        self._limit = asyncio.Semaphore(self._concurrency)
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True))

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def run(self) -> None:
        now = self.clock()
        try:
            while not self.stopping.is_set():
                self._start_due_probes(now)
                idle = [s.due for s in self._slaves.values() if s.probing is None]
                wake = min(idle, default=None)
                timeout = None if wake is None else max(0.0, wake - self.clock())
                msg = await self.inbox.get(timeout=timeout)
                if msg is EOI:
                    return
                if msg is None:  # timed out: `wake` has come, whatever the clock's rounding says
                    assert wake is not None, "only a wait with a timeout times out"
                    now = max(self.clock(), wake)
                    continue
                self.handle(msg)
                now = self.clock()
        finally:
            for slave in self._slaves.values():
                if slave.probing is not None:
                    slave.probing.cancel()
                    slave.probing = None

    def handle(self, msg: object) -> None:
        match msg:
            case _Probed(instance_id=iid, slave=slave, started=started, failure=failure):
                slave.probing = None
                if self._slaves.get(iid) is slave:  # not dropped while it was probed
                    self._judge(iid, slave, started, failure)
            case InstanceUp(instance_id=iid, address=address, role=Role.SLAVE):
                if iid not in self._slaves and iid not in self._retired and address:
                    self._slaves[iid] = _Slave(address=address, due=self.clock())
            case InstanceDown(instance_id=iid, reason=reason):
                self._retired.discard(iid)
                slave = self._forget(iid)
                if slave is not None and slave.ready:
                    self.bus.publish(
                        SlaveLost(
                            at=self.clock(), instance_id=iid, address=slave.address, reason=reason
                        )
                    )
            case DrainSlave(instance_id=iid):
                self._forget(iid)
                self._retired.add(iid)

    def _forget(self, iid: InstanceId) -> _Slave | None:
        slave = self._slaves.pop(iid, None)
        if slave is not None and slave.probing is not None:
            slave.probing.cancel()
            slave.probing = None
        return slave

    def _judge(self, iid: InstanceId, slave: _Slave, started: float, failure: str | None) -> None:
        now = self.clock()
        outcome = after_probe(slave, failure, started, now, self.cadence)
        if outcome is None and failure is not None:
            self.log.debug("slave.not_ready", instance_id=iid, reason=failure)
        elif outcome is Outcome.READY:
            self.log.info("slave.ready", instance_id=iid, address=slave.address)
            self.bus.publish(SlaveReady(at=now, instance_id=iid, address=slave.address))
        elif outcome is Outcome.FAILED:
            self.log.warning(
                "slave.probe_failed",
                instance_id=iid,
                reason=failure,
                failures=slave.failures,
                recheck_in=self.cadence.recheck,
            )
        elif outcome is Outcome.LOST:
            self.log.warning(
                "slave.unreachable",
                instance_id=iid,
                address=slave.address,
                reason=failure,
                failures=slave.failures,
            )
            del self._slaves[iid]
            self._retired.add(iid)
            self.bus.publish(
                SlaveLost(
                    at=now, instance_id=iid, address=slave.address, reason=LostReason.UNREACHABLE
                )
            )

    # effects

    def _start_due_probes(self, now: float) -> None:
        for iid, slave in self._slaves.items():
            if slave.probing is None and slave.due <= now:
                slave.probing = asyncio.create_task(
                    self._probe_slave(iid, slave, now), name=f"slave_health:probe:{iid}"
                )

    async def _probe_slave(self, iid: InstanceId, slave: _Slave, started: float) -> None:
        try:
            failure = await self._probe(slave.address)
        except Exception as exc:  # a bug here must not stop this slave's probes for good
            self.log.exception("slave.probe_error", instance_id=iid)
            failure = f"probe error: {type(exc).__name__}: {exc}"
        self.inbox.put(_Probed(iid, slave, started, failure))

    async def _probe(self, address: str) -> str | None:
        """None when every port answers 403, else the first failure as a short reason."""
        results = await asyncio.gather(
            *(self._probe_port(slave_url(address, p)) for p in self.ports)
        )
        return next((r for r in results if r is not None), None)

    async def _probe_port(self, url: str) -> str | None:
        assert self._session is not None and self._limit is not None, "setup() creates them"
        async with self._limit:
            try:
                async with self._session.get(
                    url,
                    allow_redirects=False,
                    timeout=aiohttp.ClientTimeout(total=self.probe_timeout),
                ) as response:
                    status = response.status
            except TimeoutError:
                return f"{url}: no answer within probe_timeout={self.probe_timeout}s"
            except (aiohttp.ClientError, OSError) as exc:
                return f"{url}: {type(exc).__name__}: {exc}"
        if status != 403:
            return f"{url}: HTTP {status} (a GBrowse render slave answers 403)"
        return None
