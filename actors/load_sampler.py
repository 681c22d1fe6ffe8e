"""LoadSampler: Apache's request rate, read from mod_status every `[master] sample_interval`.

Each reading fetches `server_status_url` (the `?auto` page, local and cheap), turns `Total
Accesses` into a rate over the last poll interval, raised to what the newest reading surely shows
(controller.gbrowse.apache_status), and publishes a LoadSample; SpotPool launches at once when a
sample calls for more slaves, so a burst is acted on within about a second whatever
`poll_interval` is. A page that cannot be read
(refused, timed out, not 200, garbled) publishes SensorLost instead and the sampler retries with a
growing delay
capped at the poll interval; SpotPool holds the fleet until samples come back. An outage logs
once when it starts and once when it ends, and the first good sample after it only re-baselines
the counter (its requests during the outage are unknown), so the next poll brings the first rate.
"""

from __future__ import annotations

from collections.abc import Callable

import aiohttp
from yarl import URL

from controller.config.schema import Config
from controller.gbrowse.apache_status import (
    RateTracker,
    ServerStatus,
    StatusParseError,
    parse_server_status,
)
from controller.messages import LoadSample, SensorLost
from controller.runtime.actor import Actor
from controller.runtime.bus import Bus


class SensorError(Exception):
    """One failed read of the status page; the message is the reason shown in SensorLost."""


class LoadSampler(Actor):
    def __init__(
        self,
        *,
        config: Config,
        bus: Bus,
        session_factory: Callable[[], aiohttp.ClientSession] | None = None,
    ) -> None:
        super().__init__(name="load_sampler", bus=bus)
        self.url = config.master.server_status_url
        self.interval = config.master.reading_interval
        self.poll_interval = config.master.poll_interval
        self.timeout = config.master.status_timeout
        self.tracker = RateTracker(
            window_seconds=config.master.window_seconds,
            recent_seconds=config.master.poll_interval,
        )
        self._session_factory = session_factory or aiohttp.ClientSession
        self._session: aiohttp.ClientSession | None = None
        self._outage_since: float | None = None
        self._failures = 0

    def reconfigure(self, config: Config) -> None:
        """SIGHUP: the new URL, intervals and timeout apply from the next reading."""
        self.url = config.master.server_status_url
        self.interval = config.master.reading_interval
        self.poll_interval = config.master.poll_interval
        self.tracker.recent_seconds = config.master.poll_interval
        self.timeout = config.master.status_timeout

    async def setup(self) -> None:
        self._session = self._session_factory()

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def run(self) -> None:
        await self.poll_forever(self.poll_once, failing=lambda: self._failures > 0)

    async def poll_once(self) -> float:
        """One fetch and what follows from it; returns the delay before the next one."""
        try:
            status = await self._fetch()
        except SensorError as exc:
            return self._lost(self.clock(), str(exc))
        now = self.clock()
        if self._outage_since is not None:
            self.log.info(
                "sensor.recovered", url=_safe(self.url), down_for=round(now - self._outage_since, 3)
            )
            self._outage_since = None
        self._failures = 0
        rates = self.tracker.observe(now, status.total_accesses)
        if rates is None:
            self.log.debug("sensor.baseline", total_accesses=status.total_accesses)
        else:
            self.bus.publish(
                LoadSample(
                    at=now,
                    rps=rates.rps,
                    window_rps=rates.window_rps,
                    busy_workers=status.busy_workers,
                )
            )
        return self.interval

    def _lost(self, now: float, reason: str) -> float:
        if self._outage_since is None:
            self._outage_since = now
            self.log.warning(
                "sensor.lost",
                url=_safe(self.url),
                reason=reason,
                hint="the fleet holds until Apache's server-status answers again",
            )
        self._failures += 1
        self.tracker.reset()
        self.bus.publish(SensorLost(at=now, since=self._outage_since, reason=reason))
        return min(self.poll_interval, self.interval * 2.0 ** (self._failures - 1))

    async def _fetch(self) -> ServerStatus:
        assert self._session is not None, "setup() creates the session"
        try:
            async with self._session.get(
                self.url,
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                allow_redirects=False,
            ) as response:
                if response.status in (401, 403, 404):  # an answer, about the URL or access
                    raise SensorError(
                        f"HTTP {response.status} from server-status: check [master] "
                        "server_status_url and that mod_status serves it to this host"
                    )
                if response.status != 200:
                    raise SensorError(f"HTTP {response.status} from server-status")
                text = await response.text(errors="replace")
        except TimeoutError:  # asyncio.TimeoutError since 3.11
            raise SensorError(f"no answer within status_timeout={self.timeout}s") from None
        except aiohttp.ClientConnectorError as exc:
            raise SensorError(
                f"cannot connect to {exc.host}:{exc.port} ({exc.os_error.strerror or exc}): is "
                "Apache running there? ([master] server_status_url)"
            ) from None
        except aiohttp.ClientError as exc:
            raise SensorError(f"cannot fetch server-status: {type(exc).__name__}: {exc}") from None
        except OSError as exc:
            raise SensorError(f"cannot fetch server-status: {exc.strerror or exc}") from None
        try:
            return parse_server_status(text)
        except StatusParseError as exc:
            raise SensorError(f"garbled server-status page: {exc}") from None


def _safe(url: str) -> str:
    """The URL without a password, for logs."""
    parsed = URL(url)
    return str(parsed.with_password(None)) if parsed.password else url
