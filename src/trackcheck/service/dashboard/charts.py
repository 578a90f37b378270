"""The run page's charts, laid out in Python so the template only draws SVG shapes (no script, no style):
the arrival latency per stage, and the arrival of each event per stage."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from trackcheck.compare.latency import percentile, span
from trackcheck.states import STAGE_ENDED, StageStatus
from trackcheck.store.models import Run, RunStage
from trackcheck.store.repository import aware, utcnow


@dataclass
class Bar:
    """One stage in the arrival-latency chart: seconds from the run's start until the stage ended."""

    name: str
    status: str
    seconds: float | None
    ongoing: bool
    y: int = 0
    width: float = 0


@dataclass
class Chart:
    bars: list[Bar]
    width: int = 720
    label_width: int = 140
    value_width: int = 150
    row: int = 34
    ticks: list[tuple[float, float]] = field(default_factory=list)

    @property
    def plot_width(self) -> int:
        return self.width - self.label_width - self.value_width

    @property
    def height(self) -> int:
        return self.row * len(self.bars) + 40


def _nice_ceiling(value: float) -> float:
    """The smallest 1, 2, 2.5 or 5 times a power of ten at least ``value``, so the axis ticks are round numbers."""
    if value <= 0:
        return 1.0
    exponent = math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if step * 10**exponent >= value:
            return float(step * 10**exponent)
    return float(10 ** (exponent + 1))


def latency_chart(run: Run, stages: list[RunStage]) -> Chart:
    """Arrival latency per stage: from the run's start to the stage passing (or failing, or now if still
    waiting), laid out here so the template only draws rectangles: no chart library, no script."""
    start = aware(run.created_at)
    now = aware(run.finished_at) or utcnow()
    bars: list[Bar] = []
    for stage in stages:
        end = aware(stage.finished_at)
        seconds: float | None = None
        ongoing = False
        if start is not None and end is not None and stage.status in STAGE_ENDED:
            seconds = (end - start).total_seconds()
        elif start is not None and stage.status == StageStatus.WAITING:
            seconds, ongoing = (now - start).total_seconds(), True
        bars.append(Bar(stage.name, stage.status, seconds, ongoing))
    chart = Chart(bars)
    # at least one second: sub-second runs (tests, demos) would otherwise get an axis of milliseconds
    top = _nice_ceiling(max([1.0, *(b.seconds for b in bars if b.seconds is not None)]))
    for index, bar in enumerate(bars):
        bar.y = 10 + index * chart.row
        bar.width = 0 if bar.seconds is None else max(2.0, chart.plot_width * bar.seconds / top)
    chart.ticks = [(chart.label_width + chart.plot_width * i / 5, top * i / 5) for i in range(6)]
    return chart


# -- per-event arrival -----------------------------------------------------------------------------------------
@dataclass
class Marker:
    """A vertical line of an arrival chart: a percentile of the events, or a ``latency:`` bound."""

    label: str
    seconds: float
    x: float = 0
    #: where its label goes: right of the line, or left of it near the chart's right edge
    anchor: str = "start"
    label_x: float = 0


@dataclass
class Arrival:
    """The per-event arrival chart of one stage: the share of its events that had arrived by each lateness
    (``time_field`` minus first seen), or by each time since the stage started when it has no ``time_field``;
    a step curve (an empirical CDF) filled below, drawn as one SVG polygon."""

    stage: str
    status: str
    #: ``lateness`` (since each event was sent) or ``since start`` (since the stage started)
    measure: str
    time_field: str | None
    n: int
    p50: float | None
    p95: float | None
    max: float | None
    unreadable: int = 0
    points: str = ""
    ticks: list[tuple[float, str]] = field(default_factory=list)
    markers: list[Marker] = field(default_factory=list)
    bounds: list[Marker] = field(default_factory=list)
    width: int = 960
    height: int = 280
    left: int = 56
    right: int = 24
    top: int = 40
    bottom: int = 30

    @property
    def bottom_y(self) -> int:
        return self.height - self.bottom

    @property
    def share_ticks(self) -> list[tuple[float, str]]:
        """The horizontal grid lines: y and the share of events."""
        span_y = self.bottom_y - self.top
        return [(self.bottom_y - span_y * share, f"{share:.0%}") for share in (0, 0.5, 1)]

    @property
    def summary(self) -> str:
        """The chart in words (its accessible description, shown beside it too)."""
        if not self.n:
            return f"{self.stage}: no event with a readable {self.time_field} yet."
        what = "first seen after the stage started"
        if self.measure == "lateness":
            what = f"lateness (first seen minus {self.time_field})"
        text = (
            f"{self.stage}: {self.n} event{'s' if self.n != 1 else ''}, {what}: p50 {span(self.p50 or 0)}, "
            f"p95 {span(self.p95 or 0)}, max {span(self.max or 0)}."
        )
        if self.bounds:
            text += " Bounds: " + ", ".join(b.label for b in self.bounds) + "."
        if self.unreadable:
            plural = "s" if self.unreadable != 1 else ""
            text += f" {self.unreadable} event{plural} without a readable {self.time_field}."
        return text


#: axis steps that read as round durations: seconds, minutes, hours, days
_TIME_STEPS = (
    *(0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30),
    *(60 * m for m in (1, 2, 5, 10, 15, 30)),
    *(3600 * h for h in (1, 2, 3, 6, 12)),
    *(86400 * d for d in (1, 2, 7, 14, 30)),
)


def _time_step(extent: float) -> float:
    """The smallest round duration that divides ``extent`` seconds into at most six ticks."""
    return next(
        (step for step in _TIME_STEPS if extent / step <= 6), _TIME_STEPS[-1] * math.ceil(extent / 6 / _TIME_STEPS[-1])
    )


def arrival_chart(
    stage: RunStage,
    seconds: list[float],
    *,
    time_field: str | None = None,
    unreadable: int = 0,
    bounds: dict[str, float] | None = None,
) -> Arrival:
    """Lay out the arrival chart of one stage from its events' ``seconds`` (lateness with a ``time_field``,
    else first seen since the stage started); ``bounds``: the stage's ``latency:`` bounds by name."""
    values = sorted(seconds)
    n = len(values)
    chart = Arrival(
        stage=stage.name,
        status=stage.status,
        measure="lateness" if time_field else "since start",
        time_field=time_field,
        n=n,
        p50=percentile(values, 50) if values else None,
        p95=percentile(values, 95) if values else None,
        max=values[-1] if values else None,
        unreadable=unreadable,
    )
    limits = list((bounds or {}).values())
    # at least one second, as the latency chart: sub-second tests would otherwise get an axis of milliseconds
    step = _time_step(max([1.0, *values, *limits]) - min([0.0, *values]))
    high = step * math.ceil(max([1.0, *values, *limits]) / step)
    low = -step * math.ceil(-min([0.0, *values]) / step)
    x0, x1 = chart.left, chart.width - chart.right
    y0, y1 = chart.top, chart.bottom_y

    def x(value: float) -> float:
        return x0 + (x1 - x0) * (value - low) / (high - low)

    def y(count: int) -> float:
        return y1 - (y1 - y0) * count / n

    chart.ticks = [(x(low + step * i), span(low + step * i)) for i in range(round((high - low) / step) + 1)]
    if values:
        # one step per half pixel at most: a CDF of 10,000 events stays a few hundred points
        points: list[tuple[float, float]] = [(x(values[0]), y1)]
        count = 0
        column = round(x(values[0]) * 2)
        for value in values:
            here = round(x(value) * 2)
            if here != column:
                points += [(column / 2, y(count)), (here / 2, y(count))]
                column = here
            count += 1
        points += [(column / 2, y(count)), (x1, y(count)), (x1, y1)]
        chart.points = " ".join(f"{px:.1f},{py:.1f}" for px, py in points)
        chart.markers = [
            Marker(f"{label} {span(value)}", value, x(value))
            for label, value in (("p50", chart.p50), ("p95", chart.p95), ("max", chart.max))
            if value is not None
        ]
    chart.bounds = [Marker(f"{name} ≤ {span(value)}", value, x(value)) for name, value in (bounds or {}).items()]
    for marker in chart.markers:
        flip = marker.x > x0 + (x1 - x0) * 0.7
        marker.anchor, marker.label_x = ("end", marker.x - 4) if flip else ("start", marker.x + 4)
    return chart


# -- trends over a plan's runs -----------------------------------------------------------------------------
@dataclass
class Point:
    """One value of a trend: where it is drawn, and what it says (its tooltip and accessible text)."""

    x: float
    y: float
    label: str
    run_id: str


@dataclass
class Series:
    """One line of a trend chart (a stage's durations, or the pass rate): its points, split into segments
    where a run has no value (the line is not drawn across a gap)."""

    name: str
    points: list[Point]
    segments: list[str]
    #: which of the chart's line styles draws it (colour and dash, so lines differ without colour too)
    style: int = 0


@dataclass
class Trend:
    """A line chart over a plan's last runs, oldest left: ``series`` laid out, the y axis's ``ticks``."""

    title: str
    summary: str
    series: list[Series]
    ticks: list[tuple[float, str]]
    runs: int
    width: int = 960
    height: int = 220
    left: int = 64
    right: int = 16
    top: int = 12
    bottom: int = 28

    @property
    def bottom_y(self) -> int:
        return self.height - self.bottom


def _quarters_ceiling(value: float) -> float:
    """The smallest 1, 2, 4 or 8 times a power of ten at least ``value``: its quarters (a trend's four grid
    lines) are round numbers too."""
    exponent = math.floor(math.log10(value))
    return next(float(step * 10**exponent) for step in (1, 2, 4, 8, 10) if step * 10**exponent >= value)


#: line styles of a trend chart (``.trend__line--N`` in dashboard.css); more series reuse them in turn
TREND_STYLES = 6


def trend_chart(
    title: str,
    run_ids: list[str],
    lines: dict[str, list[float | None]],
    *,
    top: float | None = None,
    label: Callable[[float], str] = span,
    summary: str = "",
) -> Trend:
    """Lay out a line per entry of ``lines`` (a value per run of ``run_ids``, oldest first, None where the
    run has none) on a shared y axis from 0 to ``top`` (default: a round ceiling of the largest value)."""
    values = [v for series in lines.values() for v in series if v is not None]
    high = top if top is not None else _quarters_ceiling(max([*values, 0.0]) or 1.0)
    chart = Trend(title=title, summary=summary, series=[], ticks=[], runs=len(run_ids))
    x0, x1 = chart.left, chart.width - chart.right
    y0, y1 = chart.top, chart.bottom_y
    step = (x1 - x0) / max(1, len(run_ids) - 1)

    def y(value: float) -> float:
        return y1 - (y1 - y0) * value / high

    chart.ticks = [(y(high * i / 4), label(high * i / 4)) for i in range(5)]
    for style, (name, series) in enumerate(lines.items()):
        points: list[Point] = []
        segments: list[str] = []
        current: list[str] = []
        for index, (run_id, value) in enumerate(zip(run_ids, series, strict=True)):
            if value is None:
                if current:
                    segments.append(" ".join(current))
                current = []
                continue
            point = Point(x0 + step * index if len(run_ids) > 1 else (x0 + x1) / 2, y(value), label(value), run_id)
            points.append(point)
            current.append(f"{point.x:.1f},{point.y:.1f}")
        if current:
            segments.append(" ".join(current))
        chart.series.append(Series(name, points, segments, style % TREND_STYLES))
    return chart
