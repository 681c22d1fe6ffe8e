"""A few hours of a batch cluster's bus traffic, for the status page in cluster mode.

Jobs come in bursts; the policy wants one node per 4 waiting jobs plus the busy ones, up to
MAX_NODES; a node boots for BOOT seconds (then InstanceUp: its setup begins), is set up in SETUP
seconds (NodeReady), and leaves when it is no longer wanted. One qstat outage sits in the middle.
Times are loop times, 0 to END.
"""

from __future__ import annotations

import math

from controller.messages import (
    ActorStateChanged,
    Decision,
    FleetObserved,
    InstanceDown,
    InstanceId,
    InstanceUp,
    LostReason,
    NodeReady,
    QueueSample,
    Role,
    SensorLost,
    SlaveView,
)

END = 3 * 3600.0
STEP = 60.0
BOOT, SETUP = 120.0, 120.0
MAX_NODES = 6
PRICE = 0.1
ACTORS = ("stats", "firewall_keeper", "cluster_node_setup", "node_pool", "queue_sampler")
OUTAGE = (1.5 * 3600, 1.5 * 3600 + 300)


def pending_at(t: float) -> int:
    hours = t / 3600
    first = 14 * math.exp(-(((hours - 0.7) / 0.2) ** 2))
    second = 20 * math.exp(-(((hours - 2.8) / 0.3) ** 2))  # still coming in at the end
    return round(first + second)


def events(wall_start: float = 1_700_000_000.0) -> list[object]:
    """The messages in publish order; `wall_start` is the epoch of loop time 0."""
    out: list[object] = [
        ActorStateChanged(at=0.0, actor=name, state="running", restarts=0) for name in ACTORS
    ]
    nodes: dict[InstanceId, float] = {}  # -> launch time
    serial = 0
    t = 0.0
    while t <= END:
        pending = pending_at(t)
        ready = [i for i, at in nodes.items() if t - at >= BOOT + SETUP]
        running = min(len(ready) * 2, pending + len(ready))
        lost = OUTAGE[0] <= t < OUTAGE[1]
        if lost:
            out.append(SensorLost(at=t, since=OUTAGE[0], reason="`qstat` timed out", source="sge"))
        else:
            out.append(
                QueueSample(
                    at=t,
                    pending_jobs=pending,
                    pending_slots=pending,
                    running_jobs=running,
                    oldest_pending_seconds=90.0 if pending else 0.0,
                )
            )
        desired = min(MAX_NODES, math.ceil(pending / 4) + (running + 1) // 2)
        launch = max(0, desired - len(nodes))
        remove = [i for i in sorted(nodes, key=nodes.get)][: max(0, len(nodes) - desired)]
        for _ in range(launch):
            serial += 1
            nodes[InstanceId(f"i-{serial:017x}")] = t
        for instance_id in remove:
            del nodes[instance_id]
            out.append(
                InstanceDown(at=t, instance_id=instance_id, address="", reason=LostReason.SCALE_IN)
            )
        out.append(
            Decision(
                at=t,
                load_rps=None if lost else float(pending),
                band=(0, MAX_NODES),
                desired=desired,
                launch=launch,
                remove=tuple(remove),
                reason=f"{pending} pending slots: want {desired} in [0, {MAX_NODES}]",
            )
        )
        views = []
        for instance_id, at in nodes.items():
            address = f"127.0.20.{int(instance_id[-2:], 16) % 250 + 1}"
            age = t - at
            if age >= BOOT and age - STEP < BOOT:
                out.append(
                    InstanceUp(at=t, instance_id=instance_id, address=address, role=Role.NODE)
                )
            if age >= BOOT + SETUP and age - STEP < BOOT + SETUP:
                hostname = "ip-" + address.replace(".", "-")
                out.append(
                    NodeReady(at=t, instance_id=instance_id, address=address, hostname=hostname)
                )
            views.append(
                SlaveView(
                    instance_id=instance_id,
                    address=address,
                    state="ready" if age >= BOOT + SETUP else "booting",
                    healthy=age >= BOOT + SETUP,
                    since=wall_start + at,
                    instance_type="m5.xlarge",
                )
            )
        out.append(
            FleetObserved(
                at=t, members=tuple(views), pending_requests=0, cost_per_hour=PRICE * len(nodes)
            )
        )
        t += STEP
    return out
