"""Elasticity metrics of the SPEC Research Group, as pure functions on timelines.

A timeline is a sequence of segments: demand `d_i` and supply `s_i` held constant for `dt_i`
seconds (unit steps when no durations are given). The definitions are those of

    N. Herbst, R. Krebs, G. Oikonomou, G. Kousiouris, A. Evangelinou, A. Iosup, S. Kounev.
    "Ready for Rain? A View from SPEC Research on the Future of Cloud Metrics".
    SPEC RG Cloud Working Group, Technical Report SPEC-RG-2016-01 (2016), section 3.2;
    and A. Bauer, N. Herbst, S. Spinner, A. Ali-Eldin, S. Kounev. "Chameleon: A Hybrid,
    Proactive Auto-Scaling Mechanism on a Level-Playing Field". IEEE TPDS 30(4), 2019.

with T the total duration and every result in percent:

    under-provisioning accuracy  θ_U = 100/T · Σ (d_i - s_i)⁺ / max(d_i, ε) · dt_i
    over-provisioning accuracy   θ_O = 100/T · Σ (s_i - d_i)⁺ / max(d_i, ε) · dt_i
    under-provisioning timeshare τ_U = 100/T · Σ [d_i > s_i] · dt_i
    over-provisioning timeshare  τ_O = 100/T · Σ [s_i > d_i] · dt_i
    instability                  I   = 100/(T - dt_1) · Σ_{i≥2} min(|sgn Δs_i - sgn Δd_i|, 1) · dt_i

where Δs_i = s_i - s_{i-1}: I is the share of time in which supply and demand do not move the
same way (one changes while the other does not, or they change in opposite directions).
ε keeps the accuracies finite when the demand is zero; it is one instance here, so a zero-demand
step with two instances running counts as 200 % over-provisioned for its duration.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

EPSILON = 1.0  # instances: the floor of the demand in the accuracy denominators


@dataclass(frozen=True, slots=True, kw_only=True)
class ElasticityMetrics:
    theta_u: float  # under-provisioning accuracy, %
    theta_o: float  # over-provisioning accuracy, %
    tau_u: float  # under-provisioning timeshare, %
    tau_o: float  # over-provisioning timeshare, %
    instability: float  # %

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def _durations(n: int, durations: Sequence[float] | None) -> Sequence[float]:
    if durations is None:
        return [1.0] * n
    if len(durations) != n:
        raise ValueError(f"{len(durations)} durations for {n} steps")
    return durations


def _check(demand: Sequence[float], supply: Sequence[float]) -> None:
    if len(demand) != len(supply):
        raise ValueError(f"{len(demand)} demand values but {len(supply)} supply values")


def under_accuracy(
    demand: Sequence[float], supply: Sequence[float], durations: Sequence[float] | None = None
) -> float:
    """θ_U: the average missing share of the demand, in percent."""
    return _time_mean(demand, supply, durations, lambda d, s: max(d - s, 0.0) / max(d, EPSILON))


def over_accuracy(
    demand: Sequence[float], supply: Sequence[float], durations: Sequence[float] | None = None
) -> float:
    """θ_O: the average surplus relative to the demand, in percent."""
    return _time_mean(demand, supply, durations, lambda d, s: max(s - d, 0.0) / max(d, EPSILON))


def under_timeshare(
    demand: Sequence[float], supply: Sequence[float], durations: Sequence[float] | None = None
) -> float:
    """τ_U: the share of time with less supply than demand, in percent."""
    return _time_mean(demand, supply, durations, lambda d, s: float(d > s))


def over_timeshare(
    demand: Sequence[float], supply: Sequence[float], durations: Sequence[float] | None = None
) -> float:
    """τ_O: the share of time with more supply than demand, in percent."""
    return _time_mean(demand, supply, durations, lambda d, s: float(s > d))


def _time_mean(
    demand: Sequence[float],
    supply: Sequence[float],
    durations: Sequence[float] | None,
    value: Callable[[float, float], float],
) -> float:
    """The time-weighted mean of value(demand, supply), in percent."""
    _check(demand, supply)
    dts = _durations(len(demand), durations)
    total = sum(dts)
    if total <= 0:
        return 0.0
    rows = zip(demand, supply, dts, strict=True)
    return 100.0 * sum(value(d, s) * dt for d, s, dt in rows) / total


def _sign(x: float) -> int:
    return (x > 0) - (x < 0)


def instability(
    demand: Sequence[float], supply: Sequence[float], durations: Sequence[float] | None = None
) -> float:
    """Instability: % of the time (after the first step) supply and demand move differently."""
    _check(demand, supply)
    dts = _durations(len(demand), durations)
    total = sum(dts[1:])
    if total <= 0:
        return 0.0
    acc = 0.0
    for i in range(1, len(demand)):
        ds = _sign(supply[i] - supply[i - 1])
        dd = _sign(demand[i] - demand[i - 1])
        if ds != dd:
            acc += dts[i]
    return 100.0 * acc / total


def metrics(
    demand: Sequence[float], supply: Sequence[float], durations: Sequence[float] | None = None
) -> ElasticityMetrics:
    """All five metrics of one timeline."""
    return ElasticityMetrics(
        theta_u=under_accuracy(demand, supply, durations),
        theta_o=over_accuracy(demand, supply, durations),
        tau_u=under_timeshare(demand, supply, durations),
        tau_o=over_timeshare(demand, supply, durations),
        instability=instability(demand, supply, durations),
    )
