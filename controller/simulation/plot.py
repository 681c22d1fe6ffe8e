"""Draw a simulation: load, demand, billed and ready slaves over time.

`.html` (or `.svg`) needs nothing: a self-contained page with an inline SVG chart, so a newcomer
without any plotting library still sees the run. `.png` uses matplotlib when it is installed
and says how to get it when it is not. Long runs are reduced to about one point per pixel,
keeping each pixel's highest value so that no peak disappears from the picture.
"""

from __future__ import annotations

import html
import math
import os
from collections.abc import Sequence

from controller.simulation.report import SimResult
from controller.simulation.trace import demand_of

PLOT_SUFFIXES = (".html", ".htm", ".svg", ".png")
WIDTH, HEIGHT = 1100, 420
LEFT, RIGHT, TOP, BOTTOM = 60, 20, 20, 40

SERIES = (  # name, colour, dashed
    ("load / capacity", "#9aa0a6", False),
    ("demand", "#202124", True),
    ("billed", "#e8710a", False),
    ("ready", "#1a73e8", False),
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
        f"{r.policy} on {os.path.basename(r.trace)}: ${r.cost:.2f}, "
        f"{r.instance_hours:.1f} instance-hours, {r.launches} launches; "
        f"θU {e.theta_u:.2f}% τU {e.tau_u:.2f}% θO {e.theta_o:.1f}% τO {e.tau_o:.1f}%"
    )


def _svg(result: SimResult, series: dict[str, list[float]]) -> str:
    tl = result.timeline
    hours = [(t - tl.t_seconds[0]) / 3600.0 for t in tl.t_seconds] if tl.t_seconds else [0.0]
    x_max = max(hours[-1], 1e-9)
    y_max = max((max(v) for v in series.values() if v), default=1.0)
    y_max = max(1.0, y_max * 1.05)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def px(x: float) -> float:
        return LEFT + plot_w * x / x_max

    def py(y: float) -> float:
        return TOP + plot_h * (1.0 - y / y_max)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT + 30}" '
        f'font-family="sans-serif" font-size="12">',
        f'<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="white" '
        'stroke="#dadce0"/>',
    ]
    tick = max(1, math.ceil(y_max / 6))
    for y in range(0, int(y_max) + 1, tick):
        parts.append(
            f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{py(y):.1f}" y2="{py(y):.1f}" '
            'stroke="#f1f3f4"/>'
            f'<text x="{LEFT - 6}" y="{py(y) + 4:.1f}" text-anchor="end">{y:.0f}</text>'
        )
    for k in range(7):
        x = x_max * k / 6
        parts.append(
            f'<text x="{px(x):.1f}" y="{HEIGHT - BOTTOM + 16}" text-anchor="middle">'
            f"{x:.1f} h</text>"
        )
    mid = f"{TOP + plot_h / 2:.0f}"
    parts.append(
        f'<text x="14" y="{mid}" transform="rotate(-90 14 {mid})" '
        'text-anchor="middle">slaves</text>'
    )
    for name, colour, dashed in SERIES:
        xs, ys = _reduce(hours, series[name], plot_w)
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
        f"<tr><td>{html.escape(k)}</td><td>{html.escape(_fmt(v))}</td></tr>"
        for k, v in r.as_dict().items()
        if k != "elasticity"
    )
    rows += "".join(
        f"<tr><td>{html.escape(k)} (%)</td><td>{v:.3f}</td></tr>"
        for k, v in r.elasticity.as_dict().items()
    )
    actions = "".join(
        f"<li><code>t={t - r.start_seconds:.0f}s</code> {html.escape(reason)}</li>"
        for t, reason in result.actions[:50]
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(_title(result))}</title>"
        "<style>body{font-family:sans-serif;margin:1.5em}td{padding:0 1em 0 0}</style>"
        f"</head><body><h3>{html.escape(_title(result))}</h3>{svg}"
        f"<h4>Report</h4><table>{rows}</table>"
        f"<h4>First decisions that changed the fleet</h4><ul>{actions or '<li>none</li>'}</ul>"
        "</body></html>\n"
    )


def _fmt(v: object) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _png(result: SimResult, series: dict[str, list[float]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tl = result.timeline
    hours = [(t - tl.t_seconds[0]) / 3600.0 for t in tl.t_seconds]
    fig, ax = plt.subplots(figsize=(WIDTH / 100, HEIGHT / 100), dpi=100)
    for name, colour, dashed in SERIES:
        xs, ys = _reduce(hours, series[name], 2 * WIDTH)
        ax.step(xs, ys, where="post", color=colour, linestyle="--" if dashed else "-", label=name)
    ax.set_xlabel("hours")
    ax.set_ylabel("slaves")
    ax.set_title(_title(result), fontsize=9)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
