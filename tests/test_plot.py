"""`simulate --plot` as a person reads it: time in minutes, hours or days at round ticks (never
"2088.5 h"), the fleet readable when demand is orders of magnitude larger (a log scale), and the
report's numbers written out (86,400, not 8.64e+04)."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from controller.cli import main
from controller.simulation.plot import SlaveAxis, _num, time_axis

ROOT = Path(__file__).resolve().parents[1]
REPO_CONFIG = ROOT / "config.toml"
SHIPPED = ROOT / "controller" / "simulation" / "data" / "sdsc_http_19950822_60s.csv"
E_NOTATION = re.compile(r"\d\.?\d*e[+-]\d+")


def plot(directory: Path, trace: Path) -> str:
    page = directory / "run.html"
    assert (
        main(["simulate", "-c", str(REPO_CONFIG), "--trace", str(trace), "--plot", str(page)]) == 0
    )
    return page.read_text()


@pytest.fixture(scope="module")
def busy_page(tmp_path_factory) -> str:
    directory = tmp_path_factory.mktemp("busy")
    return plot(directory, busy_month(directory))


def busy_month(tmp_path: Path) -> Path:
    """30 days, hourly, a daily cycle of 40..160 req/s: 20..80 slaves of demand against a load
    table that allows 4."""
    rows = ["t_seconds,requests"]
    for hour in range(30 * 24):
        rps = 100 + 60 * math.sin(2 * math.pi * hour / 24)
        rows.append(f"{hour * 3600},{round(rps * 3600)}")
    path = tmp_path / "busy.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


def x_labels(svg: str) -> list[str]:
    return re.findall(r'text-anchor="middle">([^<]+)</text>', svg)


def polyline_ys(svg: str, name: str) -> list[float]:
    points = re.search(rf'points="([^"]*)"><title>{re.escape(name)}</title>', svg).group(1)
    return [float(p.split(",")[1]) for p in points.split()]


@pytest.mark.parametrize(
    ("span", "unit", "labels"),
    [
        (600, "min", ["0 min", "2 min", "4 min", "6 min", "8 min", "10 min"]),
        (86340, "h", ["0 h", "3 h", "6 h", "9 h", "12 h", "15 h", "18 h", "21 h"]),
        (22 * 86400, "d", ["0 d", "7 d", "14 d", "21 d"]),
        (87 * 86400, "d", ["0 d", "14 d", "28 d", "42 d", "56 d", "70 d", "84 d"]),
    ],
)
def test_time_is_labelled_in_a_unit_that_suits_the_span(span, unit, labels):
    axis = time_axis(span)
    assert axis.unit == unit
    assert [axis.label(t) for t in axis.ticks()] == labels


def test_a_month_is_drawn_in_days_with_a_log_scale_that_shows_the_fleet(busy_page):
    page = busy_page
    labels = x_labels(page)
    assert "days since the trace" in page
    ticks = [label for label in labels if label.endswith(" d")]
    assert ticks[:3] == ["0 d", "7 d", "14 d"]
    assert not any(label.endswith(" h") for label in labels)
    assert "slaves (log scale)" in page
    # ready (1..4 slaves) spans a fifth of the chart at least; drawn linearly under a demand
    # of 80 it would be a twentieth
    ys = polyline_ys(page, "ready")
    plot_height = 420 - 20 - 40
    assert max(ys) - min(ys) >= 0.2 * plot_height


def test_a_small_demand_keeps_a_linear_scale_in_hours(tmp_path):
    page = plot(tmp_path, SHIPPED)
    assert "slaves (log scale)" not in page and ">slaves</text>" in page
    assert "hours since the trace" in page and ">21 h</text>" in page


def test_the_report_has_no_e_notation(busy_page):
    report = busy_page.split("<h4>Report</h4>", 1)[1]
    assert not E_NOTATION.search(report), E_NOTATION.search(report).group(0)
    assert "<td>end_seconds</td><td>2,592,000 (30.0 d)</td>" in report
    assert "<td>buckets</td><td>720</td>" in report


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (86400.0, "86,400"),
        (1352804107, "1,352,804,107"),
        (0.035, "0.035"),
        (12.5, "12.5"),
        (123.456, "123.5"),
        (1 / 3, "0.3333"),
        (0.00012, "0.00012"),
        (-5.25, "-5.25"),
    ],
)
def test_numbers_are_written_out(value, text):
    assert _num(value) == text


def test_the_log_scale_keeps_zero_and_round_ticks():
    axis = SlaveAxis(top=84.0, log=True)
    assert axis.fraction(0) == 0 and axis.fraction(84.0) == pytest.approx(1.0)
    assert axis.ticks() == [0, 1, 2, 5, 10, 20, 50]
    assert axis.fraction(4) > 0.3  # a fleet of 4 under a demand of 80
