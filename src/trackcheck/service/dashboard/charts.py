"""The arrival-latency chart of a run, laid out in Python so the template only draws SVG rectangles."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

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
        if start is not None and end is not None and stage.status in ("passed", "failed", "error"):
            seconds = (end - start).total_seconds()
        elif start is not None and stage.status == "waiting":
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
