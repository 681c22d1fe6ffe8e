"""The policies by name, as `[scaling] policy` and `simulate --policy` give them."""

from __future__ import annotations

from controller.config.schema import Config
from controller.policy.band import BandPolicy, Policy
from controller.policy.baselines import make_baseline
from controller.policy.forecasting import ForecastPolicy

POLICY_NAMES = ("ours", "table", "gbrowse", "gbrowse-lifetime", "starcluster")


def make_policy(name: str, config: Config) -> Policy:
    """The policy called `name`: ours | table | gbrowse | gbrowse-lifetime | starcluster."""
    match name:
        case "ours":
            return ForecastPolicy(config)
        case "table":
            return BandPolicy(config)
        case "gbrowse" | "gbrowse-lifetime" | "starcluster":
            return make_baseline(name, config)
    raise ValueError(f"unknown policy {name!r}: choose one of {', '.join(POLICY_NAMES)}")
