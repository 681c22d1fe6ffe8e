"""SIGHUP: re-read the config without touching the fleet.

A new config is taken only when it is valid and changes nothing that names or locates what the
running controller owns (the fleet tag, the region, the EC2 and SQS endpoints, renderfarm.conf, the
slave ports its group and probes are built on, the stats address it listens on). Anything else
(the load table, intervals, timeouts, the policy, the bid, instance types) applies from the next
cycle. A rejected reload leaves the old config in force and says why, one line per key.

A batch cluster's tuning keys (min_nodes, max_nodes, idle_seconds, node_slots, spot_bid,
node_instance_types, image_id) reload too; what its running nodes were set up with, and the
group and address they are reached on, needs a restart: checked for every cluster of the file,
since the running one is not known here, together with the [volume.X] and [plugin.X] sections it
uses. A cluster taken out of the file needs a restart as well.
"""

from __future__ import annotations

import json

from controller.config.schema import ClusterSection, Config

# (section, key) pairs whose change needs a restart: they identify owned resources.
RESTART_ONLY: tuple[tuple[str, str], ...] = (
    ("controller", "fleet"),
    ("slave", "region"),
    ("slave", "ports"),
    ("slave", "security_group"),
    ("slave", "subnet"),
    ("aws", "endpoint_url"),
    ("aws", "sqs_endpoint_url"),
    ("master", "renderfarm_conf"),
    ("master", "external_ip"),
    ("stats", "listen"),
    ("scaling", "interruption_queue"),
)

# [cluster.NAME] keys whose change needs a restart: how nodes are reached, set up and registered.
CLUSTER_RESTART_ONLY: tuple[str, ...] = (
    "load_source",
    "subnet",
    "cluster_user",
    "ssh_key_file",
    "ssh_port",
    "volumes",
    "plugins",
)

RESTART = "this needs a restart (the running controller keeps its old config)"


def as_toml(value: object) -> str:
    """A setting as the user wrote it in the config: `[8101]`, `"m5.large"`, `true`."""
    if isinstance(value, tuple | list):
        return "[" + ", ".join(as_toml(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    return repr(value)


def reload_problems(old: Config, new: Config) -> list[str]:
    """Why `new` cannot replace `old` in a running controller; empty when it can."""
    problems = []
    for section, key in RESTART_ONLY:
        before = getattr(getattr(old, section), key)
        after = getattr(getattr(new, section), key)
        if before != after:
            problems.append(
                f"{new.path}: {section}.{key}: changed from {as_toml(before)} to "
                f"{as_toml(after)}; {RESTART}"
            )
    new_clusters = {c.name: c for c in new.clusters}
    for cluster in old.clusters:
        if cluster.name not in new_clusters:
            problems.append(f"{new.path}: cluster.{cluster.name}: removed; {RESTART}")
            continue
        problems += _cluster_problems(old, new, cluster, new_clusters[cluster.name])
    return problems


def _cluster_problems(
    old: Config, new: Config, before: ClusterSection, after: ClusterSection
) -> list[str]:
    where = f"{new.path}: cluster.{before.name}"
    problems = [
        f"{where}.{key}: changed from {as_toml(getattr(before, key))} to "
        f"{as_toml(getattr(after, key))}; "
        f"{RESTART}"
        for key in CLUSTER_RESTART_ONLY
        if getattr(before, key) != getattr(after, key)
    ]
    for kind, sections in (("volume", "volumes"), ("plugin", "plugins")):
        was = {s.name: s for s in getattr(old, sections)}
        now = {s.name: s for s in getattr(new, sections)}
        for name in getattr(before, sections):
            if was.get(name) != now.get(name):
                problems.append(
                    f"{new.path}: {kind}.{name} (used by cluster.{before.name}): changed; {RESTART}"
                )
    return problems
