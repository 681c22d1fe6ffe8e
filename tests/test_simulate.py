"""Trace replay: reading traces, the oracle, the replay loop, `controller simulate` end to end."""

from __future__ import annotations

import csv
import dataclasses
import json
from importlib import resources

import pytest

from controller.cli import main
from controller.config.schema import Config, LoadRow, LoadTableSection
from controller.policy.baselines import oracle_plan
from controller.simulation.replay import simulate
from controller.simulation.report import TIMELINE_HEADER, capacity_table
from controller.simulation.trace import TraceError, read_trace

SHIPPED = str(resources.files("controller.simulation") / "data" / "sdsc_http_19950822_60s.csv")

CONFIG = """
[load_table]
rows = [[0.0, 0, 40]]

[scaling]
slave_capacity_rps = 0.1
boot_seconds = 90

[simulate]
spot_price = 0.035
"""


def write(path, text: str) -> str:
    path.write_text(text)
    return str(path)


def sim_config(capacity: float = 1.0, top: int = 30, **simulate_kw) -> Config:
    cfg = Config(load_table=capacity_table(capacity, top, spare=0.0, least_spare=2))
    scaling = dataclasses.replace(cfg.scaling, slave_capacity_rps=capacity)
    sim = dataclasses.replace(cfg.simulate, **simulate_kw)
    return dataclasses.replace(cfg, scaling=scaling, simulate=sim)


def ramp_trace(tmp_path) -> str:
    """Two hours: quiet, a climb to 12 rps, a plateau, a drop, quiet again (60 s buckets)."""
    rates = [1.0] * 20 + [1.0 + 0.5 * k for k in range(22)] + [12.0] * 30 + [2.0] * 48
    lines = ["t_seconds,requests"] + [f"{60 * k},{int(r * 60)}" for k, r in enumerate(rates)]
    return write(tmp_path / "ramp.csv", "\n".join(lines) + "\n")


# traces


def test_the_shipped_trace_reads():
    trace = read_trace(SHIPPED)
    assert (trace.start, trace.bucket_seconds, len(trace.rps)) == (0.0, 60.0, 1440)
    assert sum(trace.rps) * 60 == pytest.approx(28338)


def test_missing_buckets_count_as_zero(tmp_path):
    trace = read_trace(write(tmp_path / "t.csv", "0,60\n60,120\n240,60\n"))
    assert trace.rps == (1.0, 2.0, 0.0, 0.0, 1.0)


@pytest.mark.parametrize(
    ("text", "where", "what"),
    [
        ("t_seconds,requests\n0,5\n60,x\n", ":3:", "requests 'x' is not a number"),
        ("0,5\n60,5,7\n", ":2:", "expected 2 fields"),
        ("0,5\n60,5\n60,5\n", ":3:", "must increase"),
        ("0,5\n60,-1\n", ":2:", ">= 0"),
        ("0,5\n60,5\n90,5\n", ":3:", "grid"),
        ("t_seconds,requests\n0,5\n", "", "at least two rows"),
    ],
)
def test_bad_traces_name_file_and_line(tmp_path, text, where, what):
    path = write(tmp_path / "bad.csv", text)
    with pytest.raises(TraceError) as err:
        read_trace(path)
    assert str(err.value).startswith(path + where)
    assert what in str(err.value)


def test_an_unreadable_trace_is_named(tmp_path):
    with pytest.raises(TraceError, match="cannot read the trace"):
        read_trace(str(tmp_path / "absent.csv"))


# the oracle


def test_oracle_plan_by_hand():
    # demand 0, 2, 2, 0, 1 per minute; boot 90 s
    runs = oracle_plan([0, 60, 120, 180, 240], [0, 2, 2, 0, 1], 300, 90)
    spans = sorted((r.launched_at, r.ready_at, r.end) for r in runs)
    # slave 1 is needed at 60-180 and 240-300: the 60 s gap is shorter than a boot, so kept
    # slave 2 only at 60-180
    assert spans == [(-30, 60, 180), (-30, 60, 300)]


def test_oracle_relaunches_after_a_long_gap():
    runs = oracle_plan([0, 60, 120, 180, 240], [1, 0, 0, 0, 1], 300, 90)
    assert sorted((r.launched_at, r.end) for r in runs) == [(-90, 60), (150, 300)]


def test_oracle_is_never_under_provisioned(tmp_path):
    trace = read_trace(ramp_trace(tmp_path))
    report = simulate(trace, sim_config(), "oracle").report
    assert report.elasticity.tau_u == 0.0
    assert report.elasticity.theta_u == 0.0
    shipped = simulate(read_trace(SHIPPED), sim_config(capacity=0.05), "oracle").report
    assert shipped.elasticity.tau_u == 0.0


# the replay


def test_ours_beats_gbrowse_on_a_ramp(tmp_path):
    trace = read_trace(ramp_trace(tmp_path))
    cfg = sim_config()
    oracle = simulate(trace, cfg, "oracle")
    ours = simulate(trace, cfg, "ours")
    gbrowse = simulate(trace, cfg, "gbrowse")
    assert len(ours.timeline.t_seconds) == len(trace.rps)
    assert ours.report.elasticity.tau_u < gbrowse.report.elasticity.tau_u
    assert ours.report.cost >= oracle.report.cost
    assert ours.report.peak_demand == 12
    assert ours.report.launches > 0 and ours.report.terminations > 0
    # the timeline's billed count includes booting and draining slaves, ready never more
    assert all(r <= b for r, b in zip(ours.timeline.ready, ours.timeline.billed, strict=True))


def test_every_policy_replays_with_a_faulty_cloud(tmp_path):
    trace = read_trace(ramp_trace(tmp_path))
    cfg = sim_config(
        interruption_rate_per_hour=2.0, unfilled_rate=0.2, capacity_error_rate=0.2, boot_spread=0.3
    )
    for name in ("ours", "table", "gbrowse", "gbrowse-lifetime", "starcluster"):
        report = simulate(trace, cfg, name, seed=5).report
        assert report.cost > 0, name
    ours = simulate(trace, cfg, "ours", seed=5).report
    assert ours.interruptions > 0
    assert ours.capacity_errors > 0
    assert ours.unfilled_requests > 0


def test_a_replay_is_reproducible(tmp_path):
    trace = read_trace(ramp_trace(tmp_path))
    cfg = sim_config(interruption_rate_per_hour=1.0)
    assert simulate(trace, cfg, seed=3).report == simulate(trace, cfg, seed=3).report


def test_the_table_limits_are_reported(tmp_path):
    trace = read_trace(ramp_trace(tmp_path))
    rows = (LoadRow(rps=0.0, min_instances=0, max_instances=4),)
    cfg = dataclasses.replace(sim_config(), load_table=LoadTableSection(rows=rows))
    report = simulate(trace, cfg, "ours").report
    assert report.table_short_pct > 0
    assert report.peak_billed <= 4


# the command


def test_simulate_cli_json_and_timeline(tmp_path, capsys):
    cfg = write(tmp_path / "c.toml", CONFIG)
    timeline = tmp_path / "tl.csv"
    code = main(["simulate", "-c", cfg, "--trace", SHIPPED, "--json", "--timeline", str(timeline)])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["policy"] == "ours"
    assert report["buckets"] == 1440
    assert set(report["elasticity"]) == {"theta_u", "theta_o", "tau_u", "tau_o", "instability"}
    for key in ("cost", "instance_hours", "launches", "terminations"):
        assert key in report
    with open(timeline, newline="") as f:
        rows = list(csv.reader(f))
    assert tuple(rows[0]) == TIMELINE_HEADER
    assert rows[0] == ["t_seconds", "load_rps", "desired", "billed", "ready", "cost_per_hour"]
    assert len(rows) == 1 + 1440
    assert rows[1][0] == "0" and rows[-1][0] == "86340"


def test_simulate_cli_human_report_and_plot(tmp_path, capsys):
    cfg = write(tmp_path / "c.toml", CONFIG)
    plot = tmp_path / "run.html"
    assert main(["simulate", "-c", cfg, "--trace", SHIPPED, "--plot", str(plot)]) == 0
    out = capsys.readouterr().out
    assert "cost" in out and "θU" in out and "launches" in out
    page = plot.read_text()
    assert "<svg" in page and "ready" in page and "billed" in page


def test_simulate_cli_oracle(tmp_path, capsys):
    cfg = write(tmp_path / "c.toml", CONFIG)
    assert main(["simulate", "-c", cfg, "--trace", SHIPPED, "--policy", "oracle", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["elasticity"]["tau_u"] == 0.0


def test_simulate_cli_bad_trace_exits_2(tmp_path, capsys):
    cfg = write(tmp_path / "c.toml", CONFIG)
    bad = write(tmp_path / "bad.csv", "t_seconds,requests\n0,1\n60,lots\n")
    assert main(["simulate", "-c", cfg, "--trace", bad]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"{bad}:3:") and len(err.splitlines()) == 1


def test_simulate_cli_bad_policy_and_plot_suffix_exit_2(tmp_path, capsys):
    cfg = write(tmp_path / "c.toml", CONFIG)
    with pytest.raises(SystemExit) as done:  # --policy has argparse choices
        main(["simulate", "-c", cfg, "--trace", SHIPPED, "--policy", "magic"])
    assert done.value.code == 2
    assert "invalid choice: 'magic'" in capsys.readouterr().err
    plot = str(tmp_path / "p.gif")
    assert main(["simulate", "-c", cfg, "--trace", SHIPPED, "--plot", plot]) == 2
    assert ".html" in capsys.readouterr().err


def test_simulate_cli_bad_config_exits_2(tmp_path, capsys):
    cfg = write(tmp_path / "c.toml", "[simulate]\nslave_capacity = 2\n")
    assert main(["simulate", "-c", cfg, "--trace", SHIPPED]) == 2
    assert str(cfg) in capsys.readouterr().err


def test_a_reader_that_stops_early_gets_no_traceback(tmp_path) -> None:
    """`controller simulate ... | head`, the reader gone before the report is written: the closed
    pipe ends it quietly (141, as a shell reports SIGPIPE), with no traceback."""
    import subprocess
    import sys

    trace = tmp_path / "trace.csv"
    trace.write_text("t_seconds,requests\n" + "".join(f"{60 * i},{i % 50}\n" for i in range(3000)))
    config = tmp_path / "c.toml"
    config.write_text('[controller]\nfleet = "pipe"\n')
    proc = subprocess.Popen(
        [sys.executable, "-m", "controller", "simulate", "-c", str(config), "--trace", str(trace)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader goes away before anything is written
    with proc.stderr:
        stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141, stderr
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr
