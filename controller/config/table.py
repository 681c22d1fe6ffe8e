"""Typed reads from one TOML table: a bad value is reported as a problem and left at its default.

Every check appends a (key path, reason) problem and goes on, so one run of `check-config` lists
everything wrong in the file; ConfigError (controller.config.reader) carries them all.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from typing import Any

from controller.config.checks import (
    CREDENTIALS_REASON,
    alternatives,
    is_credential_key,
    is_int,
    is_number,
    join,
    kind_of,
    range_reason,
)


class Table:
    """Typed reads from one TOML table; a bad value is reported and left at its default.

    Every key asked for is remembered, so `finish()` can report the keys nobody asked for,
    with the closest known name as a suggestion.
    """

    def __init__(self, data: object, keypath: str, problems: list[tuple[str, str]]):
        if data is None:
            data = {}
        elif not isinstance(data, dict):
            problems.append((keypath, f"expected a table, got {kind_of(data)}"))
            data = {}
        self.data: dict[str, Any] = data
        self.keypath = keypath
        self.problems = problems
        self.known: set[str] = set()
        self.values: dict[str, Any] = {}

    def path(self, key: str, index: int | None = None) -> str:
        path = join(key) if not self.keypath else f"{self.keypath}.{join(key)}"
        return path if index is None else f"{path}[{index}]"

    def problem(self, key: str, reason: str, index: int | None = None) -> None:
        self.problems.append((self.path(key, index), reason))

    def get(self, key: str) -> Any:
        self.known.add(key)
        return self.data.get(key)

    def text(
        self,
        key: str,
        *,
        choices: Sequence[str] = (),
        check: Callable[[str], str | None] | None = None,
    ) -> None:
        value = self.get(key)
        if value is None:
            return
        if not isinstance(value, str):
            self.problem(key, f"expected a string, got {kind_of(value)}")
        elif choices and value not in choices:
            self.problem(key, f"must be one of {alternatives(choices)} (got {value!r})")
        elif check is not None and (reason := check(value)) is not None:
            self.problem(key, reason)
        else:
            self.values[key] = value

    def number(
        self,
        key: str,
        *,
        above: float | None = None,
        least: float | None = None,
        most: float | None = None,
    ) -> None:
        value = self.get(key)
        if value is None:
            return
        if not is_number(value):
            self.problem(key, f"expected a number, got {kind_of(value)}")
        elif (reason := range_reason(value, above=above, least=least, most=most)) is not None:
            self.problem(key, reason)
        else:
            self.values[key] = float(value)

    def integer(self, key: str, *, least: int | None = None, most: int | None = None) -> None:
        value = self.get(key)
        if value is None:
            return
        if not is_int(value):
            self.problem(key, f"expected an integer, got {kind_of(value)}")
        elif (reason := range_reason(value, least=least, most=most)) is not None:
            self.problem(key, reason)
        else:
            self.values[key] = value

    def texts(
        self,
        key: str,
        *,
        nonempty: bool = False,
        unique: bool = False,
        check: Callable[[str], str | None] | None = None,
    ) -> None:
        value = self.get(key)
        if value is None:
            return
        if not isinstance(value, list):
            self.problem(key, f"expected an array of strings, got {kind_of(value)}")
            return
        ok = True
        for i, item in enumerate(value):
            if not isinstance(item, str):
                self.problem(key, index=i, reason=f"expected a string, got {kind_of(item)}")
                ok = False
            elif check is not None and (reason := check(item)) is not None:
                self.problem(key, index=i, reason=reason)
                ok = False
        if not ok:
            return
        if nonempty and not value:
            self.problem(key, "must not be empty")
        elif unique and len(set(value)) != len(value):
            self.problem(key, "lists the same value twice")
        else:
            self.values[key] = tuple(value)

    def ports(self, key: str) -> None:
        value = self.get(key)
        if value is None:
            return
        if not isinstance(value, list):
            self.problem(key, f"expected an array of port numbers, got {kind_of(value)}")
            return
        ok = bool(value)
        if not value:
            self.problem(key, "must list at least one port")
        for i, item in enumerate(value):
            if not is_int(item):
                self.problem(key, index=i, reason=f"expected an integer, got {kind_of(item)}")
                ok = False
            elif not 1 <= item <= 65535:
                self.problem(key, index=i, reason=f"port must be 1..65535 (got {item})")
                ok = False
        if ok:
            self.values[key] = tuple(value)

    def finish(self, hint: Callable[[str], str | None] | None = None) -> None:
        """Report every key nobody asked for: credentials get their own explanation."""
        for key in self.data:
            if key in self.known:
                continue
            if is_credential_key(key):
                self.problem(key, CREDENTIALS_REASON)
                continue
            value = self.data[key]
            reason = (
                "unknown section" if not self.keypath and isinstance(value, dict) else "unknown key"
            )
            close = difflib.get_close_matches(key, sorted(self.known), n=1, cutoff=0.6)
            extra = hint(key) if hint is not None else None
            if close:
                reason += f" (did you mean {close[0]!r}?)"
            elif extra:
                reason += f" ({extra})"
            self.problem(key, reason)
