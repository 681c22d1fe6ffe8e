"""RenderfarmWriter: renderfarm.conf lists exactly the slaves that passed the readiness probe.

It keeps the set of listed slaves from SlaveReady (add) and SlaveLost, DrainSlave, InstanceDown
(remove), and rewrites the file in GBrowse's format (controller.gbrowse.renderfarm), atomically,
one URL per slave and port, sorted so that the same set always gives the same bytes. The reload
command runs only when the bytes changed.

When (the pure rule is `write_due`): messages already queued are taken first, so a batch that
arrives together (a probe round, a scale-in) is one write. Then
- a removal (a slave drained, lost or gone) is written at once: a dead slave listed fails
  GBrowse's requests, and SpotPool terminates a drained or lost slave only after the
  RenderfarmWritten that no longer lists it (unlist -> reload -> terminate), so waiting would only
  keep it longer; pending additions go into the same write;
- an addition after a quiet `settle_seconds` (no write in that time) is written at once;
- additions within `settle_seconds` of a write are coalesced into one write at the end of that
  hold. The 2 s default covers the spread of announcements of slaves that boot together
  (SlaveHealth probes a booting slave every second, each on its own phase), so 0 -> 5 slaves
  take at most 2 reloads, and gives Apache's graceful restart time to finish before the next.

A slave that left (drained, lost, gone) is remembered, so a SlaveReady that crossed its removal on
the bus cannot list it again.

The file is this controller's: after a quiet `check_seconds` (the poll interval) it is read back,
and if someone else changed or removed it (a second controller given the same renderfarm_conf, a
package upgrade, a hand edit) it is written again from the slaves that passed the probe, with a
warning, and the master reloaded.

Start: an existing file is kept for `adopt_seconds` (about one probe cycle after SpotPool adopted
the fleet), so a restart of the controller does not take healthy slaves out of the file only to
put them back seconds later; it is rewritten from what was probed then, or as soon as every slave
it lists was announced again or left. This drops any slave that died while no controller watched.
A missing file is written at once in its empty form (`renderfarm = 0`).
A write that fails (a read-only or full directory, a file that is not text) leaves the old file
whole, is logged, said on the bus (RenderfarmWriteFailed: SpotPool then keeps a drained slave the
file still lists instead of terminating it) and retried every `retry_seconds`.
Stop: with `on_exit = "teardown"` the slaves leave the file first (the runtime stops this actor
before SpotPool terminates them): the empty form is written and the reload runs. If it cannot be
written the teardown goes on (the instances would bill on): one error says the file still lists
them, and the process exits 1. With "leave" the file stays as it is for the next start to adopt.
Dry run: nothing is written or reloaded; what would be is logged, with the URLs added and removed.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import os
import subprocess
from collections.abc import Sequence

from controller.config.schema import Config
from controller.gbrowse.renderfarm import render_renderfarm, write_atomic
from controller.messages import (
    DrainSlave,
    InstanceDown,
    InstanceId,
    RenderfarmWriteFailed,
    RenderfarmWritten,
    SlaveLost,
    SlaveReady,
)
from controller.runtime.actor import Actor
from controller.runtime.bus import EOI, Bus

_RETIRED_LIMIT = 10_000  # ids of slaves that left, kept to refuse a late SlaveReady


class RenderfarmConfError(Exception):
    """renderfarm.conf cannot be written where the config says (a user-fixable startup error)."""


def write_due(now: float, *, removal: bool, last_write: float | None, hold: float) -> float:
    """When a change made at `now` is to be written: a removal, or any change after a quiet
    `hold`, at once; else at the end of the hold that began with the last write."""
    if removal or last_write is None:
        return now
    return max(now, last_write + hold)


class RenderfarmWriter(Actor):
    stop_exit_code = 0  # 1: the teardown could not empty renderfarm.conf (the supervisor reads it)

    def __init__(
        self,
        *,
        config: Config,
        bus: Bus,
        dry_run: bool = False,
        settle_seconds: float = 2.0,
        adopt_seconds: float | None = None,
        retry_seconds: float = 5.0,
        reload_timeout: float = 20.0,
        check_seconds: float | None = None,
    ) -> None:
        super().__init__(name="renderfarm_writer", bus=bus)
        self.path = config.master.renderfarm_conf
        self.reload_command: tuple[str, ...] = tuple(config.master.reload_command)
        self.ports = config.slave.ports
        self.dry_run = dry_run
        self.settle_seconds = settle_seconds
        if adopt_seconds is None:
            adopt_seconds = 2 * config.master.poll_interval + config.scaling.probe_timeout
        self.adopt_seconds = adopt_seconds
        self.retry_seconds = retry_seconds
        self.check_seconds = config.master.poll_interval if check_seconds is None else check_seconds
        self.reload_timeout = reload_timeout
        # stop() writes and reloads: give the reload its whole timeout within the grace.
        self.grace_seconds = reload_timeout + 5.0
        self.clear_on_stop = config.controller.on_exit == "teardown"
        self._listed: dict[InstanceId, str] = {}  # instance -> address
        self._retired: dict[InstanceId, None] = {}  # insertion-ordered, bounded
        self._flush_at: float | None = None  # loop time the file is due to be rewritten
        self._written_at: float | None = None  # loop time the last change was written
        self._adopted: set[str] | None = None  # URLs of the file found at start, while adopting
        self._failing = False  # the last write failed: the next good one is announced
        self._last_error = ""
        bus.subscribe(self.inbox, SlaveReady, SlaveLost, DrainSlave, InstanceDown)

    # lifecycle

    def reconfigure(self, config: Config) -> None:
        """SIGHUP: a new reload command and on_exit apply from the next change."""
        self.reload_command = tuple(config.master.reload_command)
        self.clear_on_stop = config.controller.on_exit == "teardown"

    async def setup(self) -> None:
        if not self.dry_run:
            _check_writable(self.path)
        if _exists(self.path):
            self._adopted = set(_listed_urls(_read(self.path) or ""))
            self._flush_at = self.clock() + self.adopt_seconds
            self.log.info("renderfarm.adopting", path=self.path, rewrite_in=self.adopt_seconds)
        elif not await self.flush():
            raise RenderfarmConfError(
                f"[master] renderfarm_conf = {self.path!r} cannot be written (see the error above)"
            )

    async def run(self) -> None:
        while True:
            if self._flush_at is None or self.clock() < self._flush_at:
                msg = await self.inbox.get(timeout=self._wait())
                if msg is EOI:
                    return
                if msg is not None:
                    self.take(msg)
                    continue
                if self._flush_at is None:  # a quiet check_seconds: is the file still ours?
                    await self._check_file()
                    continue
            # The write is due (a wait that timed out ends at it, whatever the clock's rounding).
            if await self._take_queued():
                return
            await self.flush()

    def _wait(self) -> float | None:
        """How long to wait for a message: until the write that is due, else until the next look
        at the file (never in a dry run, which writes nothing)."""
        if self._flush_at is not None:
            return self._flush_at - self.clock()
        return None if self.dry_run else self.check_seconds

    async def _check_file(self) -> None:
        """Write the file again if someone else changed or removed it (module docstring)."""
        if _read(self.path) == render_renderfarm(self.urls()):
            return
        self.log.warning(
            "renderfarm.changed_elsewhere",
            path=self.path,
            hint="another program changed it (a second controller given the same "
            "renderfarm_conf? a package upgrade? a hand edit?): written again from the slaves "
            "that passed the probe",
        )
        await self.flush()

    async def _take_queued(self) -> bool:
        """Take the messages already waiting, so that a batch is one write; True at EOI (stop()
        writes what is pending)."""
        while len(self.inbox):
            msg = await self.inbox.get()
            if msg is EOI:
                return True
            if msg is not None:
                self.take(msg)
        return False

    async def stop(self) -> None:
        if self.clear_on_stop:
            listed = self.urls()
            self._listed.clear()
            self.log.info("renderfarm.clearing", path=self.path, reason="teardown")
            if not await self.flush(final=True):
                self.stop_exit_code = 1
                self.log.error(
                    "renderfarm.not_cleared",
                    path=self.path,
                    error=self._last_error,
                    still_listed=listed,
                    hint="the teardown terminates these slaves anyway (they would bill on); "
                    "GBrowse sends renders to their addresses until the file is fixed: make its "
                    "directory writable or free space, then run `controller teardown -c CONFIG`",
                )
        elif self._flush_at is not None and self._adopted is None:  # else left for the next start
            await self.flush()

    # state

    def take(self, msg: object) -> None:
        """Apply one message and schedule the write it calls for."""
        changed = self.apply(msg)
        now = self.clock()
        if self._adopted is not None:
            # Early only if the write keeps every adopted slave that has not left.
            if self._adopted <= set(self.urls()):
                self._flush_at = now
            return
        if changed:
            due = write_due(
                now,
                removal=not isinstance(msg, SlaveReady),
                last_write=self._written_at,
                hold=self.settle_seconds,
            )
            if self._flush_at is None or due < self._flush_at:
                self._flush_at = due

    def apply(self, msg: object) -> bool:
        """Update the listed set from one message; True if it changed."""
        match msg:
            case SlaveReady(instance_id=iid, address=address):
                if iid in self._retired or self._listed.get(iid) == address:
                    return False
                self._listed[iid] = address
                return True
            case (
                SlaveLost(instance_id=iid, address=address)
                | DrainSlave(instance_id=iid, address=address)
                | InstanceDown(instance_id=iid, address=address)
            ):
                if self._adopted is not None:
                    self._adopted.difference_update(_url(address, p) for p in self.ports)
                self._retired[iid] = None
                if len(self._retired) > _RETIRED_LIMIT:
                    del self._retired[next(iter(self._retired))]
                return self._listed.pop(iid, None) is not None
        return False

    def urls(self) -> list[str]:
        """Every listed slave and port as GBrowse wants it, in address order, no duplicates."""
        addresses = sorted(set(self._listed.values()), key=_address_key)
        return [_url(address, port) for address in addresses for port in self.ports]

    # effects

    async def flush(self, final: bool = False) -> bool:
        """Write the file from the listed set, reload if it changed; False if the write failed
        (it is retried after `retry_seconds`; `final`: stop() reports it)."""
        self._flush_at = None
        self._adopted = None
        urls = self.urls()
        text = render_renderfarm(urls)
        if self.dry_run:
            if self._would_write(urls, text):
                self._written_at = self.clock()
            return True
        try:
            changed = write_atomic(self.path, text)
        except (OSError, UnicodeError) as exc:
            self._write_failed(exc, final)
            return False
        if not changed and not self._failing:
            self.log.debug("renderfarm.unchanged", path=self.path, urls=len(urls))
            return True
        self._failing = False
        if not changed:  # as it was before the failed writes: nothing to reload
            self.publish(RenderfarmWritten(at=self.clock(), addresses=tuple(urls), reloaded=False))
            return True
        reloaded = await self.reload()
        self._written_at = self.clock()
        self.log.info("renderfarm.written", path=self.path, urls=urls, reloaded=reloaded)
        self.publish(RenderfarmWritten(at=self.clock(), addresses=tuple(urls), reloaded=reloaded))
        return True

    def _write_failed(self, exc: OSError | UnicodeError, final: bool) -> None:
        self._failing = True
        self._last_error = getattr(exc, "strerror", None) or str(exc)
        self.publish(RenderfarmWriteFailed(at=self.clock(), error=self._last_error))
        if final:
            return  # stop() says it once
        self._flush_at = self.clock() + self.retry_seconds
        if isinstance(exc, UnicodeError):  # the old file is not text: a person must look
            hint = "the existing file is not UTF-8 text; move it away"
        elif getattr(exc, "errno", None) in (errno.ENOSPC, errno.EDQUOT):
            hint = "its file system is full; free space there"
        else:
            hint = "check [master] renderfarm_conf and its directory's permissions"
        self.log.error(
            "renderfarm.write_failed",
            path=self.path,
            error=self._last_error,
            hint=hint + "; the old file stays in place",
            retry_in=self.retry_seconds,
        )

    def _would_write(self, urls: Sequence[str], text: str) -> bool:
        current = _read(self.path)
        if current == text:
            return False
        before = set(_listed_urls(current or ""))
        self.log.info(
            "dry_run.would_write",
            path=self.path,
            added=[u for u in urls if u not in before],
            removed=sorted(before - set(urls)),
            renderfarm=1 if urls else 0,
        )
        if self.reload_command:
            self.log.info("dry_run.would_reload", command=list(self.reload_command))
        self.publish(
            RenderfarmWritten(at=self.clock(), addresses=tuple(urls), reloaded=False, dry_run=True)
        )
        return True

    async def reload(self) -> bool:
        """Run the reload command (no shell); True if it exited 0. Failures are logged, never
        raised: the file is written and the next change reloads again."""
        command = list(self.reload_command)
        if not command:
            return False
        try:
            proc = await asyncio.create_subprocess_exec(
                *command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
        except OSError as exc:
            self.log.error(
                "renderfarm.reload_failed",
                command=command,
                error=exc.strerror or str(exc),
                hint="fix [master] reload_command (an argv list, e.g. ['apache2ctl', 'graceful'])",
            )
            return False
        try:
            async with asyncio.timeout(self.reload_timeout):
                output, _ = await proc.communicate()
        except TimeoutError:
            self.log.error(
                "renderfarm.reload_failed",
                command=command,
                error=f"still running after {self.reload_timeout}s; killed",
            )
            return False
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        if proc.returncode != 0:
            self.log.error(
                "renderfarm.reload_failed",
                command=command,
                exit_code=proc.returncode,
                output=output.decode(errors="replace").strip()[-500:],
                hint="renderfarm.conf is written; check the command by hand",
            )
            return False
        return True


def _url(address: str, port: int) -> str:
    host = f"[{address}]" if ":" in address else address
    return f"http://{host}:{port}"


def _address_key(address: str) -> tuple[int, int, str]:
    """IP addresses in numeric order (10.0.0.9 before 10.0.0.10), then anything else by name."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return (1, 0, address)
    return (0, int(ip) + (ip.version << 128), address)


def _listed_urls(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip().startswith("http")]


def _check_writable(path: str) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory) or not os.access(directory, os.W_OK | os.X_OK):
        raise RenderfarmConfError(
            f"[master] renderfarm_conf = {path!r}: directory {directory!r} is missing "
            "or not writable by this user; create it or point renderfarm_conf elsewhere"
        )


def _exists(path: str) -> bool:
    return os.path.exists(path)


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return None
