"""Baselines to measure our policy against: GBrowse's balancer, StarCluster's, and the oracle.

`gbrowse` and `starcluster` are policies like ours (same `PolicyInput`, same `PolicyDecision`),
reproducing what those tools really do, so `simulate` replays them through the same loop.
`oracle` cannot be one: it needs the future. `oracle_plan` computes it from the whole demand
timeline instead: the physical limit of any policy under the same boot time.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from controller.config.schema import Config
from controller.policy.band import PolicyDecision, PolicyInput, band_for, budget_allows


class GBrowsePolicy:
    """GBrowse 2.55's `gbrowse_aws_balancer.pl` as it behaves (AWS_Balancer.pm).

    Each poll: look the load up in the table; fewer slaves than min -> request all the missing
    ones at once; more than max -> cancel or terminate down to max at once (no dwell). Open spot
    requests count as slaves for as long as they stay open (it never gives up on them), and the
    ones not yet ready are the first to go. With `lifetime_average` the load is what it really
    read, Apache's `ReqPerSec`: the average since the server started, not the current rate.
    An unreadable status page killed the seed, and its exit handler every slave; here a lost
    reading counts as zero load, which removes them all the same.
    """

    name = "gbrowse"
    abandons_requests = False  # open requests count as capacity forever

    def __init__(self, config: Config, *, lifetime_average: bool = False):
        self.rows = config.load_table.rows
        self.max_cost_per_hour = None  # the seed has no budget
        self.lifetime_average = lifetime_average
        if lifetime_average:
            self.name = "gbrowse-lifetime"
        self._area = 0.0
        self._since: float | None = None
        self._last: tuple[float, float] | None = None

    def _load(self, inp: PolicyInput) -> float:
        rps = inp.load_rps or 0.0
        if not self.lifetime_average:
            return rps
        if self._last is None:
            self._since = inp.now - 1.0
            self._area = rps
        else:
            self._area += rps * (inp.now - self._last[0])
        self._last = (inp.now, rps)
        assert self._since is not None
        return self._area / max(inp.now - self._since, 1.0)

    def decide(self, inp: PolicyInput) -> PolicyDecision:
        load = self._load(inp)
        band = band_for(self.rows, load)
        low, high = band
        current = sum(1 for m in inp.members if not m.draining) + inp.pending_requests
        if current < low:
            launch = low - current
            return PolicyDecision(
                band=band,
                desired=low,
                launch=launch,
                remove=(),
                reason=f"load {load:.2f} rps: have {current}, wanted {low}: launch {launch}",
            )
        if current > high:
            # pending (not yet ready) ones go first, then running slaves in its hash order
            members = [m for m in inp.members if not m.draining]
            members.sort(key=lambda m: (m.ready, m.instance_id))
            remove = tuple(m.instance_id for m in members[: current - high])
            return PolicyDecision(
                band=band,
                desired=high,
                launch=0,
                remove=remove,
                reason=f"load {load:.2f} rps: have {current}, wanted {high}: remove {len(remove)}",
            )
        return PolicyDecision(
            band=band,
            desired=current,
            launch=0,
            remove=(),
            reason=f"load {load:.2f} rps: have {current} in [{low},{high}]",
        )


class StarClusterPolicy:
    """StarCluster 0.95's `loadbalance` (balancers/sge) with web load standing in for the queue.

    StarCluster adds a node when jobs are queued beyond the free slots and the oldest queued job
    has waited longer than `wait_time` (at least 300 s), one node per pass, and not within
    `stabilization_time` (180 s) of the last change; it removes idle nodes when nothing is
    queued, after the same stabilisation, never below min_nodes. Here "queued work" is load
    beyond what the ready slaves serve (`load > ready * slave_capacity_rps`), its age is how long
    that has lasted, and a slave is idle when the others could serve the load without it.
    Its `kill_after` rule (keep a node until minute 45 of its paid hour) is dropped: billing is
    per second. min_nodes/max_nodes are 0 and the load table's largest max.
    """

    name = "starcluster"
    abandons_requests = True

    def __init__(
        self,
        config: Config,
        *,
        wait_time: float = 300.0,
        stabilization_time: float = 180.0,
        add_per_pass: int = 1,
    ):
        self.capacity = config.scaling.slave_capacity_rps
        self.max_nodes = max((r.max_instances for r in config.load_table.rows), default=0)
        self.min_nodes = 0
        self.wait_time = max(300.0, wait_time)
        self.stabilization_time = stabilization_time
        self.add_per_pass = add_per_pass
        self.max_cost_per_hour = config.scaling.max_cost_per_hour
        self._queued_since: float | None = None
        self._last_change: float | None = None

    def decide(self, inp: PolicyInput) -> PolicyDecision:
        band = (self.min_nodes, self.max_nodes)
        load = inp.load_rps
        nodes = [m for m in inp.members if not m.draining and not m.interrupted]
        held = len(nodes) + inp.pending_requests
        if load is None:
            return PolicyDecision(
                band=band, desired=held, launch=0, remove=(), reason="no load reading: waiting"
            )
        ready = sum(1 for m in nodes if m.ready)
        served = ready * self.capacity
        stable = self._last_change is None or inp.now - self._last_change >= self.stabilization_time
        if load > served:
            if self._queued_since is None:
                self._queued_since = inp.now
        else:
            self._queued_since = None

        if held < self.min_nodes:
            launch = self.min_nodes - held
        elif (
            self._queued_since is not None
            and inp.now - self._queued_since > self.wait_time
            and stable
            and held < self.max_nodes
        ):
            launch = min(self.add_per_pass, self.max_nodes - held)
        else:
            launch = 0
        launch = budget_allows(inp, launch, self.max_cost_per_hour)
        if launch:
            self._last_change = inp.now
            waited = inp.now - (self._queued_since or inp.now)
            return PolicyDecision(
                band=band,
                desired=held + launch,
                launch=launch,
                remove=(),
                reason=f"load {load:.2f} rps over {ready} ready for {waited:.0f}s: add {launch}",
            )

        remove: tuple[str, ...] = ()
        if self._queued_since is None and stable and held > self.min_nodes:
            needed = math.ceil(round(load / self.capacity, 9)) if self.capacity > 0 else 0
            idle = [m for m in nodes if m.ready]
            spare = min(len(idle) - needed, held - self.min_nodes)
            if spare > 0:
                idle.sort(key=lambda m: (-m.launched_at, m.instance_id))
                remove = tuple(m.instance_id for m in idle[:spare])
                self._last_change = inp.now
        desired = held - len(remove)
        reason = f"load {load:.2f} rps, {ready} ready"
        reason += f": remove {len(remove)} idle" if remove else ": no change"
        return PolicyDecision(band=band, desired=desired, launch=0, remove=remove, reason=reason)


def make_baseline(name: str, config: Config) -> GBrowsePolicy | StarClusterPolicy:
    match name:
        case "gbrowse":
            return GBrowsePolicy(config)
        case "gbrowse-lifetime":
            return GBrowsePolicy(config, lifetime_average=True)
        case "starcluster":
            return StarClusterPolicy(config)
    raise ValueError(f"unknown baseline {name!r}")


# the oracle


@dataclass(frozen=True, slots=True, kw_only=True)
class OracleRun:
    """One instance of the oracle: billed from `launched_at`, serving [ready_at, end)."""

    launched_at: float
    ready_at: float
    end: float


def oracle_plan(
    times: Sequence[float], demand: Sequence[int], end: float, boot_seconds: float
) -> list[OracleRun]:
    """The cheapest fleet whose ready slaves always cover `demand`, knowing the future.

    `demand[i]` holds from `times[i]` to `times[i + 1]` (the last until `end`). Slave k (k = 1,
    2, ...) is needed wherever demand >= k; it is launched exactly `boot_seconds` before each
    such stretch starts and kept through any gap shorter than a boot (stopping and relaunching
    would cost a whole boot, keeping it costs only the gap). So ready equals demand at every
    moment except inside such short gaps, where an idle slave is cheaper than a relaunch; with
    per-second billing and identical slaves no plan that is never short costs less.
    """
    runs: list[OracleRun] = []
    peak = max(demand, default=0)
    bounds = [*times[1:], end]
    for k in range(1, peak + 1):
        start: float | None = None
        stop = 0.0
        for i, d in enumerate(demand):
            if d >= k:
                if start is None:
                    start = times[i]
                elif times[i] - stop >= boot_seconds and stop < times[i]:
                    runs.append(
                        OracleRun(launched_at=start - boot_seconds, ready_at=start, end=stop)
                    )
                    start = times[i]
                stop = bounds[i]
        if start is not None:
            runs.append(OracleRun(launched_at=start - boot_seconds, ready_at=start, end=stop))
    runs.sort(key=lambda r: (r.launched_at, r.end))
    return runs
