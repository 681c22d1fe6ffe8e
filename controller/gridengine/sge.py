"""Grid Engine's text, read and written: pure functions, no I/O, no clock.

One command gives everything a cluster's load needs: `qstat -f -xml -r -u '*'` lists each queue
instance (queue@host, slots used) with its running jobs, and every pending job with its slots, its
array task range and its hard resource requests (`-r`), and every running task with its start
time, slots (a parallel job is listed under each of its queue instances: its slots add up) and
hard requests: an `h_rt` among them (seconds, or h:m:s) is when Grid Engine kills the task (a
queue's own h_rt is not shown there, so it is not counted).
`parse_qstat` reads that into a QueueSnapshot; `queue_sample` turns a snapshot into the
QueueSample the policy reads.

Demand counts only jobs that wait for capacity: held (`h`) and error (`E`) jobs never start by
adding nodes, so they are left out. An array job counts once per pending task, and a consumable
such as `mem_requested` is per slot (Grid Engine's rule for non-JOB consumables), so a pending
job asks for slots x tasks x request.

The writers build what `qconf` reads from a file: an exec host (`qconf -Ae`) and the complex list
with the `mem_requested` consumable (`qconf -Mc`), as the seed's Segway setup needs.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from controller.config.plugins import MEM_CONSUMABLE
from controller.messages import QueueSample

# `qconf -sc` columns: name shortcut type relop requestable consumable default urgency.
# Segway asks for `-l mem_requested=...`; the host's capacity is its complex_values entry.
MEM_CONSUMABLE_LINE = f"{MEM_CONSUMABLE} {MEM_CONSUMABLE} MEMORY <= YES YES 0 0"

_MEMORY = re.compile(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([kKmMgGtT]?)\s*")
# Grid Engine's memory suffixes: lower case are powers of 1000, upper case powers of 1024.
_FACTORS = {
    "": 1,
    "k": 1000,
    "K": 1024,
    "m": 1000**2,
    "M": 1024**2,
    "g": 1000**3,
    "G": 1024**3,
    "t": 1000**4,
    "T": 1024**4,
}
MIB = 1024**2
# [[hours:]minutes:]seconds, each part possibly empty (`::30`) or, for seconds, fractional.
_DURATION = re.compile(r"\s*(?:\d{0,18}:){0,2}(?:\d{1,18}(?:\.\d{1,9})?)?\s*")


class SgeParseError(ValueError):
    """Grid Engine's output was not what this module reads; the message says what was wrong."""


@dataclass(frozen=True, slots=True)
class PendingJob:
    job_id: str
    state: str  # qw, hqw, Eqw, Rq, ...
    slots: int  # slots per task (a parallel job's PE slots)
    tasks: int  # pending array tasks (1 for a plain job)
    mem_bytes: float  # the consumable request per slot, 0 when none
    submitted: dt.datetime | None  # Grid Engine's local time, naive

    @property
    def waits_for_capacity(self) -> bool:
        """False for held and error jobs: new nodes would not start them."""
        return "h" not in self.state and "E" not in self.state


@dataclass(frozen=True, slots=True)
class QueueInstance:
    queue: str
    host: str
    slots_used: int
    slots_reserved: int
    slots_total: int
    state: str  # "" when fine; letters such as a (alarm), u (unknown), d (disabled)


@dataclass(frozen=True, slots=True)
class RunningTask:
    job_id: str
    task: str  # the array task id, "" for a plain job
    slots: int  # summed over the queue instances it spans (a parallel job's hosts)
    started: dt.datetime | None  # Grid Engine's local time, naive
    limit_seconds: float | None = None  # its hard run-time limit (-l h_rt), None when none


@dataclass(frozen=True, slots=True)
class QueueSnapshot:
    pending: tuple[PendingJob, ...]
    running: frozenset[tuple[str, str]]  # (job id, task id or ""): each running task once
    instances: tuple[QueueInstance, ...]
    tasks: tuple[RunningTask, ...] = ()  # the running ones, in the order qstat lists them

    def busy_hosts(self) -> tuple[str, ...]:
        """Hosts with a slot used or reserved in any queue instance, sorted."""
        busy = {i.host for i in self.instances if i.slots_used + i.slots_reserved > 0}
        return tuple(sorted(busy))

    def idle_hosts(self) -> tuple[str, ...]:
        """Hosts whose every queue instance is empty, sorted (an unreachable host counts)."""
        busy = set(self.busy_hosts())
        return tuple(sorted({i.host for i in self.instances} - busy))


def parse_qstat(xml_text: str, *, consumable: str = MEM_CONSUMABLE) -> QueueSnapshot:
    """Read `qstat -f -xml -r -u '*'` output."""
    try:
        root = ET.fromstring(xml_text)
    except (ET.ParseError, UnicodeEncodeError) as exc:  # expat encodes str to UTF-8 first
        raise SgeParseError(f"qstat output is not XML: {exc}") from None
    if root.tag != "job_info":
        raise SgeParseError(f"qstat XML starts with <{root.tag}>, expected <job_info>")
    instances = []
    running: dict[tuple[str, str], RunningTask] = {}
    for queue in root.iterfind("./queue_info/Queue-List"):
        instances.append(_queue_instance(queue))
        for job in queue.iterfind("job_list"):
            _add_running(running, job)
    # Without -f, running jobs sit directly under queue_info.
    for job in root.iterfind("./queue_info/job_list"):
        _add_running(running, job)
    pending = tuple(
        _pending_job(job, consumable)
        for job in root.iterfind("./job_info/job_list")
        if job.get("state") == "pending"
    )
    return QueueSnapshot(
        pending=pending,
        running=frozenset(running),
        instances=tuple(instances),
        tasks=tuple(running.values()),
    )


def queue_sample(snapshot: QueueSnapshot, *, at: float, now: dt.datetime) -> QueueSample:
    """The demand in a snapshot. `now` is the wall clock in Grid Engine's (local, naive) time,
    only used for how long the oldest job has waited; `at` is the loop time of the reading."""
    waiting = [job for job in snapshot.pending if job.waits_for_capacity]
    submitted = [job.submitted for job in waiting if job.submitted is not None]
    oldest = max(0.0, (now - min(submitted)).total_seconds()) if submitted else 0.0
    waited = [  # a job whose submit time is not shown is never held back (math.inf)
        max(0.0, (now - job.submitted).total_seconds()) if job.submitted is not None else math.inf
        for job in waiting
    ]
    running = tuple(
        (
            f"{t.job_id}.{t.task}" if t.task else t.job_id,
            max(0.0, (now - t.started).total_seconds()) if t.started is not None else 0.0,
            t,
        )
        for t in snapshot.tasks
    )
    return QueueSample(
        at=at,
        pending_jobs=sum(job.tasks for job in waiting),
        pending_slots=sum(job.tasks * job.slots for job in waiting),
        running_jobs=len(snapshot.running),
        oldest_pending_seconds=oldest,
        pending_mem_mb=sum(job.tasks * job.slots * job.mem_bytes for job in waiting) / MIB,
        busy_hosts=snapshot.busy_hosts(),
        idle_hosts=snapshot.idle_hosts(),
        source="sge",
        # For QueuePolicy's sizing: the jobs in qstat's (the scheduler's) order, and the free
        # slots of the queue instances that take jobs (no state letter: not disabled, alarmed,
        # unknown, suspended or in error).
        waiting=tuple(
            (job.job_id, w, job.slots, job.tasks) for job, w in zip(waiting, waited, strict=True)
        ),
        free_slots=sum(
            max(0, i.slots_total - i.slots_used - i.slots_reserved)
            for i in snapshot.instances
            if not i.state
        ),
        # and the running tasks, as (job id[.task], seconds running, slots), and the time left
        # to those with an h_rt (a task whose start is not shown gets all of it)
        running=tuple((key, age, t.slots) for key, age, t in running),
        running_limits=tuple(
            (key, max(0.0, t.limit_seconds - age))
            for key, age, t in running
            if t.limit_seconds is not None
        ),
    )


def parse_memory(text: str) -> float:
    """Bytes in a Grid Engine memory value such as `1500M`, `1.5G`, `512k` or `1048576`."""
    match = _MEMORY.fullmatch(text)
    if match is None:
        raise SgeParseError(f"not a Grid Engine memory value: {text!r}")
    return float(match.group(1)) * _FACTORS[match.group(2)]


def parse_duration(text: str) -> float | None:
    """Seconds in a Grid Engine time value such as `600`, `0:10:0` or `1:30`; None for
    `INFINITY` (no limit)."""
    if text.strip().upper() in ("INFINITY", "INFINITE"):
        return None
    if _DURATION.fullmatch(text) is None or not any(c.isdigit() for c in text):
        raise SgeParseError(f"not a Grid Engine time value: {text!r}")
    seconds = 0.0
    for part in text.strip().split(":"):
        seconds = seconds * 60 + (float(part) if part else 0.0)
    return seconds


def format_memory(num_bytes: float) -> str:
    """Bytes as whole mebibytes in Grid Engine's notation (`4096M`), rounded down."""
    return f"{int(num_bytes // MIB)}M"


def count_tasks(spec: str) -> int:
    """How many tasks an array range names: `1-3:1` is 3, `3-9:2` is 4, `1,5-7` is 4."""
    total = 0
    for part in spec.split(","):
        # At most 18 digits a number: task ids are far smaller, and int() refuses over 4300.
        match = re.fullmatch(r"\s*(\d{1,18})(?:-(\d{1,18})(?::(\d{1,18}))?)?\s*", part)
        if match is None:
            raise SgeParseError(f"not an array task range: {spec!r}")
        first = int(match.group(1))
        last = int(match.group(2) or first)
        step = int(match.group(3) or 1)
        if last < first or step < 1:
            raise SgeParseError(f"not an array task range: {spec!r}")
        total += (last - first) // step + 1
    return total


def ec2_hostname(address: str) -> str:
    """The name EC2 gives a private IPv4 address: 10.0.1.23 -> ip-10-0-1-23."""
    try:
        ip = ipaddress.IPv4Address(address)
    except ValueError:
        raise ValueError(f"not an IPv4 address: {address!r}") from None
    return "ip-" + str(ip).replace(".", "-")


def exec_host_text(hostname: str, complex_values: Mapping[str, str]) -> str:
    """An exec host definition for `qconf -Ae FILE` (and `-Me`)."""
    values = ",".join(f"{name}={value}" for name, value in complex_values.items()) or "NONE"
    fields = {
        "hostname": hostname,
        "load_scaling": "NONE",
        "complex_values": values,
        "user_lists": "NONE",
        "xuser_lists": "NONE",
        "projects": "NONE",
        "xprojects": "NONE",
        "usage_scaling": "NONE",
        "report_variables": "NONE",
    }
    return "".join(f"{key:<22}{value}\n" for key, value in fields.items())


def complex_names(qconf_sc: str) -> set[str]:
    """The complex attribute names in `qconf -sc` output."""
    return {
        line.split()[0]
        for line in qconf_sc.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    }


def with_consumable(qconf_sc: str, line: str = MEM_CONSUMABLE_LINE) -> str | None:
    """`qconf -sc` output with the consumable `line` added, for `qconf -Mc FILE`; None when an
    attribute of that name exists already (it is left as the operator defined it)."""
    name = line.split()[0]
    if name in complex_names(qconf_sc):
        return None
    return qconf_sc.rstrip("\n") + "\n" + line + "\n"


def list_names(qconf_list: str) -> set[str]:
    """Names from `qconf -sel`, `-sh`, `-ss` (one a line); Grid Engine's "no ... defined"
    messages give an empty set."""
    return {
        line.strip() for line in qconf_list.splitlines() if line.strip() and " " not in line.strip()
    }


# XML helpers


def _queue_instance(element: ET.Element) -> QueueInstance:
    name = _text(element, "name")
    queue, sep, host = name.partition("@")
    if not sep or not host:
        raise SgeParseError(f"queue instance name {name!r} is not queue@host")
    return QueueInstance(
        queue=queue,
        host=host,
        slots_used=_int(element, "slots_used"),
        slots_reserved=_int(element, "slots_resv", default=0),
        slots_total=_int(element, "slots_total"),
        state=_optional(element, "state"),
    )


def _add_running(running: dict[tuple[str, str], RunningTask], element: ET.Element) -> None:
    """A running task as one queue instance lists it; a parallel job's slots on each add up."""
    key = (_text(element, "JB_job_number"), _optional(element, "tasks"))
    slots = _int(element, "slots", default=1)
    seen = running.get(key)
    if seen is not None:
        running[key] = RunningTask(
            key[0], key[1], seen.slots + slots, seen.started, seen.limit_seconds
        )
    else:
        started = _time(_optional(element, "JAT_start_time"))
        limit = _limit(_hard_request(element.iterfind("hard_request"), "h_rt"))
        running[key] = RunningTask(key[0], key[1], slots, started, limit)


def _limit(text: str | None) -> float | None:
    """A running task's h_rt in seconds; one this parser cannot read counts as no limit, so
    an odd value costs at most a launch the rule would have spared, never the queue sensor."""
    if text is None:
        return None
    try:
        return parse_duration(text)
    except SgeParseError:
        return None


def _pending_job(element: ET.Element, consumable: str) -> PendingJob:
    tasks = _optional(element, "tasks")
    return PendingJob(
        job_id=_text(element, "JB_job_number"),
        state=_optional(element, "state"),
        slots=_int(element, "slots", default=1),
        tasks=count_tasks(tasks) if tasks else 1,
        mem_bytes=_request(element.iterfind("hard_request"), consumable),
        submitted=_time(_optional(element, "JB_submission_time")),
    )


def _request(requests: Iterable[ET.Element], name: str) -> float:
    text = _hard_request(requests, name)
    return 0.0 if text is None else parse_memory(text)


def _hard_request(requests: Iterable[ET.Element], name: str) -> str | None:
    for request in requests:
        if request.get("name") == name:
            return request.text or ""
    return None


def _time(text: str) -> dt.datetime | None:
    if not text:
        return None
    try:
        return dt.datetime.fromisoformat(text).replace(tzinfo=None)
    except ValueError:
        raise SgeParseError(f"not a qstat time: {text!r}") from None


def _text(element: ET.Element, tag: str) -> str:
    child = element.find(tag)
    if child is None or not (child.text or "").strip():
        raise SgeParseError(f"<{element.tag}> has no <{tag}>")
    return child.text.strip()


def _optional(element: ET.Element, tag: str) -> str:
    child = element.find(tag)
    return "" if child is None else (child.text or "").strip()


def _int(element: ET.Element, tag: str, default: int | None = None) -> int:
    text = _optional(element, tag)
    if not text and default is not None:
        return default
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:  # every one is a count of slots
        raise SgeParseError(f"<{element.tag}><{tag}> is not a whole number >= 0: {text!r}")
    return value
