"""A few hours of believable bus traffic, for the Stats tests and the status page screenshot.

Load rises in the morning, spikes, falls, and rises again at the end; the policy follows the
seed's load table; slaves become ready two minutes after the decision that wanted them; one
ten-minute sensor outage and a few EC2 errors are in the middle. Times are loop times, 0 to
`HOURS` hours.
"""

from __future__ import annotations

import math

from controller.messages import (
    ActorStateChanged,
    Decision,
    ErrorKind,
    FleetObserved,
    InstanceDown,
    InstanceId,
    InstanceUp,
    LoadSample,
    LostReason,
    ProviderErrorSeen,
    SensorLost,
    SlaveReady,
    SlaveView,
)

HOURS = 4.0
STEP = 30.0  # seconds between polls
PRICE = 0.035  # $/h per slave
END = HOURS * 3600
ACTORS = ("stats", "firewall_keeper", "spot_pool", "slave_health", "renderfarm_writer", "load")
TABLE = ((0.1, 0, 1), (0.5, 0, 2), (1.0, 1, 3), (2.0, 2, 4))
SENSOR_OUTAGE = (2.0 * 3600, 2.0 * 3600 + 600)


def load_at(t: float) -> float:
    hours = t / 3600
    base = 0.15 + 1.2 * max(0.0, math.sin(math.pi * hours / HOURS))
    spike = 1.6 * math.exp(-(((hours - 1.3) / 0.15) ** 2))
    spike += 1.5 * math.exp(-(((hours - 4.0) / 0.25) ** 2))  # the afternoon rush, going on now
    ripple = 0.1 * math.sin(t / 170.0)
    return max(0.0, base + spike + ripple)


def band_for(rps: float) -> tuple[int, int]:
    band = (0, 0)
    for threshold, low, high in TABLE:
        if rps >= threshold:
            band = (low, high)
    return band


def events(wall_start: float = 1_700_000_000.0) -> list[object]:
    """The messages in publish order; `wall_start` is the epoch of loop time 0 (for `since`)."""
    out: list[object] = [
        ActorStateChanged(at=0.0, actor=name, state="running", restarts=0) for name in ACTORS
    ]
    slaves: dict[str, float] = {}  # instance id -> loop time it became ready
    booting: dict[str, float] = {}  # instance id -> loop time it is ready
    serial = 0
    t = 0.0
    while t <= END:
        outage = SENSOR_OUTAGE[0] <= t < SENSOR_OUTAGE[1]
        rps = load_at(t)
        if outage:
            out.append(SensorLost(at=t, since=SENSOR_OUTAGE[0], reason="connection refused"))
        else:
            out.append(LoadSample(at=t, rps=rps, window_rps=rps))
        band = band_for(rps)
        have = len(slaves) + len(booting)
        desired = have if outage else min(max(band[0], math.ceil(rps / 0.8)), band[1])
        launch = max(0, desired - have)
        remove: tuple[InstanceId, ...] = ()
        if desired < have and slaves and int(t) % 300 == 0:
            remove = (InstanceId(min(slaves)),)
        for _ in range(launch):
            serial += 1
            booting[f"i-{serial:017x}"] = t + 120
        reason = (
            "sensor lost: holding the fleet"
            if outage
            else f"load {rps:.2f} req/s: table band {band[0]}-{band[1]}, target {desired}"
        )
        if launch:
            reason += f"; launch {launch}"
        if remove:
            reason += f"; scale in {remove[0]} after 300 s below"
        out.append(
            Decision(
                at=t + 0.02,
                load_rps=None if outage else rps,
                band=band,
                desired=desired,
                launch=launch,
                remove=remove,
                reason=reason,
            )
        )
        for instance_id in remove:
            del slaves[instance_id]
            out.append(
                InstanceDown(
                    at=t + 0.03,
                    instance_id=instance_id,
                    address=_address(instance_id),
                    reason=LostReason.SCALE_IN,
                )
            )
        for instance_id, ready_at in list(booting.items()):
            if ready_at <= t:
                del booting[instance_id]
                slaves[instance_id] = t
                address = _address(instance_id)
                out.append(InstanceUp(at=t + 0.04, instance_id=instance_id, address=address))
                out.append(SlaveReady(at=t + 0.05, instance_id=instance_id, address=address))
        if int(t) % 3600 == 1800:
            out.append(
                ProviderErrorSeen(
                    at=t + 0.06,
                    kind=ErrorKind.CAPACITY,
                    code="InsufficientInstanceCapacity",
                    message="There is no Spot capacity available that matches your request.",
                    operation="RunInstances",
                )
            )
        views = tuple(
            SlaveView(
                instance_id=InstanceId(i),
                address=_address(i),
                state="ready",
                healthy=True,
                since=wall_start + since,
                instance_type="m5.large",
                zone="us-east-1a",
            )
            for i, since in sorted(slaves.items())
        ) + tuple(
            SlaveView(
                instance_id=InstanceId(i),
                address=_address(i),
                state="booting",
                healthy=False,
                since=wall_start + ready_at - 120,
                instance_type="m5.large",
                zone="us-east-1a",
            )
            for i, ready_at in sorted(booting.items())
        )
        out.append(
            FleetObserved(
                at=t + 0.07,
                members=views,
                pending_requests=len(booting),
                cost_per_hour=PRICE * (len(slaves) + len(booting)),
            )
        )
        t += STEP
    return out


def _address(instance_id: str) -> str:
    return f"10.0.1.{int(instance_id[2:], 16) % 250 + 4}"
