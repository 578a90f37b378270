"""The plan page's trend charts, laid out by the server: a line per series over the runs, oldest left,
broken where a run has no value, on a shared axis from zero."""

from __future__ import annotations

from trackcheck.service.dashboard.charts import trend_chart


def test_a_series_is_broken_where_a_run_has_no_value_and_scaled_from_zero() -> None:
    chart = trend_chart("Stage duration", ["r1", "r2", "r3", "r4"], {"log": [1.0, None, 4.0, 2.0], "wh": [3.0] * 4})

    log, wh = chart.series
    assert [p.run_id for p in log.points] == ["r1", "r3", "r4"]
    assert len(log.segments) == 2 and len(wh.segments) == 1  # no line drawn across the missing run
    left, right = chart.left, chart.width - chart.right
    assert [p.x for p in wh.points] == [left, left + (right - left) / 3, left + 2 * (right - left) / 3, right]
    # 4 s is the highest value and a round ceiling: at the top; 2 s half way down; zero at the bottom
    assert log.points[1].y == chart.top
    assert log.points[2].y == (chart.top + chart.bottom_y) / 2
    assert chart.ticks[0] == (chart.bottom_y, "0s") and chart.ticks[-1][0] == chart.top
    assert (log.style, wh.style) == (0, 1)  # each its own line style


def test_a_rate_uses_the_given_scale_and_labels() -> None:
    chart = trend_chart("Pass rate", ["r1", "r2"], {"rate": [1.0, 0.5]}, top=1.0, label=lambda v: f"{v:.0%}")

    assert [p.label for p in chart.series[0].points] == ["100%", "50%"]
    assert [label for _, label in chart.ticks] == ["0%", "25%", "50%", "75%", "100%"]


def test_a_single_run_is_drawn_in_the_middle() -> None:
    chart = trend_chart("Pass rate", ["r1"], {"rate": [1.0]}, top=1.0)

    assert chart.series[0].points[0].x == (chart.left + chart.width - chart.right) / 2
