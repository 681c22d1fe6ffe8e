"""The readers of the fixed sections ([controller], [master], [load_table], [scaling], [slave],
[aws], [stats], [sync], [simulate]): which keys each has and what each key accepts."""

from __future__ import annotations

import math
import shlex
from collections.abc import Callable
from dataclasses import fields
from typing import Any

from controller.config import checks
from controller.config.checks import is_int, is_number, kind_of
from controller.config.schema import (
    AwsSection,
    ControllerSection,
    LoadRow,
    LoadTableSection,
    MasterSection,
    ScalingSection,
    SimulateSection,
    SlaveSection,
    StatsSection,
    SyncSection,
)
from controller.config.table import Table

_ON_EXIT = ("teardown", "leave")
_POLICIES = ("ours", "table", "gbrowse", "starcluster")
_RETRY_MODES = ("standard", "adaptive", "legacy")


def _read_controller(t: Table) -> ControllerSection:
    t.text("fleet", check=checks.tag_safe)
    t.text("on_exit", choices=_ON_EXIT)
    t.finish()
    return ControllerSection(**t.values)


def _read_master(t: Table) -> MasterSection:
    t.text("server_status_url", check=checks.http_url)
    t.number("poll_interval", above=0)
    t.number("sample_interval", above=0)
    t.text("external_ip", check=checks.ip_or_empty)
    t.text("external_ip_lookup_url", check=checks.http_url_or_empty)
    t.text("renderfarm_conf", check=checks.nonempty)
    command = t.get("reload_command")
    if isinstance(command, str):
        try:
            t.values["reload_command"] = tuple(shlex.split(command))
        except ValueError as exc:
            t.problem("reload_command", f"cannot split into words: {exc}")
    elif command is not None:
        t.texts("reload_command")
    t.number("window_seconds", above=0)
    t.number("status_timeout", above=0)
    t.finish()
    return MasterSection(**t.values)


def _read_load_table(t: Table) -> LoadTableSection:
    rows = t.get("rows")
    t.finish()
    if rows is None:
        return LoadTableSection()
    if not isinstance(rows, list):
        t.problem("rows", f"expected an array of [rps, min, max] rows, got {kind_of(rows)}")
        return LoadTableSection()
    if not rows:
        t.problem("rows", "must have at least one [rps, min, max] row")
    parsed: list[LoadRow] = []
    previous: float | None = None
    for i, row in enumerate(rows):
        if not isinstance(row, list) or len(row) != 3:
            t.problem("rows", "expected [requests/sec, min instances, max instances]", index=i)
            continue
        rps, low, high = row
        if not is_number(rps) or not is_int(low) or not is_int(high):
            kinds = ", ".join(kind_of(v) for v in row)
            t.problem("rows", f"expected [number, integer, integer], got [{kinds}]", index=i)
            continue
        if not math.isfinite(rps) or rps < 0:
            t.problem("rows", f"requests/sec must be a finite number >= 0 (got {rps})", index=i)
        elif previous is not None and rps <= previous:
            t.problem("rows", f"thresholds must increase ({float(rps)} after {previous})", index=i)
        if low < 0:
            t.problem("rows", f"min instances must be >= 0 (got {low})", index=i)
        if low > high:
            t.problem("rows", f"min instances ({low}) is above max instances ({high})", index=i)
        previous = float(rps)
        parsed.append(LoadRow(rps=float(rps), min_instances=low, max_instances=high))
    return LoadTableSection(rows=tuple(parsed))


# Keys that moved from [simulate] to [scaling] (the daemon's policy uses them, not only the
# simulator), with the bounds they are checked against in either place.
MOVED_TO_SCALING: dict[str, dict[str, float]] = {
    "slave_capacity_rps": {"above": 0},
    "boot_seconds": {"least": 0},
}


def _read_scaling(t: Table) -> ScalingSection:
    t.text("policy", choices=_POLICIES)
    t.number("scale_in_after", least=0)
    t.number("drain_seconds", least=0)
    t.number("request_timeout", above=0)
    t.text("interruption_queue", check=checks.http_url_or_empty)
    t.number("capacity_cooldown", least=0)
    t.number("max_cost_per_hour", above=0)
    t.number("probe_timeout", above=0)
    for key, bounds in MOVED_TO_SCALING.items():
        t.number(key, **bounds)
    t.finish()
    return ScalingSection(**t.values)


def move_to_scaling(
    scaling: object, simulate: object, problems: list[tuple[str, str]]
) -> tuple[object, object, str | None]:
    """The raw [scaling] and [simulate] tables with MOVED_TO_SCALING's keys taken out of
    [simulate] and, where [scaling] does not set them, put there; plus one note saying to move
    them (None when [simulate] holds none). A value checked here is reported as simulate.KEY."""
    if not isinstance(simulate, dict) or not any(key in simulate for key in MOVED_TO_SCALING):
        return scaling, simulate, None
    simulate = dict(simulate)
    moved = {key: simulate.pop(key) for key in MOVED_TO_SCALING if key in simulate}
    old = Table(moved, "simulate", problems)
    new = {} if scaling is None else dict(scaling) if isinstance(scaling, dict) else scaling
    found, conflicts = [], []
    for key, bounds in MOVED_TO_SCALING.items():
        old.number(key, **bounds)
        if key not in old.values:  # not set there, or wrong (reported)
            continue
        found.append(key)
        if not isinstance(new, dict):  # [scaling] is not a table: reported by its reader
            continue
        if key not in new:
            new[key] = old.values[key]
        elif new[key] != old.values[key]:
            conflicts.append(
                f"simulate.{key} = {moved[key]!r} differs from scaling.{key} = {new[key]!r}: "
                "[scaling]'s is used"
            )
    if not found:
        return scaling, simulate, None
    note = (
        f"move {' and '.join(found)} to [scaling], where the daemon's policy reads "
        f"{'them' if len(found) > 1 else 'it'} "
        "([simulate] is still read for now)"
    )
    return new, simulate, "; ".join([note, *conflicts])


def read_instance_types(t: Table, single: str) -> None:
    """`single` (one type) or `single + "s"` (a list tried in order), folded into the list."""
    many = single + "s"
    if t.get(single) is not None and t.get(many) is not None:
        t.problem(single, f"set {single} or {many}, not both")
    elif t.get(single) is not None:
        t.text(single, check=checks.instance_type)
        if single in t.values:
            t.values[many] = (t.values.pop(single),)
    else:
        t.texts(many, nonempty=True, unique=True, check=checks.instance_type)


def _read_slave(t: Table) -> SlaveSection:
    read_instance_types(t, "instance_type")
    t.number("spot_bid", above=0)
    t.ports("ports")
    t.text("region", check=checks.region_or_empty)  # "": the master's, on EC2
    t.text("image_id", check=checks.prefixed_or_empty("ami-"))
    t.texts("data_snapshots", unique=True, check=checks.prefixed("snap-"))
    t.text("availability_zone")
    t.text("subnet", check=checks.prefixed_or_empty("subnet-"))
    t.text("security_group")
    t.text("ssh_key")
    t.text("user_data")
    t.finish()
    return SlaveSection(**t.values)


def _read_aws(t: Table) -> AwsSection:
    t.text("endpoint_url", check=checks.http_url_or_empty)
    t.text("sqs_endpoint_url", check=checks.http_url_or_empty)
    t.text("retry_mode", choices=_RETRY_MODES)
    t.integer("max_attempts", least=1)
    t.number("call_timeout", above=0)
    t.finish()
    return AwsSection(**t.values)


def _read_stats(t: Table) -> StatsSection:
    t.text("listen", check=checks.listen)
    t.text("token")
    t.text("token_file")
    if t.values.get("token") and t.values.get("token_file"):
        t.problem("token", "set token or token_file, not both")
    listen = t.values.get("listen")
    guarded = t.values.get("token") or t.values.get("token_file")
    if listen and not guarded and not checks.loopback_listen(listen):
        t.problem(
            "listen",
            f"{listen!r} is reachable from other hosts and /status names the fleet's addresses: "
            "set token or token_file, or listen on 127.0.0.1",
        )
    t.finish()
    return StatsSection(**t.values)


def _read_sync(t: Table) -> SyncSection:
    t.text("ssh_user", check=checks.nonempty)
    t.text("ssh_key_file")
    t.integer("ssh_port", least=1, most=65535)
    t.text("staging_instance_type", check=checks.instance_type)
    t.finish()
    return SyncSection(**t.values)


def _read_simulate(t: Table) -> SimulateSection:
    t.number("boot_spread", least=0, most=1)
    t.number("spot_price", least=0)
    t.number("unfilled_rate", least=0, most=1)
    t.number("capacity_error_rate", least=0, most=1)
    t.number("interruption_rate_per_hour", least=0)
    t.finish()
    return SimulateSection(**t.values)


SECTION_READERS: dict[str, Callable[[Table], Any]] = {
    "controller": _read_controller,
    "master": _read_master,
    "load_table": _read_load_table,
    "scaling": _read_scaling,
    "slave": _read_slave,
    "aws": _read_aws,
    "stats": _read_stats,
    "sync": _read_sync,
    "simulate": _read_simulate,
}


def section_hint(key: str) -> str | None:
    """For a key written above every section header: name the section it belongs in."""
    for name, cls in _SECTION_CLASSES.items():
        if key in {f.name for f in fields(cls)}:
            return f"it belongs in [{name}]"
    return None


_SECTION_CLASSES = {
    "controller": ControllerSection,
    "master": MasterSection,
    "scaling": ScalingSection,
    "slave": SlaveSection,
    "aws": AwsSection,
    "stats": StatsSection,
    "simulate": SimulateSection,
    "sync": SyncSection,
}
