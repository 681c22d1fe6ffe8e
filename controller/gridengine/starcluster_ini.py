"""A StarCluster config file read the way StarCluster reads it: text in, sections out. Pure.

StarCluster (0.9x) cuts a `#` comment when the first `#` of a line follows whitespace (its
InlineCommentsIgnoredConfigParser) and hands the rest to Python 2's ConfigParser, whose rules are
kept here so a file means what it meant there: `[header]` lines (a header seen again continues
its section), `KEY = VALUE` or `KEY: VALUE` lines with case-insensitive keys (the last one
wins), lines starting with whitespace continue the previous value, lines starting with `#` or
`;` (or the word `rem`) are comments, ` ;` starts an inline comment and `""` means empty.
`[DEFAULT]` stays an ordinary section here; the converter applies it. Unlike ConfigParser, every
option keeps its file and line, so each problem can name FILE:LINE.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from controller.config.checks import is_credential_key
from controller.config.reader import ConfigError

_SECTION = re.compile(r"\[(?P<header>[^]]+)\]")
_OPTION = re.compile(r"(?P<option>[^:=\s][^:=]*)\s*(?P<vi>[:=])\s*(?P<value>.*)$")


@dataclass
class Option:
    name: str  # as written: StarCluster's documentation writes them in capitals
    value: str
    source: str
    line: int


@dataclass
class Section:
    header: str
    source: str
    line: int
    options: dict[str, Option] = field(default_factory=dict)  # by lower-case name


def printable(text: str, limit: int = 80) -> str:
    """Text safe inside a one-line message or a TOML comment: no control characters."""
    text = "".join(ch if ch.isprintable() else "?" for ch in text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def is_secret(key: str) -> bool:
    """Keys whose value is never written out: credentials, passwords, tokens, private keys."""
    k = key.lower()
    return is_credential_key(k) or any(w in k for w in ("pass", "token", "private_key"))


def shown(option: Option) -> str:
    """`NAME = value` for a comment line, or only `NAME (value not copied)` for a secret."""
    if is_secret(option.name):
        return f"{printable(option.name)} (value not copied)"
    return f"{printable(option.name)} = {printable(option.value)}"


def read_ini(chunks: Sequence[tuple[str, str]]) -> dict[str, Section]:
    """The sections of (source, text) chunks read as one file (StarCluster's INCLUDE appends
    the included files to the main one), by header in file order; ConfigError if malformed."""
    sections: dict[str, Section] = {}
    errors: list[str] = []
    current: Section | None = None
    last: Option | None = None  # the option a continuation line extends
    for source, text in chunks:
        for number, raw in enumerate(text.split("\n"), start=1):
            line = _cut_comment(raw)
            if not line.strip() or line[0] in "#;":
                continue
            if line.split(None, 1)[0].lower() == "rem" and line[0] in "rR":
                continue
            if line[0].isspace() and current is not None and last is not None:
                if value := line.strip():
                    last.value = f"{last.value}\n{value}"
                continue
            if header := _SECTION.match(line):
                name = header.group("header")
                current = sections.setdefault(name, Section(name, source, number))
                last = None
            elif current is None:
                raise ConfigError(
                    [
                        f"{source}:{number}: a line before any [section] header (got "
                        f"{printable(line.strip(), 60)!r}): a StarCluster config starts with a "
                        "section such as [global] or [cluster NAME]"
                    ]
                )
            elif option := _OPTION.match(line):
                last = _option(option, source, number)
                current.options[last.name.lower()] = last
            else:
                errors.append(
                    f"{source}:{number}: expected KEY = VALUE or a [section] header "
                    f"(got {printable(line.strip(), 60)!r})"
                )
    if errors:
        raise ConfigError(errors)
    return sections


def _cut_comment(line: str) -> str:
    pound = line.find("#")
    if pound > 0 and line[pound - 1].isspace():
        return line[:pound].rstrip()
    return line


def _option(match: re.Match[str], source: str, number: int) -> Option:
    name, value = match.group("option").rstrip(), match.group("value")
    semicolon = value.find(";")
    # Python 2 looks one character before the first `;`, even when that wraps to the end.
    if semicolon != -1 and value[semicolon - 1].isspace():
        value = value[:semicolon]
    value = value.strip()
    return Option(name, "" if value == '""' else value, source, number)
