"""A batch cluster seen from outside: /status, /metrics and `controller status` in cluster mode.

The queue comes from the real QueueSampler reading a real Grid Engine (tests.harness.gridengine)
whose first qstats fail, served by the Stats actor on a loopback port; the nodes by state come
from the real node pool (SpotPool with the node profile) on SimCloud in loop time, with the test
playing QueueSampler and ClusterNodeSetup as tests/test_node_pool.py does.
"""

from __future__ import annotations

import asyncio
import json

from prometheus_client.parser import text_string_to_metric_families

from actors.queue_sampler import QueueSampler
from actors.stats import Stats
from controller.config.schema import Config, StatsSection
from controller.messages import SensorLost
from tests.actor_runner import running
from tests.harness.gridengine import GridEngine
from tests.test_node_pool import Cluster, hostname, looptime, now, until
from tests.test_stats import Running, config, fetch
from tests.test_stats import until as until_on_bus


def metric_values(text: str) -> dict[tuple[str, tuple], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def controller_status(capsys, url: str, **options) -> tuple[int, str, str]:
    from controller.commands.status import status_command

    capsys.readouterr()  # drop the runtime's log lines so far
    code = await asyncio.to_thread(status_command, url, None, **options)
    out, err = capsys.readouterr()
    return code, out, err


async def test_the_queue_after_a_failed_qstat_on_status_metrics_and_the_command(
    ge: GridEngine, capsys
):
    client = ge.client(timeout=5)
    client.cell = "no-such-cell"  # qstat cannot find the qmaster: the sensor is lost
    sampler = lambda bus: QueueSampler(  # noqa: E731
        config=Config(), bus=bus, client=client, poll_interval=0.3
    )
    async with Running(config(), sampler) as run:
        await until_on_bus(run.bus, lambda: not run.stats.state.sensor_ok)
        doc = json.loads((await fetch(run.url + "/status"))[1])
        assert doc["mode"] == "cluster" and doc["sensor"]["ok"] is False
        assert "qstat -f -xml -r -u *" in doc["sensor"]["reason"]
        metrics = metric_values((await fetch(run.url + "/metrics"))[1])
        assert metrics[("controller_sensor_ok", ())] == 0
        code, out, err = await controller_status(capsys, run.url)
        assert (code, err) == (0, "")
        assert out.splitlines()[1].startswith("queue    ? (no queue reading yet)   SENSOR LOST ")
        code, out, _ = await controller_status(capsys, run.url, nagios=True)
        assert code == 1 and out.count("\n") == 1
        assert out.startswith("CONTROLLER WARNING - queue sensor lost for ")

        # The master has 2G of mem_requested: one 1500M job runs, two wait.
        for _ in range(3):
            ge.run(
                "qsub", "-b", "y", "-o", "/dev/null", "-e", "/dev/null",
                "-l", "mem_requested=1500M", "sleep", "60",
            )  # fmt: skip
        client.cell = ge.env["SGE_CELL"]

        def settled() -> bool:
            queue = run.stats.state.queue
            return run.stats.state.sensor_ok and queue is not None and queue.running_jobs == 1

        await until_on_bus(run.bus, settled, timeout=30)
        doc = json.loads((await fetch(run.url + "/status"))[1])
        metrics = metric_values((await fetch(run.url + "/metrics"))[1])
        code, text, err = await controller_status(capsys, run.url)
        json_code, json_out, _ = await controller_status(capsys, run.url, as_json=True)
        nagios_code, nagios_out, _ = await controller_status(capsys, run.url, nagios=True)

    assert doc["sensor"]["ok"] is True and doc["sensor"]["reason"] == ""
    queue = doc["queue"]
    assert (queue["pending_jobs"], queue["pending_slots"], queue["running_jobs"]) == (2, 2, 1)
    assert queue["pending_mem_mb"] == 3000 and queue["source"] == "sge"
    assert 0 <= queue["oldest_pending_seconds"] < 60
    assert metrics[("controller_sensor_ok", ())] == 1
    assert metrics[("controller_queue_pending_jobs", ())] == 2
    assert metrics[("controller_queue_pending_slots", ())] == 2
    assert metrics[("controller_queue_running_jobs", ())] == 1
    assert metrics[("controller_queue_oldest_pending_seconds", ())] >= 0
    for state in ("booting", "setting_up", "ready", "draining"):
        assert metrics[("controller_nodes", (("state", state),))] == 0

    assert (code, err) == (0, "")
    lines = text.splitlines()
    assert lines[1].startswith("queue    2 jobs pending (2 slots), 1 running, oldest waited ")
    assert lines[1].endswith("   sensor ok")
    assert lines[2].startswith("nodes    band ?   desired ?   ready 0   setting up 0")
    assert "req/s" not in text and "slaves" not in text

    assert json_code == 0
    assert json.loads(json_out)["queue"]["running_jobs"] == 1

    assert nagios_code == 0 and nagios_out.count("\n") == 1
    assert nagios_out.startswith("CONTROLLER OK - gbrowse: ")
    assert "2 jobs pending (2 slots), 1 running" in nagios_out
    assert "| pending_jobs=2 pending_slots=2 running_jobs=1 oldest_pending=" in nagios_out


def appear_in_order(expected: list[dict], seen: list[dict]) -> bool:
    it = iter(seen)
    return all(any(counts == want for counts in it) for want in expected)


def counts(booting=0, setting_up=0, ready=0, draining=0) -> dict[str, int]:
    return {"booting": booting, "setting_up": setting_up, "ready": ready, "draining": draining}


@looptime
async def test_nodes_by_state_follow_the_node_pool() -> None:
    c = Cluster(idle_seconds=30.0)
    stats = Stats(Config(stats=StatsSection(listen="")), bus=c.bus, cluster="small")
    seen: list[dict[str, int]] = []
    rows: dict[str, set[str]] = {}

    def record(msg: object) -> None:  # after Stats' own listener: the state has folded msg
        seen.append(stats.state.node_counts())
        for row in stats.state.snapshot(now(), 0.0)["slaves"]:
            rows.setdefault(row["instance_id"], set()).add(row["state"])

    async with running(stats, c.pool):
        c.bus.listen(record)
        c.bus.publish(SensorLost(at=now(), since=now(), reason="qstat failed", source="sge"))
        c.queue(pending=2)
        await until(30)
        a, b = c.live()
        c.ready(a)
        await until(35)
        c.ready(b)
        c.queue(busy=(hostname(a),), idle=(hostname(b),))  # b goes after idle_seconds
        await until(120)
        snap = stats.state.snapshot(now(), 0.0)
        metrics = metric_values(stats.metrics.render().decode())

    assert appear_in_order(
        [
            counts(booting=2),  # launched
            counts(setting_up=2),  # EC2 says they run: ClusterNodeSetup logs in
            counts(setting_up=1, ready=1),
            counts(ready=2),
            counts(ready=1, draining=1),  # b idle for idle_seconds
            counts(ready=1),
        ],
        seen,
    ), seen
    assert rows[a.instance_id] >= {"booting", "setting up", "ready"}
    assert snap["mode"] == "cluster"
    assert snap["sensor"]["ok"] is True  # the queue's samples after the SensorLost
    assert snap["nodes"] == counts(ready=1) and snap["ready"] == 1
    assert metrics[("controller_nodes", (("state", "ready"),))] == 1
    assert metrics[("controller_nodes", (("state", "draining"),))] == 0
    assert metrics[("controller_queue_running_jobs", ())] == 1
