"""Reading a config: TOML into controller.config.schema's frozen dataclasses, every key checked.

`load_config(path)` / `parse_config(data, path)` check every key and collect every problem before
raising one `ConfigError` (one `FILE: key.path: reason` line each); a config that works but
should change (a key in its old place) gets a line in `Config.notes` instead. The fixed sections
are read by controller.config.sections; the named tables ([volume.X], [plugin.X], [cluster.X],
with `extends`) here; each cluster's plugin options by controller.config.plugins.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

from controller.config import checks
from controller.config.checks import (
    CREDENTIALS_REASON,
    TAG_SAFE,
    TAG_SAFE_REASON,
    alternatives,
    is_credential_key,
    is_number,
    join,
    kind_of,
    suggest,
)
from controller.config.plugins import KNOWN_PLUGIN_KINDS, PluginError, cluster_plugins
from controller.config.schema import ClusterSection, Config, PluginSection, VolumeSection
from controller.config.sections import (
    SECTION_READERS,
    move_to_scaling,
    read_instance_types,
    section_hint,
)
from controller.config.table import Table

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11: tomli is the same parser
    import tomli as tomllib

_LOAD_SOURCES = ("sge", "slurm")


def _load_source_problem(value: str) -> str | None:
    if value in _LOAD_SOURCES:
        return None
    return f"must be one of {alternatives(_LOAD_SOURCES)} (got {value!r})"


class ConfigError(Exception):
    """A config that cannot be used; `errors` holds one `FILE: key.path: reason` line each.

    `problems` keeps the same findings as (key path, reason) pairs for callers that map them
    back to another source (import-conf maps them to lines of aws_balancer.conf).
    """

    def __init__(self, errors: Sequence[str], problems: Sequence[tuple[str, str]] = ()):
        self.errors: tuple[str, ...] = tuple(errors)
        self.problems: tuple[tuple[str, str], ...] = tuple(problems)
        super().__init__("\n".join(self.errors))


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate a TOML config file; raise ConfigError naming the file on any problem."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read the config: {exc.strerror or exc}"]) from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        msg = f"{path}: not UTF-8 text (line {line}); TOML files must be UTF-8"
        raise ConfigError([msg]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path}: invalid TOML: {exc}"]) from None
    except ValueError:  # tomllib lets int()'s limit of 4300 digits through
        raise ConfigError([f"{path}: invalid TOML: a number with too many digits"]) from None
    except RecursionError:  # tomllib recurses into nested arrays and inline tables
        raise ConfigError([f"{path}: invalid TOML: arrays or tables nested too deeply"]) from None
    config = parse_config(data, path)
    problems = _plugin_problems(config.clusters, config.plugins)
    if problems:
        raise ConfigError([f"{path}: {key}: {reason}" for key, reason in problems], problems)
    return config


def parse_config(data: Mapping[str, Any], path: str) -> Config:
    """Turn parsed TOML into a Config, collecting every problem before raising ConfigError."""
    problems = _huge_integers(data, "")
    if problems:  # TOML integers are 64-bit; tomllib reads any size, which no reader expects
        raise ConfigError([f"{path}: {key}: {reason}" for key, reason in problems], problems)
    top = Table(data, "", problems)
    tables = {name: top.get(name) for name in (*SECTION_READERS, "volume", "plugin", "cluster")}
    top.finish(hint=section_hint)
    tables["scaling"], tables["simulate"], note = move_to_scaling(
        tables["scaling"], tables["simulate"], problems
    )
    sections = {
        name: read(Table(tables[name], name, problems)) for name, read in SECTION_READERS.items()
    }
    volumes = _read_volumes(tables["volume"], problems)
    plugins = _read_plugins(tables["plugin"], problems)
    clusters = _read_clusters(
        tables["cluster"], {v.name for v in volumes}, {p.name for p in plugins}, problems
    )
    if problems:
        raise ConfigError([f"{path}: {key}: {reason}" for key, reason in problems], problems)
    return Config(
        path=path,
        clusters=clusters,
        volumes=tuple(volumes),
        plugins=tuple(plugins),
        notes=(f"{path}: simulate: {note}",) if note else (),
        **sections,
    )


def _huge_integers(value: object, keypath: str) -> list[tuple[str, str]]:
    """Integers outside TOML's 64-bit range, anywhere in `value`."""
    if isinstance(value, int) and not -(2**63) <= value < 2**63:
        return [(keypath, "integer out of range: TOML integers are 64-bit (-2**63 .. 2**63-1)")]
    if isinstance(value, Mapping):
        items = [(_subkey(keypath, str(key)), item) for key, item in value.items()]
    elif isinstance(value, list):
        items = [(f"{keypath}[{i}]", item) for i, item in enumerate(value)]
    else:
        return []
    return [problem for key, item in items for problem in _huge_integers(item, key)]


def _subkey(keypath: str, key: str) -> str:
    return f"{keypath}.{join(key)}" if keypath else join(key)


def _plugin_problems(
    clusters: Sequence[ClusterSection], plugins: tuple[PluginSection, ...]
) -> list[tuple[str, str]]:
    """Each cluster's plugins parsed as `run --cluster` will, so that check-config and run catch
    bad plugin options (controller.config.plugins reads them). A file-level check: parse_config
    leaves plugin options to their reader."""
    config = Config(plugins=plugins)
    found: list[tuple[str, str]] = []
    for cluster in clusters:
        try:
            cluster_plugins(config, cluster)
        except PluginError as exc:
            for line in str(exc).splitlines():
                key, _, reason = line.partition(": ")
                if (key, reason) not in found:
                    found.append((key, reason))
    return found


def _named_tables(data: object, kind: str, problems: list[tuple[str, str]]) -> dict[str, Any]:
    """The [kind.NAME] tables, by name; anything else under `kind` is reported."""
    if data is None:
        return {}
    if not isinstance(data, dict):
        problems.append((kind, f"expected [{kind}.NAME] tables, got {kind_of(data)}"))
        return {}
    named = {}
    for name, body in data.items():
        if not isinstance(body, dict):
            problems.append(
                (join(kind, name), f"expected a [{kind}.NAME] table, got {kind_of(body)}")
            )
        elif not TAG_SAFE.fullmatch(name):
            problems.append((join(kind, name), f"the name {TAG_SAFE_REASON}"))
        else:
            named[name] = body
    return named


def _read_volumes(data: object, problems: list[tuple[str, str]]) -> list[VolumeSection]:
    volumes = []
    for name, body in _named_tables(data, "volume", problems).items():
        t = Table(body, join("volume", name), problems)
        t.text("snapshot_id", check=checks.prefixed("snap-"))
        t.text("volume_id", check=checks.prefixed("vol-"))
        t.text("mount_path", check=checks.absolute_path)
        t.finish()
        if t.get("snapshot_id") is not None and t.get("volume_id") is not None:
            problems.append((t.keypath, "set snapshot_id or volume_id, not both"))
        elif t.get("snapshot_id") is None and t.get("volume_id") is None:
            problems.append((t.keypath, "needs snapshot_id (a copy per node) or volume_id"))
        if t.get("mount_path") is None:
            t.problem("mount_path", "required: the absolute path where the volume is mounted")
        volumes.append(VolumeSection(name=name, **t.values))
    return volumes


def _read_plugins(data: object, problems: list[tuple[str, str]]) -> list[PluginSection]:
    plugins = []
    for name, body in _named_tables(data, "plugin", problems).items():
        t = Table(body, join("plugin", name), problems)
        t.text("kind", choices=KNOWN_PLUGIN_KINDS)
        if t.get("kind") is None:
            t.problem("kind", f"required: one of {alternatives(KNOWN_PLUGIN_KINDS)}")
        options = []
        for key, value in body.items():
            if key == "kind":
                continue
            if is_credential_key(key):
                t.problem(key, CREDENTIALS_REASON)
            elif (frozen := _option_value(value)) is None:
                t.problem(key, f"expected a string, number, boolean or array, got {kind_of(value)}")
            else:
                options.append((key, frozen))
        plugins.append(
            PluginSection(name=name, kind=t.values.get("kind", ""), options=tuple(options))
        )
    return plugins


def _option_value(value: object) -> object | None:
    """A plugin option as an immutable value (arrays become tuples); None if unsupported."""
    if isinstance(value, (str, bool, int)) or (is_number(value) and math.isfinite(value)):
        return value
    if isinstance(value, list):
        items = [_option_value(v) for v in value]
        if all(v is not None and not isinstance(v, tuple) for v in items):
            return tuple(items)
    return None


def _read_clusters(
    data: object, volumes: set[str], plugins: set[str], problems: list[tuple[str, str]]
) -> tuple[ClusterSection, ...]:
    """Each [cluster.X]: its own keys checked where written, then `extends` merged in."""
    own: dict[str, dict[str, Any]] = {}
    for name, body in _named_tables(data, "cluster", problems).items():
        t = Table(body, join("cluster", name), problems)
        _read_cluster_keys(t, volumes, plugins)
        own[name] = t.values

    resolved: dict[str, dict[str, Any]] = {}
    cycles_seen: set[frozenset[str]] = set()

    def resolve(name: str, chain: tuple[str, ...]) -> dict[str, Any]:
        if name in resolved:
            return resolved[name]
        parent = own[name].get("extends", "")
        merged = dict(own[name])
        if parent in (*chain, name):
            cycle = (
                (*chain[chain.index(parent) :], name, parent) if parent in chain else (name, name)
            )
            if frozenset(cycle) not in cycles_seen:
                cycles_seen.add(frozenset(cycle))
                problems.append(
                    (join("cluster", name, "extends"), "extends cycle: " + " -> ".join(cycle))
                )
        elif parent and parent not in own:
            reason = f"no [cluster.{parent}] section" + suggest(parent, own)
            problems.append((join("cluster", name, "extends"), reason))
        elif parent:
            merged = {**resolve(parent, (*chain, name)), **own[name]}
        resolved[name] = merged
        return merged

    clusters = []
    for name in own:
        merged = resolve(name, ())
        section = ClusterSection(name=name, **merged)
        if section.min_nodes > section.max_nodes:
            problems.append(
                (
                    join("cluster", name),
                    f"min_nodes ({section.min_nodes}) is above max_nodes ({section.max_nodes})",
                )
            )
        clusters.append(section)
    return tuple(clusters)


def _read_cluster_keys(t: Table, volumes: set[str], plugins: set[str]) -> None:
    t.text("extends")
    t.text("load_source", check=_load_source_problem)
    read_instance_types(t, "node_instance_type")
    t.text("image_id", check=checks.prefixed_or_empty("ami-"))
    size = t.get("cluster_size")
    if size is not None and (t.get("min_nodes") is not None or t.get("max_nodes") is not None):
        t.problem("cluster_size", "set cluster_size or min_nodes/max_nodes, not both")
    elif size is not None:
        t.integer("cluster_size", least=0)
        if "cluster_size" in t.values:
            t.values["min_nodes"] = t.values["max_nodes"] = t.values.pop("cluster_size")
    else:
        t.integer("min_nodes", least=0)
        t.integer("max_nodes", least=0)
    t.number("spot_bid", above=0)
    t.text("subnet", check=checks.prefixed_or_empty("subnet-"))
    t.text("availability_zone")
    t.text("cluster_user", check=checks.nonempty)
    t.text("ssh_key_file")
    t.integer("ssh_port", least=1, most=65535)
    t.number("idle_seconds", least=0)
    t.integer("node_slots", least=1)
    t.texts("volumes", unique=True, check=checks.reference("volume", volumes))
    t.texts("plugins", unique=True, check=checks.reference("plugin", plugins))
    t.finish()
