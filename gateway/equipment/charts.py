"""Charts for the monthly report, drawn once as shapes and rendered twice: inline SVG for
the HTML page, reportlab drawings for the PDF (`pdf.py`), so both show the same figure.

A chart is a `Figure`: a size and a list of shapes in SVG's coordinates (y grows down).
Two kinds are enough for a manager's month: bars per day (stacked by series, e.g. alarms
by severity), and lines per day against a target (availability, intact rates).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from html import escape

WIDTH, HEIGHT = 720, 260
LEFT, RIGHT, TOP, BOTTOM = 52, 150, 34, 36  # margins: axis labels left, legend right
GRID = "#d9dde3"
AXIS = "#5b6470"
TARGET = "#c62828"
PALETTE = ("#1f77b4", "#2ca02c", "#9467bd", "#8c564b", "#17becf", "#7f7f7f", "#bcbd22")
SEVERITY_COLOURS = {"critical": "#b71c1c", "major": "#ef6c00", "minor": "#f9a825",
                    "warning": "#1e88e5"}


@dataclass(frozen=True, slots=True)
class Rect:
    x: float
    y: float
    w: float
    h: float
    fill: str
    title: str = ""  # a tooltip in the HTML


@dataclass(frozen=True, slots=True)
class Line:
    points: tuple[tuple[float, float], ...]
    stroke: str
    width: float = 1.0
    dash: bool = False


@dataclass(frozen=True, slots=True)
class Text:
    x: float
    y: float
    text: str
    size: float = 10.0
    anchor: str = "start"  # start, middle, end
    fill: str = AXIS
    bold: bool = False


@dataclass(slots=True)
class Figure:
    title: str
    width: float = WIDTH
    height: float = HEIGHT
    shapes: list[Rect | Line | Text] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Series:
    name: str
    values: Sequence[float | None]
    colour: str


def _frame(fig: Figure, labels: Sequence[str], y_min: float, y_max: float,
           fmt: Callable[[float], str], ticks: int = 5) -> tuple[Callable[[float], float], float]:
    """Axes, grid and day labels; returns y(value) and the width of one day's slot."""
    plot_w = fig.width - LEFT - RIGHT
    plot_h = fig.height - TOP - BOTTOM
    fig.shapes.append(Text(LEFT, 18, fig.title, 13, bold=True, fill="#222"))

    def y(value: float) -> float:
        span = (y_max - y_min) or 1.0
        return TOP + plot_h * (1 - (min(max(value, y_min), y_max) - y_min) / span)

    for i in range(ticks + 1):
        v = y_min + (y_max - y_min) * i / ticks
        fig.shapes.append(Line(((LEFT, y(v)), (LEFT + plot_w, y(v))), GRID))
        fig.shapes.append(Text(LEFT - 6, y(v) + 3.5, fmt(v), 9, "end"))
    slot = plot_w / max(1, len(labels))
    every = max(1, math.ceil(len(labels) / 16))  # at most 16 labels under the axis
    for i, label in enumerate(labels):
        if i % every == 0:
            fig.shapes.append(Text(LEFT + slot * (i + 0.5), TOP + plot_h + 14, label, 9, "middle"))
    fig.shapes.append(Line(((LEFT, TOP), (LEFT, TOP + plot_h), (LEFT + plot_w, TOP + plot_h)), AXIS))
    return y, slot


def _legend(fig: Figure, entries: Sequence[tuple[str, str, bool]]) -> None:
    """(name, colour, dashed line) in the right margin."""
    x = fig.width - RIGHT + 14
    for i, (name, colour, dashed) in enumerate(entries):
        y = TOP + 6 + i * 16
        if dashed:
            fig.shapes.append(Line(((x, y), (x + 14, y)), colour, 2, dash=True))
        else:
            fig.shapes.append(Rect(x, y - 5, 14, 10, colour))
        fig.shapes.append(Text(x + 20, y + 3.5, name, 9))


def bars(title: str, labels: Sequence[str], series: Sequence[Series], *,
         fmt: Callable[[float], str] = lambda v: f"{v:g}") -> Figure:
    """Stacked bars per label (a day), one colour per series; y from 0 to a round maximum."""
    fig = Figure(title)
    totals = [sum(s.values[i] or 0 for s in series) for i in range(len(labels))]
    y_max = _nice(max(totals, default=0) or 1)
    ticks = int(y_max) if y_max <= 5 and y_max == int(y_max) else 5  # no 0.2 of an alarm
    y, slot = _frame(fig, labels, 0.0, y_max, fmt, ticks)
    for i, label in enumerate(labels):
        base = 0.0
        for s in series:
            v = s.values[i] or 0
            if v <= 0:
                continue
            top, bottom = y(base + v), y(base)
            fig.shapes.append(Rect(LEFT + slot * i + slot * 0.15, top, slot * 0.7, bottom - top,
                                   s.colour, f"{label} {s.name}: {fmt(v)}"))
            base += v
    _legend(fig, [(s.name, s.colour, False) for s in series])
    return fig


def lines(title: str, labels: Sequence[str], series: Sequence[Series], *,
          target: tuple[str, float] | None = None, y_min: float | None = None,
          y_max: float = 1.0, fmt: Callable[[float], str] = lambda v: f"{v:.0%}") -> Figure:
    """A line per series over the labels (a gap where a value is None), with a dashed target
    line; y from `y_min` (default: a round floor under the lowest value and the target)."""
    fig = Figure(title)
    values = [v for s in series for v in s.values if v is not None]
    if target is not None:
        values.append(target[1])
    if y_min is None:
        low = min(values, default=y_max)
        y_min = max(0.0, math.floor((low - 0.02) * 20) / 20)  # 5 % steps below the lowest
        if y_min >= y_max:
            y_min = max(0.0, y_max - 0.05)
    y, slot = _frame(fig, labels, y_min, y_max, fmt)
    legend: list[tuple[str, str, bool]] = []
    if target is not None:
        name, value = target
        fig.shapes.append(Line(((LEFT, y(value)), (fig.width - RIGHT, y(value))), TARGET, 1.5, True))
        legend.append((name, TARGET, True))
    for s in series:
        run: list[tuple[float, float]] = []
        for i, v in enumerate(list(s.values) + [None]):
            if v is not None:
                point = (LEFT + slot * (i + 0.5), y(v))
                run.append(point)
                fig.shapes.append(Rect(point[0] - 2, point[1] - 2, 4, 4, s.colour,
                                       f"{labels[i]} {s.name}: {fmt(v)}"))
            elif run:
                if len(run) > 1:
                    fig.shapes.append(Line(tuple(run), s.colour, 2))
                run = []
        legend.append((s.name, s.colour, False))
    _legend(fig, legend)
    return fig


def _nice(value: float) -> float:
    """A round number at or above `value`: 1, 2, 5, 10, 20, 50 ..."""
    exponent = math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if step * 10 ** exponent >= value:
            return step * 10 ** exponent
    return 10 ** (exponent + 1)


def svg(fig: Figure) -> str:
    """The figure as an inline <svg> element (text escaped)."""
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {fig.width:g} '
           f'{fig.height:g}" width="{fig.width:g}" height="{fig.height:g}" role="img" '
           f'aria-label="{escape(fig.title)}">']
    for s in fig.shapes:
        if isinstance(s, Rect):
            tip = f"<title>{escape(s.title)}</title>" if s.title else ""
            out.append(f'<rect x="{s.x:.1f}" y="{s.y:.1f}" width="{s.w:.1f}" height="{s.h:.1f}" '
                       f'fill="{s.fill}">{tip}</rect>')
        elif isinstance(s, Line):
            points = " ".join(f"{x:.1f},{y:.1f}" for x, y in s.points)
            dash = ' stroke-dasharray="6 4"' if s.dash else ""
            out.append(f'<polyline points="{points}" fill="none" stroke="{s.stroke}" '
                       f'stroke-width="{s.width:g}"{dash}/>')
        else:
            weight = ' font-weight="bold"' if s.bold else ""
            out.append(f'<text x="{s.x:.1f}" y="{s.y:.1f}" font-size="{s.size:g}" '
                       f'text-anchor="{s.anchor}" fill="{s.fill}"{weight}>{escape(s.text)}</text>')
    out.append("</svg>")
    return "".join(out)
