"""The TOML that `import-conf --starcluster` is writing, and the StarCluster line behind each key.

The converter adds tables, keys and comment lines here as it reads the StarCluster file, then
renders the text and checks it as `check-config` would. A problem found by that check names a
TOML key; `locate` turns it back into the StarCluster file and line that key came from. Pure.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from controller.config.checks import join
from controller.config.render import toml_value
from controller.gridengine.starcluster_ini import Option, Section, printable

Where = Option | Section
TablePath = tuple[str, ...]


@dataclass
class Draft:
    source: str
    preamble: list[str] = field(default_factory=list)  # comment lines above every table
    tables: dict[TablePath, list[str]] = field(default_factory=dict)  # in output order
    origin: dict[str, tuple[Where, str]] = field(default_factory=dict)  # key path -> where, label
    errors: list[str] = field(default_factory=list)

    def error(self, where: Where, label: str, reason: str) -> None:
        line = f"{_at(where)}: {label}: {reason}"
        if line not in self.errors:  # a parent's problem is met once per child
            self.errors.append(line)

    def table(self, path: TablePath, where: Where, label: str) -> None:
        self.tables.setdefault(path, [])
        self._remember(path, where, label)

    def emit(
        self, path: TablePath, key: str, value: object, where: Where, label: str, note: str = ""
    ) -> None:
        text = f"{key} = {toml_value(value)}"
        self.tables[path].append(f"{text:<39} # {note}" if note else text)
        self._remember((*path, key), where, label)

    def comment(self, path: TablePath | None, text: str) -> None:
        line = "# " + printable(text, limit=1000)
        (self.preamble if path is None else self.tables[path]).append(line)

    def not_carried(self, path: TablePath | None, what: str, why: str) -> None:
        self.comment(path, f"not carried over: {what} ({why})")

    def render(self, heading: list[str]) -> str:
        lines = [*heading, *self.preamble]
        for path, body in self.tables.items():
            lines += ["", f"[{join(*path)}]", *body]
        return "\n".join(lines) + "\n"

    def locate(self, keypath: str, reason: str) -> str:
        """`FILE:LINE: label: reason` for a problem the config reader found at `keypath`."""
        candidate = keypath
        while candidate:
            if candidate in self.origin:
                where, label = self.origin[candidate]
                return f"{_at(where)}: {label}: {reason}" if label else f"{_at(where)}: {reason}"
            shorter = re.sub(r"(\[\d+\]|\.[^.]*)$", "", candidate)
            candidate = "" if shorter == candidate else shorter
        return f"{self.source}: {keypath}: {reason}"

    def _remember(self, path: TablePath, where: Where, label: str) -> None:
        # The config reader writes key paths with join(); plugin checks with plain dots.
        for keypath in (join(*path), ".".join(path)):
            self.origin[keypath] = (where, label)


def _at(where: Where) -> str:
    return f"{where.source}:{where.line}" if where.line else where.source
