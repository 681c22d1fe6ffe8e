"""The parsers of outside text raise nothing but their own error, whatever they are given.

Hypothesis feeds each parser arbitrary text, and documents built from the names the parser looks
for (the config's sections and keys, aws_balancer.conf's lines, mod_status's fields, qstat's XML
tags, EventBridge's keys) holding values of any type: those get far past the first syntax check.
Each test runs a few hundred examples; `HYPOTHESIS_PROFILE=fuzz` runs 10,000 each. A crash found
once stays as an `@example` of the test that found it.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import tomllib
import xml.etree.ElementTree as ET
from dataclasses import fields
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from controller.cloud.interruption_events import EventError, EventKind, InstanceEvent, parse_event
from controller.config import schema
from controller.config.plugins import (
    KNOWN_PLUGIN_KINDS,
    CommandsPlugin,
    MotdPlugin,
    ProfilePlugin,
    SgePlugin,
    StopServicesPlugin,
)
from controller.config.reader import ConfigError, load_config, parse_config
from controller.gbrowse.apache_status import StatusParseError, parse_server_status
from controller.gbrowse.import_conf import convert_aws_balancer_conf
from controller.gridengine.sge import QueueSnapshot, SgeParseError, parse_qstat

settings.register_profile(
    "parsers", max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("fuzz", parent=settings.get_profile("parsers"), max_examples=10_000)
# Applied per test, so the env var never changes the examples of other test modules.
FUZZING = os.environ.get("HYPOTHESIS_PROFILE") == "fuzz"
FUZZ = settings.get_profile("fuzz" if FUZZING else "parsers")
# 10,000 config documents take minutes: the suite's per-test timeout is for the usual run
pytestmark = pytest.mark.timeout(3600 if FUZZING else 180)

DEEP = 100_000  # nesting far past the interpreter's recursion limit


def one_line(exc: Exception) -> None:
    message = str(exc)
    assert message.strip() and "\n" not in message, repr(message)


def config_lines(exc: ConfigError, source: str) -> None:
    """A ConfigError is one `SOURCE...: reason` line per problem, each naming its key."""
    assert exc.errors
    for line in exc.errors:
        assert line.startswith(source) and "\n" not in line, repr(line)
    for key, reason in exc.problems:
        assert reason.strip() and "\n" not in key + reason, (key, reason)


# Values of every type TOML has, leaning on the words our readers look for.

NAMES = ("a", "b", "c")  # [cluster.X], [volume.X], [plugin.X], also as values: extends, plugins
WORDS = st.sampled_from(
    (
        *NAMES,
        *KNOWN_PLUGIN_KINDS,
        "",
        " ",
        "sge",
        "slurm",
        "teardown",
        "leave",
        "ours",
        "table",
        "adaptive",
        "m5.large",
        "ami-0123abcd",
        "snap-1",
        "vol-1",
        "subnet-1",
        "/mnt/data",
        "http://127.0.0.1/server-status?auto",
        "127.0.0.1:8990",
        "0.0.0.0:80",
        "[::1]:80",
        "host:²",
        "us-east-1",
        "NAME=value",
        "15G",
        "apache2ctl graceful",
        "'unterminated",
        "x\ny",
    )
)
HUGE_INTS = st.sampled_from((2**63, -(2**63) - 1, 10**400, -(10**400)))
SCALARS = st.one_of(
    WORDS,
    st.text(max_size=12),
    st.integers(),
    HUGE_INTS,
    st.floats(),
    st.booleans(),
    st.datetimes(),
    st.dates(),
    st.times(),
)
ROWS = st.lists(st.lists(st.one_of(st.integers(), st.floats(), HUGE_INTS), max_size=4), max_size=4)
VALUES = st.one_of(
    ROWS,
    st.recursive(
        SCALARS,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(WORDS, inner, max_size=3),
        max_leaves=8,
    ),
)


def keys_of(*classes: type) -> list[str]:
    return sorted({f.name for cls in classes for f in fields(cls)} - {"name"})


SECTION_KEYS = {
    "controller": keys_of(schema.ControllerSection),
    "master": keys_of(schema.MasterSection),
    "load_table": ["rows"],
    "scaling": keys_of(schema.ScalingSection),
    "slave": [*keys_of(schema.SlaveSection), "instance_type", "secret_key"],
    "aws": keys_of(schema.AwsSection),
    "stats": keys_of(schema.StatsSection),
    "simulate": [*keys_of(schema.SimulateSection), "slave_capacity_rps", "boot_seconds"],
    "cluster": [*keys_of(schema.ClusterSection), "cluster_size", "node_instance_type"],
    "volume": keys_of(schema.VolumeSection),
    "plugin": [
        "kind",
        "text",
        "commands",
        "services",
        *keys_of(ProfilePlugin, MotdPlugin, StopServicesPlugin, CommandsPlugin, SgePlugin),
    ],
}
NAMED = ("cluster", "volume", "plugin")


def table(keys: list[str]) -> st.SearchStrategy[dict]:
    return st.dictionaries(st.sampled_from(keys) | st.text(max_size=8), VALUES, max_size=8)


def section(name: str) -> st.SearchStrategy[object]:
    body = table(SECTION_KEYS[name])
    if name in NAMED:
        body = st.dictionaries(st.sampled_from(NAMES) | st.text(max_size=8), body | VALUES)
    return body | VALUES


DOCUMENTS = st.builds(
    lambda known, other: {**other, **known},
    st.fixed_dictionaries({}, optional={name: section(name) for name in SECTION_KEYS}),
    st.dictionaries(st.text(max_size=8), VALUES, max_size=2),
)


def toml_value(value: object) -> str:
    """Any value tomllib returns, written back as TOML (the test's own writer)."""
    match value:
        case bool():
            return "true" if value else "false"
        case int():
            return str(value)
        case float() if math.isnan(value):
            return "nan"
        case float() if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        case float():
            return repr(value)
        case str():
            return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
        case dt.date() | dt.time():
            return value.isoformat()
        case list():
            return "[" + ", ".join(toml_value(v) for v in value) + "]"
        case dict():
            items = ", ".join(f"{toml_value(k)} = {toml_value(v)}" for k, v in value.items())
            return "{" + items + "}"
    raise TypeError(value)


def toml_document(data: dict) -> str:
    lines = [
        f"{toml_value(k)} = {toml_value(v)}" for k, v in data.items() if not isinstance(v, dict)
    ]
    for name, body in data.items():
        if isinstance(body, dict):
            lines.append(f"[{toml_value(name)}]")
            lines += [f"{toml_value(k)} = {toml_value(v)}" for k, v in body.items()]
    return "\n".join(lines) + "\n"


# Text that is mostly TOML, so the reader gets past tomllib.
TOML_LINES = st.one_of(
    st.sampled_from([*SECTION_KEYS, "cluster.a", "plugin.b", "volume.c"]).map(lambda s: f"[{s}]"),
    st.tuples(
        st.sampled_from(sorted({k for keys in SECTION_KEYS.values() for k in keys})),
        st.one_of(VALUES.map(toml_value), st.text(max_size=10)),
    ).map(lambda kv: f"{kv[0]} = {kv[1]}"),
    st.text(max_size=20),
)
TOML_TEXT = st.lists(TOML_LINES, max_size=12).map("\n".join)


@pytest.fixture(scope="module")
def config_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz") / "config.toml"


@FUZZ
@given(raw=st.one_of(st.binary(), st.text().map(str.encode), TOML_TEXT.map(str.encode)))
@example(raw=b"x = " + b"9" * 5000)  # tomllib's int() refuses more than 4300 digits: ValueError
@example(raw=b"x = " + b"[" * 500)  # tomllib recurses: RecursionError
@example(raw=b"[stats]\nlisten = 'host:\xc2\xb2'")  # '²'.isdigit() but int('²') fails
def test_load_config_reads_any_bytes(config_file: Path, raw: bytes) -> None:
    config_file.write_bytes(raw)
    try:
        assert isinstance(load_config(config_file), schema.Config)
    except ConfigError as exc:
        config_lines(exc, f"{config_file}: ")


@FUZZ
@given(data=DOCUMENTS)
@example(data={"master": {"poll_interval": 10**400}})  # float(int) overflows
@example(data={"load_table": {"rows": [[10**400, 0, 1]]}})  # math.isfinite(int) overflows
@example(
    data={"plugin": {"a": {"kind": "motd", "te\nxt": 1}}, "cluster": {"c": {"plugins": ["a"]}}}
)
def test_config_reader_reads_any_document(config_file: Path, data: dict) -> None:
    try:
        assert isinstance(parse_config(data, "fuzz.toml"), schema.Config)
    except ConfigError as exc:
        config_lines(exc, "fuzz.toml: ")
    document = toml_document(data)
    assert tomllib.loads(document) is not None  # the test's writer is right
    config_file.write_text(document, encoding="utf-8")
    try:
        assert isinstance(load_config(config_file), schema.Config)
    except ConfigError as exc:
        config_lines(exc, f"{config_file}: ")


# GBrowse's aws_balancer.conf

NUMBERS = st.one_of(
    st.integers().map(str),
    st.floats().map(str),
    st.sampled_from(["1_0", "\u0661", "\u00b2", "1e999", "nan", "-0", "9" * 5000]),
    st.text(max_size=5),
)
LEGACY_VALUES = st.one_of(
    NUMBERS,
    st.lists(NUMBERS, max_size=3).map(" ".join),
    WORDS,
    st.sampled_from(["http://localhost/server-status", "http://[", "http://h/s?x=1&auto"]),
    st.text(max_size=12),
)
LEGACY_KEYS = st.sampled_from(
    [
        "poll_interval",
        "server_status_url",
        "external_ip",
        "instance_type",
        "region",
        "image_id",
        "availability_zone",
        "subnet",
        "security_group",
        "ssh_key",
        "spot_bid",
        "ports",
        "data_snapshots",
        "renderer_threads",
        "secret_key",
    ]
)
LEGACY_LINES = st.one_of(
    st.sampled_from(["[LOAD TABLE]", "[load table]", "[MASTER]", "[SLAVE]", "[CREDENTIALS]"]),
    st.text(max_size=8).map(lambda s: f"[{s}]"),
    st.lists(NUMBERS, min_size=2, max_size=4).map(" ".join),
    st.tuples(LEGACY_KEYS | st.text(max_size=6), LEGACY_VALUES).map(
        lambda kv: f"{kv[0]} = {kv[1]}"
    ),
    st.text(max_size=20).map(lambda s: f"# {s}"),
    st.text(max_size=20),
)
LEGACY_TEXT = st.lists(LEGACY_LINES, max_size=14).map("\n".join)
MINIMAL = "[LOAD TABLE]\n0.1 0 1\n[SLAVE]\n"


@FUZZ
@given(text=st.one_of(st.text(), LEGACY_TEXT, LEGACY_TEXT.map(lambda t: MINIMAL + t)))
@example(text=MINIMAL + "ports = \u00b2")  # isdigit() yet not int()
@example(text=MINIMAL + "ports = " + "0" * 4301)  # int() refuses more than 4300 digits
@example(text="[LOAD TABLE]\ninf 0 1\n[SLAVE]")  # no TOML for inf
@example(text=MINIMAL + "[MASTER]\npoll_interval = 1e308")  # x 60 seconds: inf
@example(text=MINIMAL + "[MASTER]\nserver_status_url = http://[")  # urlsplit: ValueError
@example(text=MINIMAL + "renderer = a\x01b")  # a control character in a `# not converted` line
@example(text=MINIMAL + "[A\x7f]")
def test_import_conf_converts_or_names_the_line(text: str) -> None:
    try:
        output = convert_aws_balancer_conf(text, "aws_balancer.conf")
    except ConfigError as exc:
        config_lines(exc, "aws_balancer.conf")
        return
    # What it writes is a config that loads.
    assert isinstance(parse_config(tomllib.loads(output), "out.toml"), schema.Config)


# Apache's /server-status?auto

STATUS_FIELDS = ["Total Accesses", "BusyWorkers", "IdleWorkers", "Uptime", "ReqPerSec"]
STATUS_VALUES = st.one_of(
    st.integers().map(str),
    st.sampled_from(["", ".0819", "1_000", "\u00b2", " 12 ", "-1", "1e3", "9" * 5000]),
    st.text(max_size=8),
)
STATUS_LINES = st.one_of(
    st.tuples(st.sampled_from(STATUS_FIELDS) | st.text(max_size=6), STATUS_VALUES).map(
        lambda kv: f"{kv[0]}: {kv[1]}"
    ),
    st.text(max_size=20),
)


@FUZZ
@given(text=st.one_of(st.text(), st.lists(STATUS_LINES, max_size=10).map("\n".join)))
def test_server_status_parser_reads_or_says_why(text: str) -> None:
    try:
        status = parse_server_status(text)
    except StatusParseError as exc:
        one_line(exc)
        return
    assert status.total_accesses >= 0
    assert all(v is None or v >= 0 for v in (status.busy_workers, status.idle_workers))


# qstat -f -xml -r

XML_TEXT = st.text(st.characters(exclude_categories=("Cs", "Cc")), max_size=8)
SGE_VALUES = st.one_of(
    st.integers().map(str),
    st.sampled_from(
        [
            "",
            "1-3:1",
            "3-9:2",
            "1,5-7",
            "5-1",
            "1-3:0",
            "1" * 5000,
            "1500M",
            "1.5G",
            "1e999",
            "2026-11-22T00:29:49",
            "all.q@vm",
            "all.q@",
            "qw",
            "hqw",
        ]
    ),
    XML_TEXT,
)
JOB_TAGS = ["JB_job_number", "state", "slots", "tasks", "JB_submission_time", "hard_request"]
QUEUE_TAGS = ["name", "slots_used", "slots_resv", "slots_total", "state"]


def element(tag: str, children: list[ET.Element], text: str, attrs: dict[str, str]) -> ET.Element:
    node = ET.Element(tag, attrs)
    node.text = text
    node.extend(children)
    return node


def node(tags, children=None, attrs=None) -> st.SearchStrategy[ET.Element]:
    return st.builds(
        element,
        st.sampled_from(tags),
        st.just([]) if children is None else children,
        SGE_VALUES,
        st.just({}) if attrs is None else attrs,
    )


ATTRS = st.fixed_dictionaries(
    {},
    optional={
        "state": st.sampled_from(["pending", "running"]) | XML_TEXT,
        "name": st.just("mem_requested") | XML_TEXT,
    },
)
JOBS = node(["job_list"], st.lists(node(JOB_TAGS, attrs=ATTRS), max_size=7), ATTRS)
QUEUES = node(["Queue-List"], st.lists(node(QUEUE_TAGS) | JOBS, max_size=5))
SECTIONS = node(["queue_info", "job_info"], st.lists(QUEUES | JOBS, max_size=3))
PENDING = (
    "<job_info><job_info><job_list state='pending'><JB_job_number>1</JB_job_number>{}"
    "</job_list></job_info></job_info>"
)
QSTAT = node(["job_info", "queue_info"], st.lists(SECTIONS, max_size=2)).map(
    lambda root: ET.tostring(root, encoding="unicode")
)


@FUZZ
@given(text=st.one_of(st.text(), QSTAT))
@example(text="\ud800")  # expat encodes str as UTF-8 first: UnicodeEncodeError
@example(text=PENDING.format("<tasks>" + "1" * 5000 + "</tasks>"))  # int(): 4300 digits at most
@example(text=PENDING.format("<slots>-1</slots>"))  # a negative count of slots
def test_qstat_parser_reads_or_says_why(text: str) -> None:
    try:
        snapshot = parse_qstat(text)
    except SgeParseError as exc:
        one_line(exc)
        return
    assert isinstance(snapshot, QueueSnapshot)
    assert all(job.tasks >= 1 and job.slots >= 0 for job in snapshot.pending)


# EventBridge events from the interruption queue

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)
EVENT_TIMES = st.one_of(
    st.datetimes().map(lambda t: t.isoformat() + "Z"),
    st.datetimes(timezones=st.just(dt.UTC)).map(dt.datetime.isoformat),
    st.sampled_from(["9999-12-31T23:59:00Z", "0001-01-01T00:00:00Z", "2024-05-01T12:00:00"]),
    JSON_VALUES,
)
DETAILS = st.fixed_dictionaries(
    {},
    optional={
        "instance-id": st.sampled_from(["i-0abc", "i-", ""]) | JSON_VALUES,
        "instance-action": st.sampled_from(["terminate", "stop"]) | JSON_VALUES,
        "state": st.sampled_from(["running", "shutting-down"]) | JSON_VALUES,
    },
)
EVENTS = st.fixed_dictionaries(
    {
        "detail-type": st.sampled_from(
            [
                "EC2 Spot Instance Interruption Warning",
                "EC2 Instance Rebalance Recommendation",
                "EC2 Instance State-change Notification",
                "Other",
                "",
            ]
        )
        | JSON_VALUES
    },
    optional={"id": JSON_VALUES, "time": EVENT_TIMES, "detail": DETAILS | JSON_VALUES},
)
BODIES = st.one_of(
    st.text(),
    JSON_VALUES.map(json.dumps),
    EVENTS.map(json.dumps),
    st.one_of(EVENTS.map(json.dumps), st.text()).map(
        lambda message: json.dumps({"Type": "Notification", "Message": message})
    ),
)


@FUZZ
@given(body=BODIES)
@example(body="[" * DEEP)  # json recurses: RecursionError
@example(  # the warning's time + 2 minutes is past year 9999: OverflowError
    body=json.dumps(
        {
            "detail-type": "EC2 Spot Instance Interruption Warning",
            "time": "9999-12-31T23:59:00Z",
            "detail": {"instance-id": "i-0abc"},
        }
    )
)
def test_interruption_event_parser_reads_or_says_why(body: str) -> None:
    try:
        event = parse_event(body)
    except EventError as exc:
        one_line(exc)
        return
    assert isinstance(event, InstanceEvent)
    if event.kind is not EventKind.OTHER:
        assert event.instance_id.startswith("i-")
