"""The checks of single config values: each returns None when the value is fine, else the reason.

Also the small helpers every reader shares: how to name a value's TOML type, how to write a
dotted key path, which keys would hold credentials.
"""

from __future__ import annotations

import datetime as dt
import difflib
import ipaddress
import math
import re
from collections.abc import Callable, Iterable, Sequence

CREDENTIALS_REASON = (
    "credentials are never read from the config; they come from the AWS credential chain "
    "(environment, shared profile, SSO, instance role) or the EC2_ACCESS_KEY/EC2_SECRET_KEY "
    "environment variables: remove this key"
)
TAG_SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
TAG_SAFE_REASON = (
    "must be 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit "
    "(it becomes an EC2 tag value and part of resource names)"
)
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def is_credential_key(key: str) -> bool:
    """True for key names that would hold AWS credentials (access_key, aws_secret_access_key...)."""
    k = key.lower().replace("-", "_")
    return any(part in k for part in ("secret", "access_key", "session_token", "credential"))


def nonempty(value: str) -> str | None:
    return None if value.strip() else "must not be empty"


def tag_safe(value: str) -> str | None:
    return None if TAG_SAFE.fullmatch(value) else TAG_SAFE_REASON


def http_url(value: str) -> str | None:
    if value.startswith(("http://", "https://")) and len(value.split("://", 1)[1]) > 0:
        return None
    return f"expected an http:// or https:// URL (got {value!r})"


def http_url_or_empty(value: str) -> str | None:
    return None if value == "" else http_url(value)


def ip_or_empty(value: str) -> str | None:
    if value == "":
        return None
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return f'expected an IP address or "" to discover it (got {value!r})'
    return None


def absolute_path(value: str) -> str | None:
    return None if value.startswith("/") else f"must be an absolute path (got {value!r})"


def instance_type(value: str) -> str | None:
    if re.fullmatch(r"[a-z0-9-]+\.[a-z0-9-]+", value):
        return None
    return f"expected an EC2 instance type like 'm5.large' (got {value!r})"


def region(value: str) -> str | None:
    if re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", value):
        return None
    return f"expected a region name like 'us-east-1' (got {value!r})"


def region_or_empty(value: str) -> str | None:
    """ "" is the master's region, from its instance metadata at run (a master on EC2)."""
    return None if value == "" else region(value)


def no_scheduler_plugin(load_source: str) -> str:
    """Why a [cluster.X] whose plugins name no scheduler cannot run (`run --cluster` refuses it,
    `check-config` reports it), after "[cluster.X] plugins: "."""
    scheduler = "Slurm" if load_source == "slurm" else "Grid Engine"
    return (
        f'none is of kind "{load_source}": add a [plugin.X] with kind = "{load_source}" '
        f"so nodes join {scheduler} and its queue drives the cluster"
    )


def prefixed(prefix: str) -> Callable[[str], str | None]:
    def check(value: str) -> str | None:
        if re.fullmatch(re.escape(prefix) + r"[0-9A-Za-z]+", value):
            return None
        return f"expected an id like '{prefix}0123abcd' (got {value!r})"

    return check


def prefixed_or_empty(prefix: str) -> Callable[[str], str | None]:
    check = prefixed(prefix)
    return lambda value: None if value == "" else check(value)


def reference(kind: str, names: set[str]) -> Callable[[str], str | None]:
    def check(value: str) -> str | None:
        return None if value in names else f"no [{kind}.{value}] section" + suggest(value, names)

    return check


def listen(value: str) -> str | None:
    if value == "":
        return None
    host, sep, port = value.rpartition(":")
    digits = port.isascii() and port.isdigit()  # "²".isdigit(), yet int("²") fails
    if not sep or not host.strip("[]") or not digits or not 1 <= int(port) <= 65535:
        return f'expected "host:port" with a port 1..65535, or "" to disable (got {value!r})'
    return None


def loopback_listen(value: str) -> bool:
    """Does "host:port" bind only the loopback interface (127.0.0.0/8, ::1, localhost)?"""
    host = value.rpartition(":")[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name that may resolve anywhere


def range_reason(
    value: float,
    *,
    above: float | None = None,
    least: float | None = None,
    most: float | None = None,
) -> str | None:
    if isinstance(value, float) and not math.isfinite(value):
        return f"must be a finite number (got {value})"
    if above is not None and not value > above:
        return f"must be > {_num(above)} (got {_num(value)})"
    if least is not None and value < least:
        return f"must be >= {_num(least)} (got {_num(value)})"
    if most is not None and value > most:
        return f"must be <= {_num(most)} (got {_num(value)})"
    return None


def is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _num(value: float) -> str:
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def kind_of(value: object) -> str:
    match value:
        case bool():
            return "a boolean"
        case int():
            return "an integer"
        case float():
            return "a float"
        case str():
            return "a string"
        case list():
            return "an array"
        case dict():
            return "a table"
    return "a date/time" if isinstance(value, (dt.date, dt.time)) else type(value).__name__


def alternatives(choices: Sequence[str]) -> str:
    return ", ".join(repr(c) for c in choices)


def suggest(name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def join(*parts: str) -> str:
    """A dotted TOML key path, quoting the parts that are not bare keys."""
    return ".".join(p if _BARE_KEY.fullmatch(p) else toml_string(p) for p in parts if p)


def toml_string(text: str) -> str:
    """A TOML basic string: quote, backslash and control characters escaped."""
    out = []
    for ch in text:
        if ch in ('"', "\\"):
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'
