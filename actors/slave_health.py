"""SlaveHealth: which render slaves may be listed in renderfarm.conf, and which must leave it.

GBrowse's readiness rule: a render slave answers `GET http://ADDRESS:PORT/` with 403. A slave is
ready when every configured port does so; it is then announced once (SlaveReady). Every cycle the
ready slaves are probed again (GBrowse's own balancer never looked twice): after
`failures_to_lose` failed cycles in a row the slave is reported lost (SlaveLost, UNREACHABLE) at
once and no longer probed; SpotPool replaces it. Slaves not yet ready are probed each cycle until
they are (SpotPool times out the ones that never boot). A drained slave is simply no longer
considered; RenderfarmWriter takes it out of the file.

One cycle probes every slave and port concurrently, at most `concurrency` requests at a time,
each bounded by `[scaling] probe_timeout`, one attempt per cycle; every probe opens a fresh
connection, so a kept-alive socket never hides a dead server. Messages that arrive during a cycle
are handled after it, in order, so a slave gone meanwhile is reported lost rather than left listed.
"""

from __future__ import annotations

import asyncio
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
    failures: int = 0  # consecutive failed cycles while ready


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
    ) -> None:
        super().__init__(name="slave_health", bus=bus)
        self.ports = config.slave.ports
        self.interval = config.master.poll_interval if interval is None else interval
        self.probe_timeout = config.scaling.probe_timeout
        self.failures_to_lose = failures_to_lose
        self._concurrency = concurrency
        self._limit: asyncio.Semaphore | None = None
        self._session: aiohttp.ClientSession | None = None
        self._slaves: dict[InstanceId, _Slave] = {}
        # Drained or lost: not probed again until EC2 says the instance is gone.
        self._retired: set[InstanceId] = set()
        bus.subscribe(self.inbox, InstanceUp, InstanceDown, DrainSlave)

    def reconfigure(self, config: Config) -> None:
        """SIGHUP: a new interval and probe timeout apply from the next cycle."""
        self.interval = config.master.poll_interval
        self.probe_timeout = config.scaling.probe_timeout

    async def setup(self) -> None:
        self._limit = asyncio.Semaphore(self._concurrency)
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True))

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def run(self) -> None:
        next_cycle = self.clock()
        while not self.stopping.is_set():
            wait = next_cycle - self.clock()
            if wait > 0:
                msg = await self.inbox.get(timeout=wait)
                if msg is EOI:
                    return
                if msg is not None:
                    self.handle(msg)
                continue
            await self.probe_cycle()
            next_cycle = max(next_cycle + self.interval, self.clock())

    def handle(self, msg: object) -> None:
        match msg:
            case InstanceUp(instance_id=iid, address=address, role=Role.SLAVE):
                if iid not in self._slaves and iid not in self._retired and address:
                    self._slaves[iid] = _Slave(address=address)
            case InstanceDown(instance_id=iid, address=address, reason=reason):
                self._retired.discard(iid)
                slave = self._slaves.pop(iid, None)
                if slave is not None and slave.ready:
                    self.bus.publish(
                        SlaveLost(
                            at=self.clock(), instance_id=iid, address=slave.address, reason=reason
                        )
                    )
            case DrainSlave(instance_id=iid):
                self._slaves.pop(iid, None)
                self._retired.add(iid)

    async def probe_cycle(self) -> None:
        """Probe every known slave once, then act on the results."""
        targets = list(self._slaves.items())
        if not targets:
            return
        failures = await asyncio.gather(*(self._probe(s.address) for _, s in targets))
        now = self.clock()
        for (iid, slave), failure in zip(targets, failures, strict=True):
            if not slave.ready:
                if failure is None:
                    slave.ready = True
                    self.log.info("slave.ready", instance_id=iid, address=slave.address)
                    self.bus.publish(SlaveReady(at=now, instance_id=iid, address=slave.address))
                else:
                    self.log.debug("slave.not_ready", instance_id=iid, reason=failure)
            elif failure is None:
                slave.failures = 0
            else:
                slave.failures += 1
                if slave.failures < self.failures_to_lose:
                    self.log.warning(
                        "slave.probe_failed",
                        instance_id=iid,
                        reason=failure,
                        failures=slave.failures,
                    )
                    continue
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
                        at=now,
                        instance_id=iid,
                        address=slave.address,
                        reason=LostReason.UNREACHABLE,
                    )
                )

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
