"""TOML config into frozen, typed dataclasses; every error names the file, the key and the reason.

Key names follow GBrowse's aws_balancer.conf (SPEC.md), so a GBrowse user recognises them.
Units are in the docs of each field: seconds unless named otherwise, dollars per hour for prices.

THE DATACLASSES BELOW ARE THE SHARED SHAPE (other modules read these exact attribute names).
Below them: `load_config(path)` / `parse_config(data, path)` check every key and collect every
problem before raising one `ConfigError` (one `FILE: key.path: reason` line each), and
`render_toml(config)` prints the resolved config back as TOML (what `check-config` shows).
"""

from __future__ import annotations

import datetime as dt
import difflib
import ipaddress
import math
import os
import re
import shlex
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11: tomli is the same parser
    import tomli as tomllib


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadRow:
    rps: float  # requests/sec at or above which this row applies
    min_instances: int
    max_instances: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ControllerSection:
    fleet: str = "gbrowse"  # every resource made is tagged controller:fleet=<fleet>
    on_exit: str = "teardown"  # "teardown" | "leave"


@dataclass(frozen=True, slots=True, kw_only=True)
class MasterSection:
    server_status_url: str = "http://127.0.0.1/server-status?auto"
    poll_interval: float = 30.0  # seconds
    external_ip: str = ""  # "" = discover via instance metadata (IMDSv2) when on EC2
    external_ip_lookup_url: str = ""  # opt-in public lookup; never used unless set
    renderfarm_conf: str = "/etc/gbrowse2/renderfarm.conf"
    reload_command: tuple[str, ...] = ("apache2ctl", "graceful")
    window_seconds: float = 120.0  # smoothing window of the request rate
    status_timeout: float = 5.0  # seconds for one server-status fetch


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadTableSection:
    rows: tuple[LoadRow, ...] = (
        LoadRow(rps=0.1, min_instances=0, max_instances=1),
        LoadRow(rps=0.5, min_instances=0, max_instances=2),
        LoadRow(rps=1.0, min_instances=1, max_instances=3),
        LoadRow(rps=2.0, min_instances=2, max_instances=4),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class ScalingSection:
    policy: str = "ours"  # ours | table (the seed band + dwell) | gbrowse | starcluster
    scale_in_after: float = 300.0  # seconds the band must ask for fewer before one is removed
    drain_seconds: float = 30.0  # between leaving renderfarm.conf and termination
    request_timeout: float = 300.0  # an unfilled launch is abandoned, next type/zone tried
    interruption_queue: str = ""  # SQS queue URL fed by EventBridge spot interruption warnings
    capacity_cooldown: float = 600.0  # a (type, zone) that failed for capacity is skipped this long
    max_cost_per_hour: float | None = None  # budget cap: launches never push the fleet above it
    probe_timeout: float = 5.0  # seconds for one slave readiness/liveness probe


@dataclass(frozen=True, slots=True, kw_only=True)
class SlaveSection:
    instance_types: tuple[str, ...] = ("m5.large",)  # `instance_type` folds into this
    spot_bid: float | None = None  # max $/h; None = pay the spot price
    ports: tuple[int, ...] = (8101,)
    region: str = "us-east-1"
    image_id: str = ""
    data_snapshots: tuple[str, ...] = ()
    availability_zone: str = ""
    subnet: str = ""
    security_group: str = ""  # "" = create one, owned and deleted by the controller
    ssh_key: str = ""  # EC2 key pair name; opens port 22 to the master only
    user_data: str = ""  # extra shell run on the slave before the render slave starts


@dataclass(frozen=True, slots=True, kw_only=True)
class AwsSection:
    endpoint_url: str = ""  # "" = AWS; EC2 only (a VPC endpoint for EC2 serves no SQS)
    sqs_endpoint_url: str = ""  # "" = the interruption queue's region's SQS endpoint
    retry_mode: str = "adaptive"  # botocore retry mode: standard | adaptive | legacy
    max_attempts: int = 10  # botocore total_max_attempts
    call_timeout: float = 30.0  # seconds for one EC2 call (connect + read)


@dataclass(frozen=True, slots=True, kw_only=True)
class StatsSection:
    listen: str = "127.0.0.1:8990"  # "" disables the endpoint
    token: str = ""  # bearer token required when set (never logged)
    token_file: str = ""  # or read it from this file

    @property
    def host(self) -> str:
        return self.listen.rsplit(":", 1)[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rsplit(":", 1)[1])


@dataclass(frozen=True, slots=True, kw_only=True)
class SimulateSection:
    slave_capacity_rps: float = 2.0  # requests/sec one slave serves; demand = ceil(load/capacity)
    boot_seconds: float = 90.0  # launch until the readiness probe passes
    boot_spread: float = 0.2  # boot time varies uniformly by +-20 %
    spot_price: float = 0.035  # $/h per slave
    unfilled_rate: float = 0.0  # fraction of launches that never fill
    capacity_error_rate: float = 0.0  # fraction of launches refused for capacity
    interruption_rate_per_hour: float = 0.0  # per instance


@dataclass(frozen=True, slots=True, kw_only=True)
class VolumeSection:
    name: str
    snapshot_id: str = ""  # every node gets its own copy
    volume_id: str = ""  # or one volume shared from the head
    mount_path: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class PluginSection:
    name: str
    kind: str  # profile | motd | stop-services | sge | commands
    options: tuple[tuple[str, object], ...] = ()  # the remaining keys, in file order


@dataclass(frozen=True, slots=True, kw_only=True)
class ClusterSection:
    name: str
    extends: str = ""
    load_source: str = "sge"  # only Grid Engine in this release
    node_instance_types: tuple[str, ...] = ("m5.xlarge",)
    image_id: str = ""
    min_nodes: int = 0
    max_nodes: int = 8
    spot_bid: float | None = None
    subnet: str = ""
    availability_zone: str = ""
    cluster_user: str = "sgeadmin"
    ssh_key_file: str = ""
    ssh_port: int = 22
    idle_seconds: float = 300.0
    node_slots: int = 1  # Grid Engine slots one node offers: pending slots / node_slots = nodes
    volumes: tuple[str, ...] = ()
    plugins: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    path: str = ""
    controller: ControllerSection = field(default_factory=ControllerSection)
    master: MasterSection = field(default_factory=MasterSection)
    load_table: LoadTableSection = field(default_factory=LoadTableSection)
    scaling: ScalingSection = field(default_factory=ScalingSection)
    slave: SlaveSection = field(default_factory=SlaveSection)
    aws: AwsSection = field(default_factory=AwsSection)
    stats: StatsSection = field(default_factory=StatsSection)
    simulate: SimulateSection = field(default_factory=SimulateSection)
    clusters: tuple[ClusterSection, ...] = ()
    volumes: tuple[VolumeSection, ...] = ()
    plugins: tuple[PluginSection, ...] = ()


# ---------------------------------------------------------------------------------------------
# Parsing and validation. Every check appends a (key path, reason) problem and goes on, so one
# run of `check-config` lists everything wrong in the file; ConfigError carries them all.

KNOWN_PLUGIN_KINDS = ("profile", "motd", "stop-services", "sge", "commands")
_ON_EXIT = ("teardown", "leave")
_POLICIES = ("ours", "table", "gbrowse", "starcluster")
_RETRY_MODES = ("standard", "adaptive", "legacy")
_LOAD_SOURCES = ("sge",)


def _load_source_problem(value: str) -> str | None:
    if value in _LOAD_SOURCES:
        return None
    if value == "slurm":
        return 'only "sge" drives a cluster in this release (Slurm is not supported yet)'
    return f"must be one of {_alternatives(_LOAD_SOURCES)} (got {value!r})"


_CREDENTIALS_REASON = (
    "credentials are never read from the config; they come from the AWS credential chain "
    "(environment, shared profile, SSO, instance role) or the EC2_ACCESS_KEY/EC2_SECRET_KEY "
    "environment variables: remove this key"
)
_TAG_SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
_TAG_SAFE_REASON = (
    "must be 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit "
    "(it becomes an EC2 tag value and part of resource names)"
)
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


class ConfigError(Exception):
    """A config that cannot be used; `errors` holds one `FILE: key.path: reason` line each.

    `problems` keeps the same findings as (key path, reason) pairs for callers that map them
    back to another source (import-conf maps them to lines of aws_balancer.conf).
    """

    def __init__(self, errors: Sequence[str], problems: Sequence[tuple[str, str]] = ()):
        self.errors: tuple[str, ...] = tuple(errors)
        self.problems: tuple[tuple[str, str], ...] = tuple(problems)
        super().__init__("\n".join(self.errors))


def is_credential_key(key: str) -> bool:
    """True for key names that would hold AWS credentials (access_key, aws_secret_access_key...)."""
    k = key.lower().replace("-", "_")
    return any(part in k for part in ("secret", "access_key", "session_token", "credential"))


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
    config = parse_config(data, path)
    problems = _plugin_problems(config.clusters, config.plugins)
    if problems:
        raise ConfigError([f"{path}: {key}: {reason}" for key, reason in problems], problems)
    return config


def parse_config(data: Mapping[str, Any], path: str) -> Config:
    """Turn parsed TOML into a Config, collecting every problem before raising ConfigError."""
    problems: list[tuple[str, str]] = []
    top = _Table(data, "", problems)
    tables = {name: top.get(name) for name in (*_SECTION_READERS, "volume", "plugin", "cluster")}
    top.finish(hint=_section_hint)
    sections = {
        name: read(_Table(tables[name], name, problems)) for name, read in _SECTION_READERS.items()
    }
    volumes = _read_volumes(tables["volume"], problems)
    plugins = _read_plugins(tables["plugin"], problems)
    clusters = _read_clusters(
        tables["cluster"], {v.name for v in volumes}, {p.name for p in plugins}, problems
    )
    if problems:
        raise ConfigError([f"{path}: {key}: {reason}" for key, reason in problems], problems)
    return Config(
        path=path, clusters=clusters, volumes=tuple(volumes), plugins=tuple(plugins), **sections
    )


def _plugin_problems(
    clusters: Sequence[ClusterSection], plugins: tuple[PluginSection, ...]
) -> list[tuple[str, str]]:
    """Each cluster's plugins parsed as `run --cluster` will, so that check-config and run catch
    bad plugin options (controller.node_plugins reads them; imported here lazily, as it imports
    this module). A file-level check: parse_config leaves plugin options to their reader."""
    from controller.node_plugins import PluginError, cluster_plugins

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


# --- one TOML table -------------------------------------------------------------------------


class _Table:
    """Typed reads from one TOML table; a bad value is reported and left at its default.

    Every key asked for is remembered, so `finish()` can report the keys nobody asked for,
    with the closest known name as a suggestion.
    """

    def __init__(self, data: object, keypath: str, problems: list[tuple[str, str]]):
        if data is None:
            data = {}
        elif not isinstance(data, dict):
            problems.append((keypath, f"expected a table, got {_kind(data)}"))
            data = {}
        self.data: dict[str, Any] = data
        self.keypath = keypath
        self.problems = problems
        self.known: set[str] = set()
        self.values: dict[str, Any] = {}

    def path(self, key: str, index: int | None = None) -> str:
        path = _join(key) if not self.keypath else f"{self.keypath}.{_join(key)}"
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
            self.problem(key, f"expected a string, got {_kind(value)}")
        elif choices and value not in choices:
            self.problem(key, f"must be one of {_alternatives(choices)} (got {value!r})")
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
        if not _is_number(value):
            self.problem(key, f"expected a number, got {_kind(value)}")
        elif (reason := _range_reason(value, above=above, least=least, most=most)) is not None:
            self.problem(key, reason)
        else:
            self.values[key] = float(value)

    def integer(self, key: str, *, least: int | None = None, most: int | None = None) -> None:
        value = self.get(key)
        if value is None:
            return
        if not _is_int(value):
            self.problem(key, f"expected an integer, got {_kind(value)}")
        elif (reason := _range_reason(value, least=least, most=most)) is not None:
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
            self.problem(key, f"expected an array of strings, got {_kind(value)}")
            return
        ok = True
        for i, item in enumerate(value):
            if not isinstance(item, str):
                self.problem(key, index=i, reason=f"expected a string, got {_kind(item)}")
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
            self.problem(key, f"expected an array of port numbers, got {_kind(value)}")
            return
        ok = bool(value)
        if not value:
            self.problem(key, "must list at least one port")
        for i, item in enumerate(value):
            if not _is_int(item):
                self.problem(key, index=i, reason=f"expected an integer, got {_kind(item)}")
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
                self.problem(key, _CREDENTIALS_REASON)
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


# --- sections ---------------------------------------------------------------------------------


def _read_controller(t: _Table) -> ControllerSection:
    t.text("fleet", check=_tag_safe)
    t.text("on_exit", choices=_ON_EXIT)
    t.finish()
    return ControllerSection(**t.values)


def _read_master(t: _Table) -> MasterSection:
    t.text("server_status_url", check=_http_url)
    t.number("poll_interval", above=0)
    t.text("external_ip", check=_ip_or_empty)
    t.text("external_ip_lookup_url", check=_http_url_or_empty)
    t.text("renderfarm_conf", check=_nonempty)
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


def _read_load_table(t: _Table) -> LoadTableSection:
    rows = t.get("rows")
    t.finish()
    if rows is None:
        return LoadTableSection()
    if not isinstance(rows, list):
        t.problem("rows", f"expected an array of [rps, min, max] rows, got {_kind(rows)}")
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
        if not _is_number(rps) or not _is_int(low) or not _is_int(high):
            kinds = ", ".join(_kind(v) for v in row)
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


def _read_scaling(t: _Table) -> ScalingSection:
    t.text("policy", choices=_POLICIES)
    t.number("scale_in_after", least=0)
    t.number("drain_seconds", least=0)
    t.number("request_timeout", above=0)
    t.text("interruption_queue", check=_http_url_or_empty)
    t.number("capacity_cooldown", least=0)
    t.number("max_cost_per_hour", above=0)
    t.number("probe_timeout", above=0)
    t.finish()
    return ScalingSection(**t.values)


def _read_instance_types(t: _Table, single: str) -> None:
    """`single` (one type) or `single + "s"` (a list tried in order), folded into the list."""
    many = single + "s"
    if t.get(single) is not None and t.get(many) is not None:
        t.problem(single, f"set {single} or {many}, not both")
    elif t.get(single) is not None:
        t.text(single, check=_instance_type)
        if single in t.values:
            t.values[many] = (t.values.pop(single),)
    else:
        t.texts(many, nonempty=True, unique=True, check=_instance_type)


def _read_slave(t: _Table) -> SlaveSection:
    _read_instance_types(t, "instance_type")
    t.number("spot_bid", above=0)
    t.ports("ports")
    t.text("region", check=_region)
    t.text("image_id", check=_prefixed_or_empty("ami-"))
    t.texts("data_snapshots", unique=True, check=_prefixed("snap-"))
    t.text("availability_zone")
    t.text("subnet", check=_prefixed_or_empty("subnet-"))
    t.text("security_group")
    t.text("ssh_key")
    t.text("user_data")
    t.finish()
    return SlaveSection(**t.values)


def _read_aws(t: _Table) -> AwsSection:
    t.text("endpoint_url", check=_http_url_or_empty)
    t.text("sqs_endpoint_url", check=_http_url_or_empty)
    t.text("retry_mode", choices=_RETRY_MODES)
    t.integer("max_attempts", least=1)
    t.number("call_timeout", above=0)
    t.finish()
    return AwsSection(**t.values)


def _read_stats(t: _Table) -> StatsSection:
    t.text("listen", check=_listen)
    t.text("token")
    t.text("token_file")
    if t.values.get("token") and t.values.get("token_file"):
        t.problem("token", "set token or token_file, not both")
    t.finish()
    return StatsSection(**t.values)


def _read_simulate(t: _Table) -> SimulateSection:
    t.number("slave_capacity_rps", above=0)
    t.number("boot_seconds", least=0)
    t.number("boot_spread", least=0, most=1)
    t.number("spot_price", least=0)
    t.number("unfilled_rate", least=0, most=1)
    t.number("capacity_error_rate", least=0, most=1)
    t.number("interruption_rate_per_hour", least=0)
    t.finish()
    return SimulateSection(**t.values)


_SECTION_READERS: dict[str, Callable[[_Table], Any]] = {
    "controller": _read_controller,
    "master": _read_master,
    "load_table": _read_load_table,
    "scaling": _read_scaling,
    "slave": _read_slave,
    "aws": _read_aws,
    "stats": _read_stats,
    "simulate": _read_simulate,
}


def _section_hint(key: str) -> str | None:
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
}


def _named_tables(data: object, kind: str, problems: list[tuple[str, str]]) -> dict[str, Any]:
    """The [kind.NAME] tables, by name; anything else under `kind` is reported."""
    if data is None:
        return {}
    if not isinstance(data, dict):
        problems.append((kind, f"expected [{kind}.NAME] tables, got {_kind(data)}"))
        return {}
    named = {}
    for name, body in data.items():
        if not isinstance(body, dict):
            problems.append(
                (_join(kind, name), f"expected a [{kind}.NAME] table, got {_kind(body)}")
            )
        elif not _TAG_SAFE.fullmatch(name):
            problems.append((_join(kind, name), f"the name {_TAG_SAFE_REASON}"))
        else:
            named[name] = body
    return named


def _read_volumes(data: object, problems: list[tuple[str, str]]) -> list[VolumeSection]:
    volumes = []
    for name, body in _named_tables(data, "volume", problems).items():
        t = _Table(body, _join("volume", name), problems)
        t.text("snapshot_id", check=_prefixed("snap-"))
        t.text("volume_id", check=_prefixed("vol-"))
        t.text("mount_path", check=_absolute_path)
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
        t = _Table(body, _join("plugin", name), problems)
        t.text("kind", choices=KNOWN_PLUGIN_KINDS)
        if t.get("kind") is None:
            t.problem("kind", f"required: one of {_alternatives(KNOWN_PLUGIN_KINDS)}")
        options = []
        for key, value in body.items():
            if key == "kind":
                continue
            if is_credential_key(key):
                t.problem(key, _CREDENTIALS_REASON)
            elif (frozen := _option_value(value)) is None:
                t.problem(key, f"expected a string, number, boolean or array, got {_kind(value)}")
            else:
                options.append((key, frozen))
        plugins.append(
            PluginSection(name=name, kind=t.values.get("kind", ""), options=tuple(options))
        )
    return plugins


def _option_value(value: object) -> object | None:
    """A plugin option as an immutable value (arrays become tuples); None if unsupported."""
    if isinstance(value, (str, bool, int)) or (_is_number(value) and math.isfinite(value)):
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
        t = _Table(body, _join("cluster", name), problems)
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
                    (_join("cluster", name, "extends"), "extends cycle: " + " -> ".join(cycle))
                )
        elif parent and parent not in own:
            reason = f"no [cluster.{parent}] section" + _suggest(parent, own)
            problems.append((_join("cluster", name, "extends"), reason))
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
                    _join("cluster", name),
                    f"min_nodes ({section.min_nodes}) is above max_nodes ({section.max_nodes})",
                )
            )
        clusters.append(section)
    return tuple(clusters)


def _read_cluster_keys(t: _Table, volumes: set[str], plugins: set[str]) -> None:
    t.text("extends")
    t.text("load_source", check=_load_source_problem)
    _read_instance_types(t, "node_instance_type")
    t.text("image_id", check=_prefixed_or_empty("ami-"))
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
    t.text("subnet", check=_prefixed_or_empty("subnet-"))
    t.text("availability_zone")
    t.text("cluster_user", check=_nonempty)
    t.text("ssh_key_file")
    t.integer("ssh_port", least=1, most=65535)
    t.number("idle_seconds", least=0)
    t.integer("node_slots", least=1)
    t.texts("volumes", unique=True, check=_reference("volume", volumes))
    t.texts("plugins", unique=True, check=_reference("plugin", plugins))
    t.finish()


# --- value checks: each returns None when fine, else the reason ----------------------------


def _nonempty(value: str) -> str | None:
    return None if value.strip() else "must not be empty"


def _tag_safe(value: str) -> str | None:
    return None if _TAG_SAFE.fullmatch(value) else _TAG_SAFE_REASON


def _http_url(value: str) -> str | None:
    if value.startswith(("http://", "https://")) and len(value.split("://", 1)[1]) > 0:
        return None
    return f"expected an http:// or https:// URL (got {value!r})"


def _http_url_or_empty(value: str) -> str | None:
    return None if value == "" else _http_url(value)


def _ip_or_empty(value: str) -> str | None:
    if value == "":
        return None
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return f'expected an IP address or "" to discover it (got {value!r})'
    return None


def _absolute_path(value: str) -> str | None:
    return None if value.startswith("/") else f"must be an absolute path (got {value!r})"


def _instance_type(value: str) -> str | None:
    if re.fullmatch(r"[a-z0-9-]+\.[a-z0-9-]+", value):
        return None
    return f"expected an EC2 instance type like 'm5.large' (got {value!r})"


def _region(value: str) -> str | None:
    if re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", value):
        return None
    return f"expected a region name like 'us-east-1' (got {value!r})"


def _prefixed(prefix: str) -> Callable[[str], str | None]:
    def check(value: str) -> str | None:
        if re.fullmatch(re.escape(prefix) + r"[0-9A-Za-z]+", value):
            return None
        return f"expected an id like '{prefix}0123abcd' (got {value!r})"

    return check


def _prefixed_or_empty(prefix: str) -> Callable[[str], str | None]:
    check = _prefixed(prefix)
    return lambda value: None if value == "" else check(value)


def _reference(kind: str, names: set[str]) -> Callable[[str], str | None]:
    def check(value: str) -> str | None:
        return None if value in names else f"no [{kind}.{value}] section" + _suggest(value, names)

    return check


def _listen(value: str) -> str | None:
    if value == "":
        return None
    host, sep, port = value.rpartition(":")
    if not sep or not host.strip("[]") or not port.isdigit() or not 1 <= int(port) <= 65535:
        return f'expected "host:port" with a port 1..65535, or "" to disable (got {value!r})'
    return None


def _range_reason(
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


# --- small helpers ----------------------------------------------------------------------------


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _num(value: float) -> str:
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def _kind(value: object) -> str:
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


def _alternatives(choices: Sequence[str]) -> str:
    return ", ".join(repr(c) for c in choices)


def _suggest(name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _join(*parts: str) -> str:
    """A dotted TOML key path, quoting the parts that are not bare keys."""
    return ".".join(p if _BARE_KEY.fullmatch(p) else toml_string(p) for p in parts if p)


# --- TOML output ------------------------------------------------------------------------------


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
    for name in _SECTION_READERS:
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
        lines += ["", f"[{_join('cluster', cluster.name)}]"]
        for f in fields(cluster):
            value = getattr(cluster, f.name)
            if f.name == "name":
                continue
            if value is None:
                lines.append(f"# {f.name} is unset")
            else:
                lines.append(f"{f.name} = {toml_value(value)}")
    for volume in config.volumes:
        lines += ["", f"[{_join('volume', volume.name)}]"]
        for key in ("snapshot_id", "volume_id"):
            if getattr(volume, key):
                lines.append(f"{key} = {toml_value(getattr(volume, key))}")
        lines.append(f"mount_path = {toml_value(volume.mount_path)}")
    for plugin in config.plugins:
        lines += ["", f"[{_join('plugin', plugin.name)}]", f"kind = {toml_value(plugin.kind)}"]
        lines += [f"{_join(key)} = {toml_value(value)}" for key, value in plugin.options]
    return "\n".join(lines) + "\n"
