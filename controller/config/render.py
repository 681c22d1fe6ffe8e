"""The resolved config printed back as TOML (what `check-config` shows); secrets show as ***."""

from __future__ import annotations

import math
from dataclasses import fields

from controller.config.checks import join, toml_string
from controller.config.schema import Config, LoadRow
from controller.config.sections import SECTION_READERS


def toml_value(value: object) -> str:
    """A value of the types a Config holds (str, bool, int, float, arrays of these) as TOML."""
    match value:
        case bool():
            return "true" if value else "false"
        case int():
            return str(value)
        case float() if math.isfinite(value):
            return repr(value)
        case str():
            return toml_string(value)
        case tuple() | list():
            return "[" + ", ".join(toml_value(v) for v in value) + "]"
        case LoadRow():
            return f"[{value.rps!r}, {value.min_instances}, {value.max_instances}]"
    raise TypeError(f"cannot write {value!r} as TOML")


def render_toml(config: Config) -> str:
    """The resolved config as TOML that parses back to an equal Config; secrets show as ***."""
    lines = [f"# resolved from {config.path}" if config.path else "# resolved config"]
    for name in SECTION_READERS:
        section = getattr(config, name)
        lines += ["", f"[{name}]"]
        for f in fields(section):
            value = getattr(section, f.name)
            if name == "stats" and f.name == "token" and value:
                value = "***"
            if name == "load_table":
                lines.append("rows = [")
                lines += [f"    {toml_value(row)}," for row in value]
                lines.append("]")
            elif value is None:
                lines.append(f"# {f.name} is unset")
            else:
                lines.append(f"{f.name} = {toml_value(value)}")
    for cluster in config.clusters:
        lines += ["", f"[{join('cluster', cluster.name)}]"]
        for f in fields(cluster):
            value = getattr(cluster, f.name)
            if f.name == "name":
                continue
            if value is None:
                lines.append(f"# {f.name} is unset")
            else:
                lines.append(f"{f.name} = {toml_value(value)}")
    for volume in config.volumes:
        lines += ["", f"[{join('volume', volume.name)}]"]
        for key in ("snapshot_id", "volume_id"):
            if getattr(volume, key):
                lines.append(f"{key} = {toml_value(getattr(volume, key))}")
        lines.append(f"mount_path = {toml_value(volume.mount_path)}")
    for plugin in config.plugins:
        lines += ["", f"[{join('plugin', plugin.name)}]", f"kind = {toml_value(plugin.kind)}"]
        lines += [f"{join(key)} = {toml_value(value)}" for key, value in plugin.options]
    return "\n".join(lines) + "\n"
