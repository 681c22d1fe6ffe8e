"""`controller simulate` on long traces: progress as the replay goes, a bar on a terminal only,
and the executor's cached counts (what is serving) equal to a recount at every change."""

from __future__ import annotations

import dataclasses
import io
import sys

import pytest

from controller.cli import main
from controller.cloud.simcloud import SimCloud
from controller.commands.progress import ProgressBar
from controller.config.schema import Config, LoadRow, LoadTableSection
from controller.policy.factory import make_policy
from controller.policy.lifecycle import Phase
from controller.simulation.fleet_executor import FleetExecutor
from controller.simulation.replay import simulate
from controller.simulation.trace import Trace, load_rate

CONFIG = """
[load_table]
rows = [[0.0, 0, 40]]

[scaling]
slave_capacity_rps = 0.5
boot_seconds = 90
"""

# requests/sec per minute over four hours: quiet, a climb, a plateau, a drop, a burst, quiet
RATES = (
    [1.0] * 30
    + [1.0 + 0.4 * k for k in range(30)]
    + [13.0] * 60
    + [2.0] * 60
    + [9.0] * 20
    + [1.0] * 40
)


def ramp() -> Trace:
    return Trace(path="ramp", start=0.0, bucket_seconds=60.0, rps=tuple(RATES))


def faulty_config() -> Config:
    cfg = Config(
        load_table=LoadTableSection(
            rows=(
                LoadRow(rps=0.1, min_instances=1, max_instances=4),
                LoadRow(rps=4.0, min_instances=4, max_instances=30),
            )
        )
    )
    return dataclasses.replace(
        cfg,
        scaling=dataclasses.replace(cfg.scaling, slave_capacity_rps=0.5, drain_seconds=20.0),
        slave=dataclasses.replace(
            cfg.slave, image_id="ami-0123456789abcdef0", instance_types=("m5.large", "c5.large")
        ),
        simulate=dataclasses.replace(
            cfg.simulate,
            interruption_rate_per_hour=1.5,
            unfilled_rate=0.15,
            capacity_error_rate=0.15,
            boot_spread=0.3,
        ),
    )


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_rises_to_one_and_changes_nothing():
    cfg = faulty_config()
    seen: list[float] = []
    reported = simulate(ramp(), cfg, seed=2, progress=seen.append)
    assert seen[0] == 0.0 and seen[-1] == 1.0
    assert seen == sorted(seen) and len(seen) > 100
    assert reported.report == simulate(ramp(), cfg, seed=2).report


def test_the_oracle_reports_its_end_too():
    seen: list[float] = []
    simulate(ramp(), faulty_config(), "oracle", progress=seen.append)
    assert seen == [1.0]


def test_the_bar_is_drawn_on_a_terminal_only(tmp_path, monkeypatch, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text(CONFIG)
    trace = tmp_path / "ramp.csv"
    trace.write_text(
        "t_seconds,requests\n" + "".join(f"{60 * k},{int(r * 60)}\n" for k, r in enumerate(RATES))
    )
    args = ["simulate", "-c", str(cfg), "--trace", str(trace)]

    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert main(args) == 0
    drawn = terminal.getvalue()
    assert "\rsimulating [" in drawn and "100%" in drawn
    assert drawn.endswith("\r\x1b[2K")  # the bar erases itself before the report
    report = capsys.readouterr().out
    assert report.startswith("trace ") and "simulating" not in report

    piped = io.StringIO()
    monkeypatch.setattr(sys, "stderr", piped)
    assert main(args) == 0
    assert "simulating" not in piped.getvalue()


def test_the_bar_redraws_only_when_the_percentage_moves():
    out = Terminal()
    bar = ProgressBar(out, "working")
    for k in range(1001):
        bar.update(k / 1000)
    assert out.getvalue().count("\r") == 101
    assert "[" + "#" * 30 + "] 100%" in out.getvalue()
    bar.close()
    assert out.getvalue().endswith("\r\x1b[2K")


def test_an_unused_bar_writes_nothing():
    out = Terminal()
    ProgressBar(out, "working").close()
    assert out.getvalue() == ""


@pytest.mark.parametrize("seed", [1, 4, 9])
def test_what_is_serving_is_a_recount_at_every_change(seed):
    """The executor counts the serving slaves again only when the pool or the cloud changed
    (controller.simulation.fleet_executor); a recount from the pool's tracked set and the cloud
    must agree at every change the replay scores."""
    cfg = faulty_config()
    trace = ramp()
    clock = [trace.start]
    cloud = SimCloud.from_config(cfg, clock=lambda: clock[0], seed=seed)
    checked: list[tuple[int, int]] = []
    executor: list[FleetExecutor] = []

    def recount(t: float) -> None:
        if not executor:
            return
        ex = executor[0]
        listed = [x for x in ex.pool.tracked.values() if x.phase is Phase.READY]
        checked.append((ex.serving(), sum(1 for x in listed if cloud.booted(x.instance_id))))

    executor.append(
        FleetExecutor(
            config=cfg,
            policy=make_policy("ours", cfg),
            cloud=cloud,
            clock=lambda: clock[0],
            set_clock=lambda t: clock.__setitem__(0, t),
            rate=load_rate(trace),
            on_change=recount,
        )
    )
    for j in range(len(trace.rps)):
        executor[0].run_until(trace.time(j))
        recount(trace.time(j))
    assert len(checked) > 500
    assert max(cached for cached, _ in checked) > 4  # the fleet grew past the first row
    assert [cached for cached, _ in checked] == [fresh for _, fresh in checked]
    assert cloud.counters.interrupted + len(executor[0].warned) > 0
