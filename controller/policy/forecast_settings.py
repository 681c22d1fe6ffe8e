"""The forecasting policy's tuning values, each with the reason for its default.

The defaults were chosen with `bench/policy.py` on the shared traces (WorldCup, Twitter, SDSC).
They are not in the config file: a site tunes the load table, `slave_capacity_rps` and the dwell
instead. Tests pass other settings to see what one value does.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class ForecastSettings:
    """ForecastPolicy's tuning (controller.policy.forecasting says how each value is used)."""

    # The level: the most of the last poll's rate, the window's rate and these.
    hold_seconds: float = 0.0  # also the highest rate of this span; 0: the learnt headroom
    # already covers a dip
    trend_seconds: float = 0.0  # extrapolate the linear trend of this span over the lead; 0:
    # on the shared traces a sudden jump fits as a steep slope and over-launches

    # The global headroom: a quantile of the lead-ahead excesses, steered by the service goal.
    error_seconds: float = 24 * 3600.0  # excesses kept this long: a whole day's swings
    under_target: float = 0.0037  # the share of polls short of ready slaves the steering aims
    # at: well under the 2 % tau_U goal, as tau_U also counts the shortfalls (boots, surges no
    # headroom covers) the steering leaves out
    quantile: float = 0.9  # where the steering starts: nine leads in ten covered
    quantile_min: float = 0.5  # never below the median excess: half the leads short
    quantile_max: float = 0.975  # never above: the last excesses are surges that no global
    # headroom covers, and chasing them would over-provision every hour
    quantile_gain: float = 0.002  # the step per poll: a surge of a few polls moves a day's
    # headroom a little; a shortfall that persists reaches quantile_max in about 40 polls
    initial_headroom: float = 0.2  # headroom, as a share of the level, until errors are known

    # Scale-in of a surplus inside the band.
    shrink_after: float | None = None  # None: two polls. Surges on the shared traces end as
    # abruptly as they start; a slave the forecast asked for and the load did not confirm
    # should not wait a whole boot
    decline_polls: int = 3  # a load that fell at each of this many polls sheds its surplus at
    # once: a surge's decay (0: never)
    decay_seconds: float = 1200.0  # within this of a surge's start, a falling load is taken as
    # it is, without the window (which would hold the surge's past for another window)

    # Seasonal headroom: excesses filed by phase of each period.
    season_seconds: tuple[float, ...] = (86400.0,)  # periods: a day (traffic's daily rhythm)
    season_periods: int = 7  # the last seven periods (a week of days) are looked at
    season_rank: int = 3  # the 3rd largest excess of those periods applies: an excess that
    # recurred applies, and a phase where it came once costs nothing
    season_width: int = 1  # this phase and the next one (a poll each): an excess that comes
    # a poll later than it used to still counts

    # Other forecasters, chosen where they would have cost less for the same cover.
    smooth_seconds: tuple[float, ...] = (900.0,)  # exponential means of the load over these
    # (15 min): a small site's minutes are counting noise around a slow mean
    error_scales: tuple[str, ...] = ("relative", "sqrt")  # errors relative to the level (big
    # sites' swings) or to its square root (counting noise)
    switch_margin: float = 0.1  # another forecaster takes over only when 10 % cheaper for the
    # same cover, so near-equal forecasters do not take turns
    warmup_samples: int = 120  # errors needed before a book is trusted: an hour of polls
    warmup_headroom: float = 1.0  # headroom, as a share of the level, until then: too few
    # errors say nothing yet of the noise

    # Surges that come back at a fixed minute (controller.policy.surge_forecast).
    surge_min_rise: float = 3.0  # a surge is a jump of at least this many slaves' worth (the
    # rest of what makes one is SurgeForecaster's)
    surge_shed: bool = True  # a forecast surge that did not come sheds its slaves at once: a
    # false alarm costs one lead of slaves, not a dwell more
