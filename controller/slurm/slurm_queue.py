"""Slurm's JSON, read: pure functions, no I/O, no clock.

Two commands give a cluster's load: `squeue --json` lists every job slurmctld still remembers
(state, reason, CPUs, memory asked, times in epoch seconds) and `sinfo --json` every node (state,
CPUs, allocated CPUs). JSON rather than squeue's columns: `%m` prints a memory per CPU and a
memory per node alike, and node lists come compressed (`ip-10-0-1-[5-7]`). Read as Slurm 22.05
writes it (openapi v0.0.38); later releases wrap numbers as {"set", "infinite", "number"} and
give states as lists, which are read too.

Demand counts only pending jobs that more nodes could start: held jobs, jobs waiting for a
dependency or a begin time, and jobs stopped by a limit or an unusable partition are left out.
A pending array counts once per task of its range; its CPUs and memory are per task.

A running job's time limit (minutes; unset or INFINITE: none) from its start time is when Slurm
ends it (partitions' OverTimeLimit aside, NONE by default); a suspended job's clock stops, so it
is left out of the limits.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

from controller.messages import QueueSample

# Pending reasons (prefixes) that new nodes do not end.
NOT_CAPACITY = (
    "JobHeld",
    "Dependency",
    "BeginTime",
    "PartitionDown",
    "PartitionInactive",
    "PartitionNodeLimit",
    "PartitionTimeLimit",
    "Invalid",
    "Assoc",
    "QOS",
    "JobArrayTaskLimit",
)
# Job states in which a job holds its node's CPUs.
RUNNING_STATES = frozenset({"RUNNING", "COMPLETING", "CONFIGURING", "SUSPENDED", "STAGE_OUT"})
# Node states and flags in which a node takes no new job.
UNUSABLE = frozenset(
    {
        "DRAIN",
        "DRAINED",
        "DRAINING",
        "DOWN",
        "FAIL",
        "FAILING",
        "NOT_RESPONDING",
        "MAINTENANCE",
        "RESERVED",
        "POWERED_DOWN",
        "POWER_DOWN",
        "POWERING_DOWN",
        "FUTURE",
        "INVALID",
        "UNKNOWN",
    }
)
BUSY_STATES = frozenset({"ALLOCATED", "MIXED", "COMPLETING"})
# Slurm's 32-bit markers: NO_VAL (0xfffffffe, unset) and INFINITE (0xffffffff); and the year
# (in minutes) 22.05 shows as the limit of a running job that set none in a partition with none.
_NO_VAL = 0xFFFFFFFE
_YEAR_MINUTES = 365 * 24 * 60


class SlurmParseError(ValueError):
    """Slurm's output was not what this module reads; the message says what was wrong."""


@dataclass(frozen=True, slots=True)
class SlurmJob:
    job_id: str  # "12", an array task "12_3", a pending array "12_[4-9]"
    states: frozenset[str]  # PENDING, RUNNING, ... (upper case)
    reason: str  # why it pends ("Resources", "JobHeldUser", ...); "None" when running
    cpus: int  # CPUs per task (all its nodes together)
    tasks: int  # array tasks this record stands for (1 for a plain job)
    mem_mb: float  # memory asked per task, 0 when none was asked
    submitted: float | None  # epoch seconds
    started: float | None
    priority: int = 0  # the scheduler tries higher ones first
    time_limit: float | None = None  # seconds (squeue gives minutes); None when unlimited

    @property
    def pending(self) -> bool:
        return "PENDING" in self.states

    @property
    def running(self) -> bool:
        return bool(self.states & RUNNING_STATES)

    @property
    def waits_for_capacity(self) -> bool:
        """Pending, and for nothing that new nodes would not bring."""
        return self.pending and not self.reason.startswith(NOT_CAPACITY)


@dataclass(frozen=True, slots=True)
class SlurmNode:
    name: str
    states: frozenset[str]  # the state and its flags (IDLE, ALLOCATED, DRAIN, DYNAMIC_NORM, ...)
    cpus: int
    alloc_cpus: int

    @property
    def busy(self) -> bool:
        """A CPU is allocated, or a job is still completing there."""
        return self.alloc_cpus > 0 or bool(self.states & BUSY_STATES)

    @property
    def takes_jobs(self) -> bool:
        return not self.states & UNUSABLE


def parse_squeue(text: str) -> tuple[SlurmJob, ...]:
    """The jobs in `squeue --json` output, in its order."""
    return tuple(_job(item) for item in _list(_document(text, "squeue"), "jobs", "squeue"))


def parse_sinfo(text: str) -> tuple[SlurmNode, ...]:
    """The nodes in `sinfo --json` output (each node once)."""
    nodes: dict[str, SlurmNode] = {}
    for item in _list(_document(text, "sinfo"), "nodes", "sinfo"):
        node = _node(item)
        nodes.setdefault(node.name, node)
    return tuple(nodes.values())


def queue_sample(
    jobs: tuple[SlurmJob, ...], nodes: tuple[SlurmNode, ...], *, at: float, now: float
) -> QueueSample:
    """The demand in Slurm's jobs and nodes. `now` is the wall clock in epoch seconds, only for
    how long jobs have waited or run; `at` is the loop time of the reading."""
    # In the order the scheduler tries them: by priority, then by age.
    waiting = sorted(
        (job for job in jobs if job.waits_for_capacity),
        key=lambda job: (-job.priority, job.submitted or 0.0),
    )
    waited = [_since(job.submitted, now) for job in waiting]
    known = [w for w in waited if w != math.inf]
    running = [job for job in jobs if job.running]
    busy = tuple(sorted(n.name for n in nodes if n.busy))
    return QueueSample(
        at=at,
        pending_jobs=sum(job.tasks for job in waiting),
        pending_slots=sum(job.tasks * job.cpus for job in waiting),
        running_jobs=len(running),
        oldest_pending_seconds=max(known, default=0.0),
        pending_mem_mb=sum(job.tasks * job.mem_mb for job in waiting),
        busy_hosts=busy,
        idle_hosts=tuple(sorted({n.name for n in nodes} - set(busy))),
        source="slurm",
        waiting=tuple(
            (job.job_id, w, job.cpus, job.tasks) for job, w in zip(waiting, waited, strict=True)
        ),
        free_slots=sum(max(0, n.cpus - n.alloc_cpus) for n in nodes if n.takes_jobs),
        running=tuple(
            (job.job_id, _since(job.started, now, unknown=0.0), job.cpus) for job in running
        ),
        running_limits=tuple(
            (job.job_id, max(0.0, job.time_limit - _since(job.started, now, unknown=0.0)))
            for job in running
            if job.time_limit is not None and "SUSPENDED" not in job.states
        ),
    )


def count_tasks(spec: str) -> int:
    """How many tasks an array range names: `1-5` is 5, `1-9:2` is 5, `1,3,5-7` is 5; a
    throttle (`1-5%2`) limits how many run at once, not how many there are."""
    total = 0
    for part in spec.partition("%")[0].split(","):
        match = re.fullmatch(r"\s*(\d{1,18})(?:-(\d{1,18})(?::(\d{1,18}))?)?\s*", part)
        if match is None:
            raise SlurmParseError(f"not an array task range: {spec!r}")
        first = int(match.group(1))
        last = int(match.group(2) or first)
        step = int(match.group(3) or 1)
        if last < first or step < 1:
            raise SlurmParseError(f"not an array task range: {spec!r}")
        total += (last - first) // step + 1
    return total


def find_node(nodes: tuple[SlurmNode, ...], name: str) -> SlurmNode | None:
    """The node called `name`, if Slurm lists it."""
    return next((n for n in nodes if n.name == name), None)


# JSON helpers


def _document(text: str, command: str) -> Mapping[str, object]:
    try:
        document = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise SlurmParseError(f"{command} --json output is not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise SlurmParseError(f"{command} --json output is not a JSON object")
    errors = document.get("errors") or []
    if errors:
        said = "; ".join(_error_text(e) for e in errors) if isinstance(errors, list) else errors
        raise SlurmParseError(f"{command} --json reported errors: {said}")
    return document


def _error_text(error: object) -> str:
    if isinstance(error, dict):
        return str(error.get("error") or error.get("description") or error)
    return str(error)


def _list(document: Mapping[str, object], key: str, command: str) -> list[Mapping[str, object]]:
    items = document.get(key)
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise SlurmParseError(f"{command} --json output has no list of objects under {key!r}")
    return items


def _job(item: Mapping[str, object]) -> SlurmJob:
    job_id = _count(item, "job_id", "a job")
    what = f"job {job_id}"
    array_job = _count(item, "array_job_id", what, default=0)
    task = _optional_count(item, "array_task_id", what)
    spec = _string(item, "array_task_string", what)
    tasks = 1
    if array_job and task is not None:
        job_name = f"{array_job}_{task}"
    elif array_job and spec:
        job_name, tasks = f"{array_job}_[{spec}]", count_tasks(spec)
    else:
        job_name = str(job_id)
    cpus = _count(item, "cpus", what, default=1)
    per_node = _optional_count(item, "memory_per_node", what) or 0
    per_cpu = _optional_count(item, "memory_per_cpu", what) or 0
    nodes = _count(item, "node_count", what, default=1)
    return SlurmJob(
        job_id=job_name,
        states=_states(item, "job_state", what),
        reason=_string(item, "state_reason", what),
        cpus=cpus,
        tasks=tasks,
        mem_mb=float(per_node * max(1, nodes) if per_node else per_cpu * cpus),
        submitted=_time(item, "submit_time", what),
        started=_time(item, "start_time", what),
        priority=_count(item, "priority", what, default=0),
        time_limit=_minutes(item, "time_limit", what),
    )


def _node(item: Mapping[str, object]) -> SlurmNode:
    name = _string(item, "name", "a node")
    if not name:
        raise SlurmParseError("a node in sinfo --json has no name")
    what = f"node {name}"
    return SlurmNode(
        name=name,
        states=_states(item, "state", what) | _states(item, "state_flags", what),
        cpus=_count(item, "cpus", what),
        alloc_cpus=_count(item, "alloc_cpus", what, default=0),
    )


def _optional_count(item: Mapping[str, object], key: str, what: str) -> int | None:
    """A whole number >= 0, or None when absent, null or marked unset."""
    value = item.get(key)
    if isinstance(value, dict):  # v0.0.39+: {"set": true, "infinite": false, "number": 5}
        if not value.get("set", True) or value.get("infinite"):
            return None
        value = value.get("number")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise SlurmParseError(f"{what}: {key} is not a whole number >= 0: {value!r}")
    return value


def _count(item: Mapping[str, object], key: str, what: str, default: int | None = None) -> int:
    value = _optional_count(item, key, what)
    if value is None:
        if default is None:
            raise SlurmParseError(f"{what}: {key} is missing")
        return default
    return value


def _time(item: Mapping[str, object], key: str, what: str) -> float | None:
    value = _optional_count(item, key, what)
    return float(value) if value else None  # 0: not yet


def _minutes(item: Mapping[str, object], key: str, what: str) -> float | None:
    """A limit in minutes as seconds; None when unset or INFINITE (22.05 prints null or a year,
    23.02+ {"set": false} or {"infinite": true}; older ones may print Slurm's raw markers)."""
    try:
        value = _optional_count(item, key, what)
    except SlurmParseError:
        return None  # an odd limit costs at most a spared launch, never the queue sensor
    if value is None or value == _YEAR_MINUTES or value >= _NO_VAL:
        return None
    return value * 60.0


def _string(item: Mapping[str, object], key: str, what: str) -> str:
    value = item.get(key, "")
    if value is None:
        return ""
    if not isinstance(value, str):
        raise SlurmParseError(f"{what}: {key} is not a string: {value!r}")
    return value


def _states(item: Mapping[str, object], key: str, what: str) -> frozenset[str]:
    value = item.get(key)
    if value is None:
        return frozenset()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise SlurmParseError(f"{what}: {key} is not a state or a list of them: {value!r}")
    return frozenset(v.upper() for v in value)


def _since(moment: float | None, now: float, unknown: float = math.inf) -> float:
    return unknown if moment is None else max(0.0, now - moment)
