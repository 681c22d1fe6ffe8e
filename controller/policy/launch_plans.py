"""Launching: which instance type and zone, cooldowns after capacity errors, the bid and prices
(FleetReconciler's).

Types are tried in order; a capacity error cools its (type, zone) for capacity_cooldown and the
next type is asked in the same cycle. So does a refusal that asking again would only repeat (a bad
parameter, a missing permission, an account limit: COOLED_ERRORS), so a wrong image or a missing
permission costs one call per type and then the growing backoff below, not a call every cycle.
With every type cooling, one launch still probes the type that cools soonest after each of
STARVED_BACKOFF. A price above the bid waits, as GBrowse's balancer does. A launch that EC2 ends
while it starts for a reason of its own making (a KMS key, a snapshot, an image that shuts down)
pauses its type the same way.
"""

from __future__ import annotations

import math
from collections.abc import Generator
from typing import Any

from controller.cloud.port import LaunchSpec, ProviderError, launch_token
from controller.messages import ErrorKind, InstanceUp
from controller.policy.fleet_plans import (
    MAX_LAUNCH_CALLS,
    PRICE_REFRESH_SECONDS,
    STARVED_BACKOFF,
    CloudCall,
    LaunchCall,
    Plan,
    PriceCall,
    Tracked,
    outcome,
)
from controller.policy.lifecycle import Phase
from controller.policy.pool_profile import LaunchSettings

# Refusals a RunInstances of the same type would meet again: cool the type, try the next one.
COOLED_ERRORS = frozenset({ErrorKind.CAPACITY, ErrorKind.INVALID, ErrorKind.AUTH, ErrorKind.LIMIT})


def launch_error_hint(error: ProviderError | None, launch: LaunchSettings) -> str | None:
    """The setting to fix when EC2 refused a launch for something in the config (an AMI, a
    subnet, a key pair, a snapshot that is not there, or a missing permission); None otherwise."""
    if error is None:
        return None
    section = launch.image_key.rsplit(" ", 1)[0]  # "[slave]" or "[cluster.NAME]"
    code = error.code
    if code.startswith("InvalidAMIID"):
        return (
            f"{launch.image_key} {launch.image_id!r}: EC2 has no such image here ({code}); set "
            "an AMI of this region (`aws ec2 describe-images --owners self`)"
        )
    if code.startswith("InvalidSubnet"):
        return f"{section} subnet {launch.subnet!r}: {code}; set a subnet of this region"
    if code.startswith("InvalidKeyPair"):
        return f"{section} key pair {launch.key_name!r}: {code}; import it or set another"
    if code.startswith("InvalidSnapshot"):
        return f"a snapshot of {', '.join(launch.snapshots)}: {code}; fix the snapshot ids"
    if error.kind is ErrorKind.AUTH:
        return "the credentials may not launch: attach `controller iam-policy -c CONFIG`'s policy"
    return None


class LaunchPlans:
    """FleetReconciler's part that launches (it owns the state these methods use)."""

    tracked: dict[Any, Tracked]
    _prices_fresh: tuple[int, float] = (-1, 0.0)  # (changes, no price due before this loop time)
    _staying: tuple[int, int] = (-1, 0)  # (changes, instances _scale_out_count counted)

    def _launch(self, count: int) -> Plan:
        if self.group_id is None:
            self.note("warning", "launch.waiting", reason="no security group yet")
            return
        launch = self.launch
        if not launch.image_id:
            self.note(
                "error", "launch.refused", reason=f"{launch.image_key} is empty: set an AMI id"
            )
            return
        zone = launch.availability_zone
        types = [t for t in launch.instance_types if not self._cooling(t, zone)]
        if not types:
            if self.now() < self.starved_until:
                self.note("warning", "launch.no_type_available", types=launch.instance_types)
                return
            # Every type is cooling down: rather than wait out capacity_cooldown with nothing to
            # fall back on, probe the type that cools soonest, on a growing backoff.
            types = [min(launch.instance_types, key=lambda t: self.cooldowns.get((t, zone), 0.0))]
            self.starved_until = (
                self.now() + STARVED_BACKOFF[min(self.starved_tries, len(STARVED_BACKOFF) - 1)]
            )
            self.starved_tries += 1
            self.note("info", "launch.probing_capacity", instance_type=types[0])
        calls = 0  # RunInstances this cycle: a shortfall is asked again, up to MAX_LAUNCH_CALLS
        for instance_type in types:
            if count <= 0 or calls >= MAX_LAUNCH_CALLS:
                break
            bid = launch.spot_bid
            if bid is not None:
                price = yield from self._price_for_bid(instance_type, zone or self._any_zone(), bid)
                if price is not None and price > bid:
                    self.note(
                        "info",
                        "launch.waiting_for_price",
                        instance_type=instance_type,
                        spot_price=price,
                        spot_bid=bid,
                    )
                    continue
            while count > 0 and calls < MAX_LAUNCH_CALLS:
                spec = LaunchSpec(
                    fleet=self.fleet,
                    role=self.role,
                    image_id=launch.image_id,
                    instance_type=instance_type,
                    count=count,
                    client_token=launch_token(self.fleet),
                    zone=zone,
                    subnet=launch.subnet,
                    security_group_ids=(self.group_id,) if self.group_id != "sg-dryrun" else (),
                    key_name=launch.key_name,
                    user_data=launch.user_data,
                    max_price=bid,
                    snapshots=launch.snapshots,
                    dry_run=self.dry_run,
                )
                result = yield LaunchCall(spec)
                calls += 1
                if self.dry_run:
                    hint = launch_error_hint(result.error, launch)
                    self.note(
                        "error" if hint else "info",
                        "dry_run.would_launch",
                        count=count,
                        instance_type=instance_type,
                        check=outcome(result.error),
                        **({"hint": hint} if hint else {}),
                    )
                    return
                if result.error is not None and not result.instances:
                    self._provider_error(result.error, launch_error_hint(result.error, launch))
                    if result.error.kind in COOLED_ERRORS:
                        self._cool_down(instance_type, zone, why=result.error.kind)
                        break  # the next type in the list
                    return
                if not result.instances:
                    # the spot requests wait open: they count until request_timeout, and the
                    # describes read them until then
                    self.pending_requests += count
                    return
                self.starved_tries = 0
                for inst in result.instances:
                    if inst.instance_id not in self.tracked:
                        t = self._adopt(inst)
                        t.confirmed = False
                        if self.profile.announce_at_launch and inst.private_ip:
                            self.announce(t, inst.private_ip)  # probed until it answers
                count -= len(result.instances)
                self.note(
                    "info",
                    "instances.launched",
                    count=len(result.instances),
                    instance_type=instance_type,
                    instance_ids=[i.instance_id for i in result.instances],
                    short=count,
                )
        if count > 0:
            self.note(
                "warning", "launch.no_type_available", types=launch.instance_types, short=count
            )

    def relaunch_with(self, launch: LaunchSettings) -> None:
        """SIGHUP's new launch settings (types, image, bid, ...). Changed settings are tried at
        once: what the old ones were refused for (cooldowns, the probe backoff) is forgotten."""
        if launch != self.launch:
            self.cooldowns.clear()
            self.starved_tries, self.starved_until = 0, 0.0
            self.note("info", "launch.settings_changed", cooldowns="cleared")
        self.launch = launch
        self.changed()

    def announce(self, t: Tracked, address: str) -> None:
        """InstanceUp, once: the other actors may reach the instance at `address` from now on."""
        t.address = address
        t.announced = True
        self.changed()
        self.publish(
            InstanceUp(
                at=self.now(),
                instance_id=t.instance_id,
                address=address,
                role=self.role,
                instance_type=t.instance_type,
                zone=t.zone,
            )
        )

    def burst_seen(self, sample: Any) -> None:
        """Call a cycle now when a sample asks for more slaves than the fleet will have.

        Each sample may (LoadSampler reads every `sample_interval`); a policy says through
        `scale_out_hint` how many slaves a load surely needs. A count is acted on once: only a
        higher one calls again, until the load falls. Scale-in waits for the poll and its dwell.
        """
        hint = getattr(self.policy, "scale_out_hint", None)
        load = self.profile.load_of(sample)[0]
        if hint is None or load is None:
            return
        wanted = hint(load)
        self.hinted = min(self.hinted, wanted)
        if wanted > self.hinted and wanted > self._scale_out_count():
            self.hinted = wanted
            self.urgent = True
            self.note("info", "load.burst", load_rps=round(load, 3), wanted=wanted)

    def _scale_out_count(self) -> int:
        """Slaves that will serve: not leaving, not warned of interruption, and open requests.
        Asked at most readings: the instances are counted again only once the fleet changed."""
        if self._staying[0] != self.changes:
            staying = sum(
                1
                for t in self.tracked.values()
                if t.phase in (Phase.BOOTING, Phase.READY) and not t.interrupted
            )
            self._staying = (self.changes, staying)
        return self._staying[1] + self.pending_requests

    # prices and cooldowns

    def _cool_down(self, instance_type: str, zone: str, why: str = ErrorKind.CAPACITY) -> None:
        """Skip this type for capacity_cooldown. The key is the zone launches ask for: with no
        `availability_zone` EC2 picks the zone, so the failure in `zone` cools the whole type."""
        key = (instance_type, self.launch.availability_zone)
        self.cooldowns[key] = self.now() + self.config.scaling.capacity_cooldown
        self.note(
            "info", "capacity.cooldown", instance_type=instance_type, zone=zone or "any", why=why
        )

    def _launch_failed(self, t: Tracked, state_reason: str) -> None:
        """EC2 ended a booting instance for a reason of the launch's making: launching the same
        again would fail the same way (and bill a minute each time), so its type pauses."""
        self.note(
            "error",
            "launch.failed_on_start",
            instance_id=t.instance_id,
            instance_type=t.instance_type,
            state_reason=state_reason,
            hint="check the image, its snapshots and their KMS keys, and the instance's limits",
        )
        self._provider_error(
            ProviderError(
                kind=ErrorKind.INVALID,
                code=state_reason,
                message=f"{t.instance_id} ended while starting ({state_reason}): "
                f"{t.instance_type} paused for capacity_cooldown",
                operation="RunInstances",
                instance_type=t.instance_type,
                zone=t.zone,
            )
        )
        self._cool_down(t.instance_type, t.zone, why=ErrorKind.INVALID)

    def _cooling(self, instance_type: str, zone: str) -> bool:
        until = self.cooldowns.get((instance_type, zone))
        return until is not None and until > self.now()

    def _refresh_prices(self) -> Plan:
        """Ask again for each price in use once it is PRICE_REFRESH_SECONDS old. Looked at every
        cycle, but only when a price may be due or the prices in use changed (`_prices_fresh`)."""
        if self._prices_fresh[0] == self.changes and self.now() < self._prices_fresh[1]:
            return
        keys = {(t.instance_type, t.zone) for t in self.tracked.values()}
        keys.add((self.launch.instance_types[0], self._any_zone()))
        fresh_until = math.inf
        for key in keys:
            # a fresh price of the type in any zone serves until it is refreshed (one call at
            # start, not a second one once the first launch names its zone)
            cached = self.prices.get(key) or self.prices.get((key[0], ""))
            if cached is None or self.now() - cached[1] >= PRICE_REFRESH_SECONDS:
                price = yield PriceCall(*key)
                if price is None:
                    fresh_until = -math.inf  # asked again next cycle
                    continue
                cached = self._set_price(key, price)
            # surely not due before then (a margin well above float rounding of loop times)
            fresh_until = min(fresh_until, cached[1] + PRICE_REFRESH_SECONDS - 1e-3)
        self._prices_fresh = (self.changes, fresh_until)

    def _set_price(self, key: tuple[str, str], price: float) -> tuple[float, float]:
        cached = self.prices[key] = (price, self.now())
        self.changed()  # the fleet's cost and the next launch's price
        return cached

    def _price_for_bid(
        self, instance_type: str, zone: str, bid: float
    ) -> Generator[CloudCall, Any, float | None]:
        """The spot price to hold against the bid: the cached one while it is fresh and under the
        bid (no DescribeSpotPriceHistory in the launch path); asked again while it is above, so
        a waiting launch sees the price drop at the next cycle."""
        key = (instance_type, zone)
        cached = self.prices.get(key)
        if cached is not None and self.now() - cached[1] < PRICE_REFRESH_SECONDS:
            if cached[0] <= bid:
                return cached[0]
        price = yield PriceCall(instance_type, zone)
        if price is not None:
            self._set_price(key, price)
        return price

    def _price(self, instance_type: str, zone: str) -> float:
        cached = self.prices.get((instance_type, zone)) or self.prices.get((instance_type, ""))
        return cached[0] if cached else 0.0
