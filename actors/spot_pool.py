"""SpotPool: the actor that keeps the fleet's EC2 spot instances where the policy wants them.

One pool per process, for one role: GBrowse render slaves (the default) or, with
`run --cluster NAME`, a batch cluster's Grid Engine nodes (controller.pool_profile says what
differs). Every decision is the fleet reconciler's (controller.policy.reconciler): this actor only
observes, plans and executes. It feeds the reconciler the other actors' messages, wakes it every
poll (at once for an urgent message, such as a load sample calling for more slaves, without a
describe; at the moment a drain ends), awaits the cloud calls its plans
yield, and publishes and logs what it has to say. `controller simulate` executes the same plans on
SimCloud in virtual time, so its figures are this actor's.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from controller.cloud.port import Cloud
from controller.cloud.teardown import configured_volume_ids
from controller.config.schema import Config
from controller.messages import LostReason
from controller.policy.band import Policy
from controller.policy.fleet_plans import (
    CancelCall,
    CloudCall,
    DescribeFleet,
    LaunchCall,
    Plan,
    PriceCall,
    Publish,
    TerminateCall,
)
from controller.policy.pool_profile import PoolProfile, SlaveProfile
from controller.policy.queue_policy import QueuePolicy
from controller.policy.reconciler import FleetReconciler
from controller.runtime.actor import Actor
from controller.runtime.bus import EOI, Bus


class SpotPool(Actor):
    # Teardown terminates and waits for EC2 to agree: far longer than the default grace.
    grace_seconds = 900.0
    stop_exit_code = 0  # 1: the teardown at stop left part of the fleet (the supervisor reads it)

    def __init__(
        self,
        *,
        config: Config,
        bus: Bus,
        cloud: Cloud,
        policy: Policy | QueuePolicy,
        profile: PoolProfile | None = None,
        dry_run: bool = False,
        confirm_release: bool = False,
        clock: Callable[[], float] | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        profile = profile or SlaveProfile(config)
        super().__init__(name=profile.actor_name, bus=bus, clock=clock)
        self.cloud = cloud
        self.dry_run = dry_run
        self.fleet = config.controller.fleet
        self.config_volume_ids = configured_volume_ids(config)  # the user's, never torn down
        self.pool = FleetReconciler(
            config=config,
            policy=policy,
            profile=profile,
            clock=self.now,
            wall_clock=wall_clock,
            dry_run=dry_run,
            # a node's scale-in is terminated once ClusterNodeSetup released it (release_plans)
            confirm_release=confirm_release,
        )
        bus.subscribe(self.inbox, *self.pool.subscriptions())

    def reconfigure(self, config: Config) -> None:
        """SIGHUP: new timings, bid, types and table apply from the next cycle."""
        self.pool.reconfigure(config)
        self._deliver()

    async def setup(self) -> None:
        """Adopt whatever carries the fleet's tag before anything else decides."""
        await self._execute(self.pool.adopt())

    async def run(self) -> None:
        pool = self.pool
        next_cycle = self.now()
        while not self.stopping.is_set():
            wake = min(next_cycle, pool.next_drain_due())
            msg = await self.inbox.get(timeout=max(0.0, wake - self.now()))
            # Fold in everything already waiting, so that the cycle decides on the newest view
            # (and a burst of SlaveLost costs one reconcile, not one each).
            while msg is not None:
                if msg is EOI:
                    return
                pool.handle(msg)
                msg = await self.inbox.get() if len(self.inbox) else None
            self._deliver()
            cycle, polled = pool.cycle_due(next_cycle)
            if cycle:
                pool.urgent = False
                await self._execute(pool.reconcile(describe=polled))
                if polled:
                    next_cycle = pool.next_poll(next_cycle)
            elif pool.next_drain_due() <= self.now():
                await self._execute(pool.terminate_due())
                pool.publish_fleet()
                self._deliver()

    async def stop(self) -> None:
        """Terminate the fleet with on_exit = teardown; leave it for adoption otherwise."""
        pool = self.pool
        if pool.config.controller.on_exit != "teardown":
            self.log.info("fleet.left_running", instances=len(pool.tracked))
            return
        if self.dry_run:
            self.log.info("dry_run.would_teardown", instances=sorted(pool.tracked))
            return
        from controller.cloud.teardown import teardown_fleet

        if pool.profile.down_before_teardown:  # nodes leave Grid Engine before they go
            pool.announce_down(LostReason.TEARDOWN)
            self._deliver()
        report = await teardown_fleet(
            self.cloud,
            self.fleet,
            delete_fleet_groups=False,  # FirewallKeeper deletes the group after us
            keep_volume_ids=self.config_volume_ids,  # the user's shared volumes
            known_ids=tuple(pool.tracked),  # launched moments ago, EC2 may not show them yet
            progress=lambda line: self.log.info("teardown.progress", step=line),
        )
        if not pool.profile.down_before_teardown:
            pool.announce_down(LostReason.TEARDOWN)
            self._deliver()
        pool.tracked.clear()
        pool.changed()  # the fleet views are rebuilt from what is tracked (none)
        if report.clean:
            self.log.info("fleet.torn_down", report=str(report))
        else:  # the process exits 1: whoever stopped it must look (`controller teardown`)
            self.stop_exit_code = 1
            self.log.error(
                "fleet.teardown_incomplete",
                report=str(report),
                hint="run `controller teardown -c CONFIG` to finish it",
            )

    async def _execute(self, plan: Plan) -> None:
        """Run one plan: await each cloud call it yields, send it the result, and deliver what
        it has to say before each call and at the end."""
        result: Any = None
        try:
            while True:
                call = plan.send(result)
                self._deliver()
                result = await self._call(call)
        except StopIteration:
            pass
        self._deliver()

    async def _call(self, call: CloudCall) -> Any:
        match call:
            case DescribeFleet(with_requests=with_requests):
                return await self.cloud.describe_fleet(self.fleet, with_requests=with_requests)
            case LaunchCall(spec=spec):
                return await self.cloud.launch(spec)
            case TerminateCall(ids=ids, dry_run=dry_run):
                return await self.cloud.terminate(ids, dry_run=dry_run)
            case CancelCall(ids=ids, dry_run=dry_run):
                return await self.cloud.cancel_requests(ids, dry_run=dry_run)
            case PriceCall(instance_type=instance_type, zone=zone):
                return await self.cloud.spot_price(instance_type, zone)
        raise TypeError(f"not a cloud call: {call!r}")

    def _deliver(self) -> None:
        for item in self.pool.take_outbox():
            if isinstance(item, Publish):
                self.bus.publish(item.message)
            else:
                getattr(self.log, item.level)(item.event, **item.fields)
