"""deploy/: the Prometheus alert rules pass `promtool check rules` and their own unit tests
(`promtool test rules`), and every metric the rules and the Grafana dashboard query is one the
controller's registry really exports (a render farm's or a batch cluster's, which adds the queue).

promtool comes with Debian's `prometheus` package, which scripts/test installs; without it these
tests fail (they never skip).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from controller.status.fleetstate import FleetState
from controller.status.metrics import Metrics

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "deploy" / "prometheus" / "controller-rules.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "controller-rules.test.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "controller.json"
# the alerts issue 13 asks for, and the two the operator needs besides
ALERTS = {
    "ControllerDown",
    "ControllerSensorLost",
    "ControllerActorRestarting",
    "ControllerActorDown",
    "ControllerFleetBelowBand",
    "ControllerBudgetCapReached",
    "ControllerSpotInterruptions",
    "ControllerEc2Errors",
    "ControllerDailySpendHigh",
    # cluster mode (issue 16): qstat lost, and jobs waiting with nothing to run them coming
    "ControllerQueueSensorLost",
    "ControllerQueueStuck",
}
METRIC = re.compile(r"\b(?:controller|process|python)_[a-z0-9_]+")
SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "info": ("_info",),
    "gauge": ("",),
}


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is missing: apt-get install prometheus (scripts/test installs it)")
    return subprocess.run(
        [path, *args], capture_output=True, text=True, timeout=120, cwd=cwd, check=False
    )


def exported_names(mode: str | None = None) -> set[str]:
    """Every sample name /metrics can carry, from the registry's own families: a render farm's
    ("gbrowse"), a batch cluster's ("cluster", which adds the queue), or either (None)."""
    names = set()
    for each in ("gbrowse", "cluster") if mode is None else (mode,):
        metrics = Metrics(FleetState(mode=each), time.monotonic)
        for family in metrics.registry.collect():
            names.update(family.name + suffix for suffix in SUFFIXES.get(family.type, ("",)))
    return names


def unknown_metrics(exprs: list[str]) -> dict[str, list[str]]:
    """Each query naming a metric /metrics never carries, with those names."""
    exported = exported_names()
    return {
        expr: sorted(set(METRIC.findall(expr)) - exported)
        for expr in exprs
        if set(METRIC.findall(expr)) - exported
    }


def rule_exprs() -> dict[str, str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {rule["alert"]: rule["expr"] for group in groups for rule in group["rules"]}


def dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            exprs.append(variable["definition"])
    return exprs


def test_rules_pass_promtool_check():
    done = promtool("check", "rules", str(RULES), cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in done.stdout


def test_rules_pass_their_unit_tests():
    done = promtool("test", "rules", RULE_TESTS.name, cwd=RULE_TESTS.parent)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_the_unit_tests_catch_a_changed_rule(tmp_path):
    """The same tests against a rule that waits 20 minutes instead of 15 fail."""
    text = RULES.read_text()
    assert text.count("for: 15m") == 1
    (tmp_path / RULES.name).write_text(text.replace("for: 15m", "for: 20m"))
    shutil.copy(RULE_TESTS, tmp_path)
    done = promtool("test", "rules", RULE_TESTS.name, cwd=tmp_path)
    assert done.returncode != 0
    assert "ControllerFleetBelowBand" in done.stdout + done.stderr


def test_every_alert_asked_for_is_there_and_tested():
    assert set(rule_exprs()) == ALERTS
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    fired = {
        case["alertname"]
        for test in tests
        for case in test["alert_rule_test"]
        if case.get("exp_alerts")
    }
    assert fired == ALERTS


def test_rules_query_only_exported_metrics():
    exported = exported_names()
    assert "controller_ready" in exported and "controller_launches_total" in exported
    assert "controller_nodes" in exported and "controller_queue_pending_jobs" in exported
    assert unknown_metrics(list(rule_exprs().values())) == {}


def test_dashboard_queries_only_exported_metrics():
    exprs = dashboard_exprs()
    assert len(exprs) >= 15
    assert all(METRIC.findall(expr) for expr in exprs)
    assert unknown_metrics(exprs) == {}


def test_a_misspelt_queue_metric_is_caught():
    """The check above fails on a name the registry does not export, in the queue row too."""
    exprs = [e.replace("queue_pending_jobs", "queue_pending_job") for e in dashboard_exprs()]
    assert set().union(*unknown_metrics(exprs).values()) == {"controller_queue_pending_job"}
    exprs = [e.replace("controller_nodes{", "controller_node{") for e in rule_exprs().values()]
    assert set().union(*unknown_metrics(exprs).values()) == {"controller_node"}


def test_the_queue_row_shows_every_cluster_metric():
    """Each metric only a batch cluster exports is on the dashboard, under "Queue (cluster
    mode)", and the alerts read the queue and the nodes."""
    cluster_only = exported_names("cluster") - exported_names("gbrowse")
    assert cluster_only >= {"controller_queue_oldest_pending_seconds", "controller_nodes"}
    panels = json.loads(DASHBOARD.read_text())["panels"]
    row = next(i for i, p in enumerate(panels) if p["title"] == "Queue (cluster mode)")
    end = next(i for i, p in enumerate(panels) if i > row and p["type"] == "row")
    exprs = [t["expr"] for p in panels[row + 1 : end] for t in p["targets"]]
    shown = {name for expr in exprs for name in METRIC.findall(expr)}
    assert cluster_only <= shown, sorted(cluster_only - shown)
    read = {n for expr in rule_exprs().values() for n in METRIC.findall(expr)}
    assert {"controller_queue_oldest_pending_seconds", "controller_nodes"} <= read


def test_dashboard_queries_are_valid_promql(tmp_path):
    """promtool parses each query (the $instance variable filled in) as a recording rule."""
    rules = [
        {"record": f"dashboard:query_{i}", "expr": expr.replace("$instance", ".*")}
        for i, expr in enumerate(dashboard_exprs())
        if not expr.startswith("label_values(")
    ]
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    done = promtool("check", "rules", str(path), cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr


def test_dashboard_is_importable():
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "spot-controller" and dashboard["title"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    # no two panels overlap on Grafana's 24-column grid
    cells = [
        (x, y)
        for p in dashboard["panels"]
        for x in range(p["gridPos"]["x"], p["gridPos"]["x"] + p["gridPos"]["w"])
        for y in range(p["gridPos"]["y"], p["gridPos"]["y"] + p["gridPos"]["h"])
    ]
    assert len(cells) == len(set(cells)) and max(x for x, _ in cells) < 24
    for panel in dashboard["panels"]:
        assert panel["title"]
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            assert panel["targets"]


async def test_the_budget_cap_is_exported_and_follows_a_reload(tmp_path):
    """ControllerBudgetCapReached compares the cost with controller_max_cost_per_hour: NaN (never
    firing) without a cap, the config's cap with one, the new one after SIGHUP."""
    from actors.stats import Stats
    from controller.config.reader import load_config
    from controller.runtime.bus import Bus

    def cap_line(stats: Stats) -> str:
        text = stats.metrics.render().decode()
        return next(line for line in text.splitlines() if line.startswith("controller_max_cost"))

    path = tmp_path / "config.toml"
    path.write_text('[stats]\nlisten = ""\n')
    stats = Stats(load_config(path), bus=Bus())
    assert cap_line(stats) == "controller_max_cost_per_hour NaN"
    path.write_text('[stats]\nlisten = ""\n[scaling]\nmax_cost_per_hour = 1.5\n')
    stats.reconfigure(load_config(path))
    assert cap_line(stats) == "controller_max_cost_per_hour 1.5"
