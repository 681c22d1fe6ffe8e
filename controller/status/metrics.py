"""Prometheus metrics, read from the FleetState at scrape time.

Gauges and counters are not kept twice: a collector builds them from the FleetState whenever
/metrics is scraped, so they can never disagree with /status. Only the decision latency needs
its own accumulation (a Histogram). Each `Metrics` owns a fresh CollectorRegistry, never the
process-global one, so several apps (tests) can live in one process.

decision_latency_seconds: there is no latency field on Decision, so Stats observes, for every
Decision that read a load sample, the time from that LoadSample's (a cluster's QueueSample's)
`at` to the Decision's `at` (both loop time). Other callers may call
`observe_decision_latency` directly.

A batch cluster (`run --cluster`) adds its queue, from the latest QueueSample
(controller_queue_pending_jobs, _pending_slots, _running_jobs, _oldest_pending_seconds), and
controller_nodes{state} (booting, setting_up, ready, draining); the render farm has neither.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import (
    CollectorRegistry,
    Gauge,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from controller import __version__
from controller.status.fleetstate import FleetState

PREFIX = "controller_"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class Metrics:
    def __init__(
        self,
        state: FleetState,
        clock: Callable[[], float],
        max_cost_per_hour: Callable[[], float | None] = lambda: None,
    ) -> None:
        """`max_cost_per_hour`: the budget cap in force (read at each scrape, so a SIGHUP that
        changes it shows), for the alert that the fleet is at its cap."""
        self.registry = CollectorRegistry()
        self.registry.register(_StateCollector(state, clock))
        Gauge(
            f"{PREFIX}max_cost_per_hour",
            "The budget cap ([scaling] max_cost_per_hour), dollars per hour; NaN without one.",
            registry=self.registry,
        ).set_function(lambda: _or_nan(max_cost_per_hour()))
        # the process's CPU, memory and open files, and which build is running
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        Info(f"{PREFIX}build", "The running controller's version.", registry=self.registry).info(
            {"version": __version__}
        )
        self.decision_latency = Histogram(
            f"{PREFIX}decision_latency_seconds",
            "Seconds from the load (or queue) sample a decision read to the decision.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )

    def observe_decision_latency(self, seconds: float) -> None:
        self.decision_latency.observe(max(0.0, seconds))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _StateCollector(Collector):
    def __init__(self, state: FleetState, clock: Callable[[], float]) -> None:
        self._state = state
        self._clock = clock

    def describe(self) -> list[Metric]:
        return []  # unknown until collected: names are checked at collect time instead

    def collect(self) -> Iterator[Metric]:
        s = self._state
        band_min, band_max = s.band if s.band is not None else (None, None)
        yield _gauge("load_rps", "Latest measured load (requests/sec).", s.load)
        yield _gauge("band_min", "Minimum slaves (nodes) the load table asks for.", band_min)
        yield _gauge("band_max", "Maximum slaves (nodes) the load table allows.", band_max)
        yield _gauge("desired", "Slaves (nodes) the policy wants.", s.desired)
        yield _gauge("ready", "Slaves that pass the readiness probe (nodes set up).", s.ready)
        yield _gauge(
            "pending",
            "Launches asked for that are not instances yet (open spot requests).",
            s.pending_requests,
        )
        yield _gauge("cost_per_hour", "Fleet cost in dollars per hour.", s.cost_per_hour)
        yield _gauge(
            "sensor_ok",
            "1 while the load source (mod_status, or the batch queue's qstat or squeue) answers.",
            int(s.sensor_ok),
        )
        yield _counter("spend_dollars", "Dollars spent since start.", s.spend(self._clock()))
        yield _counter("launches", "Instances that came up (launched or adopted).", s.launches)
        yield _counter("terminations", "Instances that left the fleet.", s.terminations)
        yield _counter(
            "interruptions", "Instances spot reclaimed or warned about.", s.interruptions
        )

        errors = CounterMetricFamily(f"{PREFIX}ec2_errors", "EC2 errors by kind.", labels=["kind"])
        for kind, count in sorted(s.ec2_errors.items()):
            errors.add_metric([kind], count)
        yield errors

        restarts = CounterMetricFamily(
            f"{PREFIX}actor_restarts", "Actor restarts after a crash.", labels=["actor"]
        )
        running = GaugeMetricFamily(
            f"{PREFIX}actor_running", "1 while the actor runs.", labels=["actor"]
        )
        for name, status in sorted(s.actors.items()):
            restarts.add_metric([name], s.actor_restarts_total[name])
            running.add_metric([name], int(status.state == "running"))
        yield restarts
        yield running
        if s.cluster:
            yield from _queue_metrics(s)


def _queue_metrics(s: FleetState) -> Iterator[Metric]:
    """A batch cluster's queue (the latest sample; NaN before the first) and its nodes."""
    q = s.queue
    yield _gauge(
        "queue_pending_jobs",
        "Jobs waiting for a node (held and error jobs not counted).",
        None if q is None else q.pending_jobs,
    )
    yield _gauge(
        "queue_pending_slots",
        "Slots the waiting jobs ask for.",
        None if q is None else q.pending_slots,
    )
    yield _gauge("queue_running_jobs", "Jobs running.", None if q is None else q.running_jobs)
    yield _gauge(
        "queue_oldest_pending_seconds",
        "How long the oldest waiting job has waited, at the latest sample.",
        None if q is None else q.oldest_pending_seconds,
    )
    nodes = GaugeMetricFamily(
        f"{PREFIX}nodes",
        "Nodes by state: booting, setting_up (volumes, plugins, registration), ready, draining.",
        labels=["state"],
    )
    for state, count in s.node_counts().items():
        nodes.add_metric([state], count)
    yield nodes


def _gauge(name: str, doc: str, value: float | None) -> GaugeMetricFamily:
    family = GaugeMetricFamily(f"{PREFIX}{name}", doc)
    family.add_metric([], float("nan") if value is None else value)
    return family


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(f"{PREFIX}{name}", doc, value=value)


def _or_nan(value: float | None) -> float:
    return float("nan") if value is None else value
