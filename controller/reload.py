"""SIGHUP: re-read the config without touching the fleet.

A new config is taken only when it is valid and changes nothing that names or locates what the
running controller owns (the fleet tag, the region, the endpoint, the renderfarm.conf path, the
slave ports its group and probes are built on, the stats address it listens on). Anything else
(the load table, intervals, timeouts, the policy, the bid, instance types) applies from the next
cycle. A rejected reload leaves the old config in force and says why, one line per key.
"""

from __future__ import annotations

from controller.config import Config

# (section, key) pairs whose change needs a restart: they identify owned resources.
RESTART_ONLY: tuple[tuple[str, str], ...] = (
    ("controller", "fleet"),
    ("slave", "region"),
    ("slave", "ports"),
    ("slave", "security_group"),
    ("slave", "subnet"),
    ("aws", "endpoint_url"),
    ("master", "renderfarm_conf"),
    ("master", "external_ip"),
    ("stats", "listen"),
    ("scaling", "interruption_queue"),
)


def reload_problems(old: Config, new: Config) -> list[str]:
    """Why `new` cannot replace `old` in a running controller; empty when it can."""
    problems = []
    for section, key in RESTART_ONLY:
        before = getattr(getattr(old, section), key)
        after = getattr(getattr(new, section), key)
        if before != after:
            problems.append(
                f"{new.path}: {section}.{key}: changed from {before!r} to {after!r}; "
                "this needs a restart (the running controller keeps its old config)"
            )
    return problems
