"""Draw a simulation: load, demand, billed and ready slaves over time.

`.html` (or `.svg`) needs nothing: a self-contained page with an inline SVG chart, so a newcomer
without any plotting library still sees the run. `.png` uses matplotlib when it is installed
and says how to get it when it is not. Long runs are reduced to about one point per pixel,
keeping each pixel's highest value so that no peak disappears from the picture.

Made to be read at a glance: time since the trace's start in minutes, hours or days (whichever
suits its span) at round ticks; when demand outgrows the fleet by more than LOG_RATIO (a busy
trace against a small load table), the slave axis turns logarithmic (log(1 + n), so 0 stays
on it) and a fleet of 2 or 4 stays readable under a demand of hundreds; a short spike of the
fleet (a start before the table caps it) does not decide that. Numbers are written out
(86,400, not 8.64e+04).
"""

from __future__ import annotations

import html
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

from controller.simulation.report import SimResult
from controller.simulation.trace import demand_of

PLOT_SUFFIXES = (".html", ".htm", ".svg", ".png")
WIDTH, HEIGHT = 1100, 420
LEFT, RIGHT, TOP, BOTTOM = 70, 20, 20, 40
# demand peaking this many times above the fleet's usual size (its 99th percentile) makes the
# slave axis logarithmic
LOG_RATIO = 10.0
LOG_TICKS = (0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 20_000, 50_000)

SERIES = (  # name, colour, dashed
    ("load / capacity", "#9aa0a6", False),
    ("demand", "#202124", True),
    ("billed", "#e8710a", False),
    ("ready", "#1a73e8", False),
)
DEMAND_SERIES = ("load / capacity", "demand")
# time units of the x axis: (seconds, label, tick steps in that unit, longest span it is used for)
TIME_UNITS = (
    (60.0, "min", (1, 2, 5, 10, 15, 30, 60), 2 * 3600.0),
    (3600.0, "h", (1, 2, 3, 6, 12, 24), 3 * 86400.0),
    (86400.0, "d", (1, 2, 7, 14, 28, 56, 91, 182, 364), math.inf),
)


class PlotError(Exception):
    """The plot cannot be written; the message says why and what to do."""


def check_plot_path(path: str) -> None:
    """Fail early (before a long run) on a suffix we cannot draw or a missing matplotlib."""
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in PLOT_SUFFIXES:
        raise PlotError(
            f"{path}: cannot draw a {suffix or 'suffix-less'} file; "
            "use .html (no dependency) or .png (needs matplotlib)"
        )
    if suffix == ".png":
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise PlotError(
                f"{path}: PNG plots need matplotlib, which is not installed; "
                "run `pip install matplotlib` or write a .html plot instead"
            ) from None


def write_plot(result: SimResult, path: str) -> None:
    check_plot_path(path)
    series = _series(result)
    try:
        if path.lower().endswith(".png"):
            _png(result, series, path)
        else:
            svg = _svg(result, series)
            text = svg if path.lower().endswith(".svg") else _page(result, svg)
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
    except OSError as exc:
        raise PlotError(f"{path}: cannot write the plot: {exc.strerror or exc}") from None


def _series(result: SimResult) -> dict[str, list[float]]:
    tl = result.timeline
    cap = result.report.slave_capacity_rps
    return {
        "load / capacity": [r / cap if cap > 0 else 0.0 for r in tl.load_rps],
        "demand": [float(demand_of(r, cap)) for r in tl.load_rps],
        "billed": [float(b) for b in tl.billed],
        "ready": [float(r) for r in tl.ready],
    }


def _reduce(
    xs: Sequence[float], ys: Sequence[float], points: int
) -> tuple[list[float], list[float]]:
    """At most `points` (x, y) pairs: each run of samples becomes its first x and highest y."""
    n = len(xs)
    if n <= points:
        return list(xs), list(ys)
    step = n / points
    out_x, out_y = [], []
    for k in range(points):
        a, b = int(k * step), max(int((k + 1) * step), int(k * step) + 1)
        out_x.append(xs[a])
        out_y.append(max(ys[a:b]))
    return out_x, out_y


def _title(result: SimResult) -> str:
    r = result.report
    e = r.elasticity
    return (
        f"{r.policy} on {os.path.basename(r.trace)}: ${r.cost:,.2f}, "
        f"{r.instance_hours:,.1f} instance-hours, {r.launches:,} launches; "
        f"θU {e.theta_u:.2f}% τU {e.tau_u:.2f}% θO {e.theta_o:.1f}% τO {e.tau_o:.1f}%"
    )


@dataclass(frozen=True, slots=True)
class TimeAxis:
    """The x axis: time since the trace's start in one unit, with round ticks."""

    seconds: float  # one unit, in seconds
    unit: str  # "min", "h" or "d"
    step: float  # between ticks, in units
    span: float  # the run's length, in units

    def ticks(self) -> list[float]:
        return [k * self.step for k in range(int(self.span / self.step + 1e-9) + 1)]

    def label(self, value: float) -> str:
        return f"{_num(value)} {self.unit}"

    @property
    def title(self) -> str:
        words = {"min": "minutes", "h": "hours", "d": "days"}[self.unit]
        return f"{words} since the trace's start"


def time_axis(span_seconds: float, most_ticks: int = 8) -> TimeAxis:
    """Minutes for up to 2 hours, hours for up to 3 days, days beyond; at most `most_ticks`."""
    seconds, unit, steps, _ = next(u for u in TIME_UNITS if span_seconds <= u[3])
    span = max(span_seconds, 0.0) / seconds
    step = next((s for s in steps if span / s <= most_ticks), None)
    if step is None:
        step = steps[-1] * math.ceil(span / (most_ticks * steps[-1]))
    return TimeAxis(seconds, unit, float(step), span)


def nice_step(top: float, most_ticks: int = 6) -> float:
    """A tick step of 1, 2 or 5 times a power of ten (at least 1: slaves are whole)."""
    raw = max(top, 1.0) / most_ticks
    magnitude = 10 ** math.floor(math.log10(raw))
    return max(1.0, next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw))


@dataclass(frozen=True, slots=True)
class SlaveAxis:
    """The y axis, in slaves: linear, or log(1 + n) when demand dwarfs the fleet."""

    top: float
    log: bool

    def fraction(self, y: float) -> float:
        """How far up the chart `y` is drawn (0 bottom, 1 top)."""
        if self.log:
            return math.log10(1.0 + max(y, 0.0)) / math.log10(1.0 + self.top)
        return y / self.top

    def ticks(self) -> list[float]:
        if not self.log:
            step = nice_step(self.top)
            return [k * step for k in range(int(self.top / step) + 1)]
        return [float(t) for t in LOG_TICKS if t <= self.top]

    @property
    def title(self) -> str:
        return "slaves (log scale)" if self.log else "slaves"


def slave_axis(series: dict[str, list[float]]) -> SlaveAxis:
    top = max(1.0, max((max(v, default=0.0) for v in series.values()), default=0.0) * 1.05)
    fleet = sorted(max(b, r) for b, r in zip(series["billed"], series["ready"], strict=True))
    usual = fleet[int(0.99 * (len(fleet) - 1))] if fleet else 0.0
    demand = max((max(series[n], default=0.0) for n in DEMAND_SERIES), default=0.0)
    return SlaveAxis(top=top, log=demand > LOG_RATIO * max(usual, 1.0))


def _svg(result: SimResult, series: dict[str, list[float]]) -> str:
    tl = result.timeline
    t0 = tl.t_seconds[0] if tl.t_seconds else 0.0
    axis = time_axis((tl.t_seconds[-1] - t0) if tl.t_seconds else 0.0)
    xs_all = [(t - t0) / axis.seconds for t in tl.t_seconds] or [0.0]
    x_max = max(xs_all[-1], 1e-9)
    ys_axis = slave_axis(series)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def px(x: float) -> float:
        return LEFT + plot_w * x / x_max

    def py(y: float) -> float:
        return TOP + plot_h * (1.0 - ys_axis.fraction(y))

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT + 30}" '
        f'font-family="sans-serif" font-size="12">',
        f'<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="white" '
        'stroke="#dadce0"/>',
    ]
    for y in ys_axis.ticks():
        parts.append(
            f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{py(y):.1f}" y2="{py(y):.1f}" '
            'stroke="#f1f3f4"/>'
            f'<text x="{LEFT - 6}" y="{py(y) + 4:.1f}" text-anchor="end">{_num(y)}</text>'
        )
    for x in axis.ticks():
        parts.append(
            f'<line x1="{px(x):.1f}" x2="{px(x):.1f}" y1="{TOP + plot_h}" '
            f'y2="{TOP + plot_h + 4}" stroke="#5f6368"/>'
            f'<text x="{px(x):.1f}" y="{HEIGHT - BOTTOM + 16}" text-anchor="middle">'
            f"{html.escape(axis.label(x))}</text>"
        )
    parts.append(
        f'<text x="{LEFT + plot_w / 2:.0f}" y="{HEIGHT - 4}" text-anchor="middle" '
        f'fill="#5f6368">{html.escape(axis.title)}</text>'
    )
    mid = f"{TOP + plot_h / 2:.0f}"
    parts.append(
        f'<text x="14" y="{mid}" transform="rotate(-90 14 {mid})" '
        f'text-anchor="middle">{ys_axis.title}</text>'
    )
    for name, colour, dashed in SERIES:
        xs, ys = _reduce(xs_all, series[name], plot_w)
        pts = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in zip(xs, ys, strict=True))
        dash = ' stroke-dasharray="4 3"' if dashed else ""
        parts.append(
            f'<polyline fill="none" stroke="{colour}" stroke-width="1.3"{dash} points="{pts}">'
            f"<title>{html.escape(name)}</title></polyline>"
        )
    for i, (name, colour, dashed) in enumerate(SERIES):
        x = LEFT + 10 + i * 150
        dash = ' stroke-dasharray="4 3"' if dashed else ""
        parts.append(
            f'<line x1="{x}" x2="{x + 24}" y1="{HEIGHT + 14}" y2="{HEIGHT + 14}" '
            f'stroke="{colour}" stroke-width="2"{dash}/>'
            f'<text x="{x + 30}" y="{HEIGHT + 18}">{html.escape(name)}</text>'
        )
    parts.append("</svg>")
    return "\n".join(parts)


def _page(result: SimResult, svg: str) -> str:
    r = result.report
    rows = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{html.escape(_fmt(v, k))}</td></tr>"
        for k, v in r.as_dict().items()
        if k != "elasticity"
    )
    rows += "".join(
        f"<tr><td>{html.escape(k)} (%)</td><td>{v:.3f}</td></tr>"
        for k, v in r.elasticity.as_dict().items()
    )
    actions = "".join(
        f"<li><code>{html.escape(_elapsed(t - r.start_seconds))}</code> {html.escape(reason)}</li>"
        for t, reason in result.actions[:50]
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(_title(result))}</title>"
        "<style>body{font-family:sans-serif;margin:1.5em}td{padding:0 1em 0 0}"
        "td+td{text-align:right;font-variant-numeric:tabular-nums}</style>"
        f"</head><body><h3>{html.escape(_title(result))}</h3>{svg}"
        f"<h4>Report</h4><table>{rows}</table>"
        f"<h4>First decisions that changed the fleet</h4><ul>{actions or '<li>none</li>'}</ul>"
        "</body></html>\n"
    )


def _fmt(value: object, key: str = "") -> str:
    """A report value as a person reads it: 86,400 (1.0 d), 0.035, 12.5 (never 8.64e+04)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    text = _num(value)
    if key.endswith("_seconds") and abs(value) >= 3600:
        text += f" ({_elapsed(value)})"
    return text


def _num(value: float) -> str:
    """Thousands separated; decimals only where the value has them (at most 4 significant)."""
    if not math.isfinite(value):
        return str(value)
    if float(value).is_integer():
        return f"{int(value):,}"
    if abs(value) >= 100:
        return f"{value:,.1f}"
    decimals = max(0, 3 - math.floor(math.log10(abs(value))))
    return f"{value:,.{decimals}f}".rstrip("0").rstrip(".")


def _elapsed(seconds: float) -> str:
    """Seconds since the start as a person says them: 45 s, 12.5 min, 3.2 h, 4.5 d."""
    for size, unit in ((86400.0, "d"), (3600.0, "h"), (60.0, "min")):
        if abs(seconds) >= size:
            return f"{seconds / size:,.1f} {unit}"
    return f"{seconds:.0f} s"


def _png(result: SimResult, series: dict[str, list[float]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, FuncFormatter, MaxNLocator, MultipleLocator

    tl = result.timeline
    t0 = tl.t_seconds[0] if tl.t_seconds else 0.0
    axis = time_axis((tl.t_seconds[-1] - t0) if tl.t_seconds else 0.0)
    xs_all = [(t - t0) / axis.seconds for t in tl.t_seconds]
    ys_axis = slave_axis(series)
    fig, ax = plt.subplots(figsize=(WIDTH / 100, HEIGHT / 100), dpi=100)
    for name, colour, dashed in SERIES:
        xs, ys = _reduce(xs_all, series[name], 2 * WIDTH)
        style = "--" if dashed else "-"
        ax.step(xs, ys, where="post", color=colour, linestyle=style, label=name)
    ax.xaxis.set_major_locator(MultipleLocator(axis.step))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: axis.label(v)))
    ax.set_xlabel(axis.title)
    if ys_axis.log:
        ax.set_yscale("symlog", linthresh=1.0, linscale=0.3)  # 0 stays on the axis
        ax.yaxis.set_major_locator(FixedLocator(ys_axis.ticks()))
    else:
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: _num(v)))
    ax.set_ylim(0, ys_axis.top)
    ax.set_ylabel(ys_axis.title)
    ax.set_title(_title(result), fontsize=9)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
