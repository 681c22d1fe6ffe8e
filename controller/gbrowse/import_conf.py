"""GBrowse's aws_balancer.conf in, the equivalent TOML config out (`controller import-conf`).

The legacy file is read the way GBrowse's AWS_Balancer.pm reads it: `[SECTION]` headers
(case-insensitive), whole-line `#` comments and ` # trailing` comments, blank lines skipped;
[LOAD TABLE] holds whitespace-separated `<requests/sec> <min instances> <max instances>` rows
and the other sections `key = value` lines, where a key with an empty value is unset.
poll_interval is in minutes there and in seconds here; space-separated lists become arrays.
Keys we do not know are kept as `# not converted:` comments so nothing is silently lost.

The result is checked with `parse_config`, and every problem, whether lexical here or semantic
there, is reported against the line of the legacy file it came from. Pure: text in, text out.
"""

from __future__ import annotations

import math
import re
import tomllib
from dataclasses import dataclass, field
from urllib.parse import SplitResult, urlsplit, urlunsplit

from controller.config.checks import is_credential_key
from controller.config.reader import ConfigError, parse_config
from controller.config.render import toml_value

LOAD_TABLE = "LOAD TABLE"
MASTER = "MASTER"
SLAVE = "SLAVE"

# The seed's keys, by legacy section: the TOML key and how to convert the value.
_MASTER_KEYS = ("poll_interval", "server_status_url", "external_ip")
_SLAVE_TEXT_KEYS = (
    "instance_type",
    "region",
    "image_id",
    "availability_zone",
    "subnet",
    "security_group",
    "ssh_key",
)
_SLAVE_KEYS = (*_SLAVE_TEXT_KEYS, "spot_bid", "ports", "data_snapshots")

# What GBrowse used when the key was absent (AWS_Balancer.pm), where it differs from ours: a
# blank region is the master's own (from its instance metadata), not our us-east-1.
_GBROWSE_DEFAULTS = {"instance_type": "m1.large", "spot_bid": 0.08, "region": ""}
_DEFAULT_NOTES = {"region": "blank: the master's region, from its instance metadata on EC2"}

_HEADER = re.compile(r"\[([^\]]+)\]")
_TRAILING_COMMENT = re.compile(r"\s+#.*$")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # all but tab


@dataclass
class _Conversion:
    """What the converter built so far: TOML lines per section, the source line of each key."""

    source: str
    sections: dict[str, list[str]] = field(default_factory=lambda: {"master": [], "slave": []})
    header_lines: dict[str, int] = field(default_factory=dict)  # legacy section -> its line
    origin: dict[str, tuple[int, str]] = field(default_factory=dict)  # TOML key -> (line, label)
    rows: list[tuple[float, int, int, int, str]] = field(default_factory=list)  # +line, label
    preamble: list[str] = field(default_factory=list)  # not converted, outside known sections
    errors: list[str] = field(default_factory=list)

    def error(self, line: int, label: str, reason: str) -> None:
        self.errors.append(f"{self.source}:{line}: {label}: {reason}")

    def emit(self, section: str, key: str, value: object, line: int, label: str, note: str = ""):
        text = f"{key} = {toml_value(value)}"
        self.sections[section].append(f"{text:<39} # {note}" if note else text)
        self.origin[f"{section}.{key}"] = (line, label)


def convert_aws_balancer_conf(text: str, source: str) -> str:
    """The TOML equivalent of an aws_balancer.conf; ConfigError with `FILE:LINE:` lines if bad."""
    conv = _Conversion(source)
    section: str | None = None
    # (legacy section, line, key, value) of each `key = value`, in file order; key "" = verbatim
    entries: list[tuple[str, int, str, str]] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        if re.match(r"\s*#", raw):
            continue
        line = _TRAILING_COMMENT.sub("", raw).strip()
        if not line:
            continue
        if header := _HEADER.match(line):
            section = header.group(1).strip().upper()
            conv.header_lines.setdefault(section, number)
            if section not in (LOAD_TABLE, MASTER, SLAVE):
                conv.preamble.append(f"# not converted: [{header.group(1)}]")
        elif section == LOAD_TABLE:
            _convert_row(conv, number, line)
        elif section in (MASTER, SLAVE):
            key, eq, value = line.partition("=")
            key, value = key.strip(), value.strip()
            if eq and key and " " not in key:
                entries.append((section, number, key, value))
            else:
                entries.append((section, number, "", line))
        else:
            conv.preamble.append(_not_converted_line(line))

    last = {(section, key): number for section, number, key, _ in entries}
    _fill_gbrowse_defaults(conv, {key: value for sec, _, key, value in entries if sec == SLAVE})
    for section, number, key, value in entries:
        out = conv.sections[_toml_section(section)]
        known = _MASTER_KEYS if section == MASTER else _SLAVE_KEYS
        if not key:
            out.append(_not_converted_line(value))
        elif key not in known:
            out.append(_not_converted(key, value))
        elif last[(section, key)] != number:
            out.append(f"# {key} is set again on line {last[(section, key)]}, which wins")
        elif section == MASTER:
            _convert_master(conv, key, value, number)
        else:
            _convert_slave(conv, key, value, number)
    for required in (LOAD_TABLE, SLAVE):
        if required not in conv.header_lines:
            conv.errors.append(
                f"{source}: no [{required}] section (GBrowse requires [LOAD TABLE] and [SLAVE])"
            )
    if conv.errors:
        raise ConfigError(conv.errors)

    output = _render(conv, _table_lines(conv))
    _check(conv, output)
    return output


def _convert_row(conv: _Conversion, number: int, line: str) -> None:
    label = f'[{LOAD_TABLE}] row "{line}"'
    tokens = line.split()
    if len(tokens) != 3:
        conv.error(number, label, "expected three columns: <requests/sec> <min> <max> instances")
        return
    rps = _float(tokens[0])
    try:
        low, high = int(tokens[1]), int(tokens[2])
    except ValueError:
        rps = None
    if rps is None:
        conv.error(number, label, "expected a finite number of requests/sec and two whole numbers")
        return
    conv.rows.append((rps, low, high, number, label))


def _convert_master(conv: _Conversion, key: str, value: str, number: int) -> None:
    label = f"[{MASTER}] {key}"
    if not value:
        conv.sections["master"].append(f"# {key} is empty in the file: the default applies")
    elif key == "poll_interval":
        minutes = _float(value)
        seconds = None if minutes is None else round(minutes * 60, 6)
        if seconds is None or not 0 < seconds < math.inf:
            conv.error(number, label, f"expected a number of minutes above 0 (got {value!r})")
            return
        note = f"seconds ({value} minutes in the legacy file)"
        conv.emit("master", key, seconds, number, label, note)
    elif key == "server_status_url" and (parts := _url(value)) is None:
        conv.error(number, label, f"expected an http:// URL (got {value!r})")
    elif key == "server_status_url" and "auto" not in parts.query.split("&"):
        # GBrowse's parser read the HTML page; we read the machine-readable one.
        query = f"{parts.query}&auto" if parts.query else "auto"
        url = urlunsplit(parts._replace(query=query))
        conv.emit("master", key, url, number, label, "?auto added: the machine-readable page")
    else:
        conv.emit("master", key, value, number, label)


def _convert_slave(conv: _Conversion, key: str, value: str, number: int) -> None:
    label = f"[{SLAVE}] {key}"
    if not value:
        if key not in _GBROWSE_DEFAULTS:  # those got GBrowse's default already
            conv.sections["slave"].append(f"# {key} is empty in the file: the default applies")
    elif key == "spot_bid":
        bid = _float(value)
        if bid is None:
            conv.error(number, label, f"expected US dollars per hour (got {value!r})")
            return
        conv.emit("slave", key, bid, number, label, "max $/h per slave")
    elif key == "ports":
        # ASCII digits only ("²".isdigit()), and few: int() refuses more than 4300.
        if not all(re.fullmatch(r"[0-9]{1,9}", p) for p in value.split()):
            conv.error(number, label, f"expected space-separated port numbers (got {value!r})")
            return
        conv.emit("slave", key, [int(p) for p in value.split()], number, label)
    elif key == "data_snapshots":
        conv.emit("slave", key, value.split(), number, label)
    else:
        conv.emit("slave", key, value, number, label)


def _fill_gbrowse_defaults(conv: _Conversion, slave: dict[str, str]) -> None:
    """Keys absent (or empty) where GBrowse's own default differs from ours get GBrowse's."""
    line = conv.header_lines.get(SLAVE, 0)
    for key, default in _GBROWSE_DEFAULTS.items():
        if not slave.get(key):
            label = f"[{SLAVE}] {key}"
            note = _DEFAULT_NOTES.get(key, "not in the file: GBrowse's default")
            conv.emit("slave", key, default, line, label, note)


def _table_lines(conv: _Conversion) -> list[str]:
    """The [load_table] rows, by increasing requests/sec: GBrowse kept the table in a hash and
    sorted it, so a file with rows out of order was valid for it and is for us."""
    rows = sorted(conv.rows, key=lambda row: row[0])  # stable: equal thresholds stay in order
    lines = (
        []
        if rows == conv.rows
        else ["    # sorted by requests/sec (the file lists them out of order)"]
    )
    for i, (rps, low, high, number, label) in enumerate(rows):
        conv.origin[f"load_table.rows[{i}]"] = (number, label)
        lines.append(f"    {toml_value([rps, low, high])},")
    return lines


def _render(conv: _Conversion, table: list[str]) -> str:
    lines = [
        f"# Converted by `controller import-conf` from {conv.source}.",
        "# Keys not written here take the defaults documented in config.toml;",
        "# check the result with `controller check-config -c FILE`.",
        *conv.preamble,
        "",
        "[controller]",
        'fleet = "gbrowse"                       # tag controller:fleet=gbrowse on all it makes',
        'on_exit = "teardown"                    # as the GBrowse balancer did on exit',
        "",
        "[master]",
        *conv.sections["master"],
        "",
        "[load_table]                            # <requests/sec> <min instances> <max instances>",
        "rows = [",
        *table,
        "]",
        "",
        "[slave]",
        *conv.sections["slave"],
    ]
    # The comments quote the legacy file, whose control characters TOML forbids even there.
    return "\n".join(_CONTROL.sub(_escape, line) for line in lines) + "\n"


def _check(conv: _Conversion, output: str) -> None:
    """Validate the output as a config, reporting problems at the legacy file's lines."""
    try:
        parse_config(tomllib.loads(output), conv.source)
    except ConfigError as exc:
        errors = []
        for keypath, reason in exc.problems:
            line, label = _origin(conv, keypath)
            where = f"{conv.source}:{line}" if line else conv.source
            errors.append(f"{where}: {label}: {reason}")
        raise ConfigError(errors) from None


def _origin(conv: _Conversion, keypath: str) -> tuple[int, str]:
    """The legacy line and label a TOML key path came from (most specific match first)."""
    for candidate in (keypath, re.sub(r"\[\d+\]$", "", keypath)):
        if candidate in conv.origin:
            return conv.origin[candidate]
    section = keypath.split(".", 1)[0]
    legacy = {"load_table": LOAD_TABLE, "master": MASTER, "slave": SLAVE}.get(section, section)
    return conv.header_lines.get(legacy, 0), f"[{legacy}]"


def _toml_section(legacy: str) -> str:
    return "master" if legacy == MASTER else "slave"


def _not_converted(key: str, value: str) -> str:
    if is_credential_key(key):
        return (
            f"# not converted: {key} (credentials come from the AWS chain or "
            "EC2_ACCESS_KEY/EC2_SECRET_KEY, never the config; value not copied)"
        )
    return f"# not converted: {key} = {value}"


def _not_converted_line(line: str) -> str:
    key, eq, value = line.partition("=")
    if eq:
        return _not_converted(key.strip(), value.strip())
    if is_credential_key(line):
        return "# not converted: a line naming credentials (not copied)"
    return f"# not converted: {line}"


def _escape(match: re.Match[str]) -> str:
    return f"\\x{ord(match.group()):02x}"


def _url(text: str) -> SplitResult | None:
    try:
        return urlsplit(text)
    except ValueError:  # such as an unclosed "[" of an IPv6 address
        return None


def _float(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None
