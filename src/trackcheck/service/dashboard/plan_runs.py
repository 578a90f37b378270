"""What the plan page shows of the plan's runs: the grid of its latest runs by stage, the streak of runs
that did not pass ("failing since"), and the trends of its pass rate and stage durations.

Trends are per run over the last ``TREND_RUNS`` runs, not per day: a plan run by CI hundreds of times a
day and a nightly one both get a readable line, a change shows at the run that brought it (the grid above
has the same runs), and the one query the grid makes gives both (no per-dialect date arithmetic).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from trackcheck.service.dashboard.charts import Trend, trend_chart
from trackcheck.service.dashboard.formatting import params_text
from trackcheck.states import RunStatus
from trackcheck.store.history import Grid, RunSummary, Streak, failing_streaks, plan_grid
from trackcheck.store.repository import Store

#: runs in the grid (its columns): Airflow's grid shows 25 by default too
GRID_RUNS = 25
#: runs the trends span (the grid shows the newest GRID_RUNS of them)
TREND_RUNS = 100
#: a run's pass rate is that of the last RATE_WINDOW runs with a verdict up to it
RATE_WINDOW = 10
#: failing runs a streak lists with their parameters
STREAK_RUNS = 10


@dataclass(frozen=True)
class FailingRun:
    """A run of a streak as the page links it: its parameters are what tells the failing tests apart."""

    run: RunSummary
    params: str


def failing_runs(streak: Streak) -> list[FailingRun]:
    return [FailingRun(run, params_text(run.params)) for run in streak.latest]


def streaks(store: Store, plans: list[str] | None = None) -> dict[str, Streak]:
    return failing_streaks(store, plans, show=STREAK_RUNS)


def plan_runs_context(store: Store, name: str) -> dict[str, Any]:
    """The grid, the streak and the trends of plan ``name``: four queries whatever its number of runs."""
    history = plan_grid(store, name, TREND_RUNS)
    shown = history.runs[-GRID_RUNS:]
    grid = Grid(runs=shown, stages=history.stages, cells=history.cells)
    streak = streaks(store, [name]).get(name)
    return {
        "grid": grid,
        "streak": streak,
        "failing_runs": failing_runs(streak) if streak else [],
        "trends": _trends(history) if history.runs else [],
        "trend_runs": len(history.runs),
    }


def _trends(history: Grid) -> list[Trend]:
    run_ids = [run.id for run in history.runs]
    rates: list[float | None] = []
    verdicts: list[bool] = []
    for run in history.runs:
        if run.status in (RunStatus.PASSED, RunStatus.FAILED, RunStatus.ERROR):
            verdicts.append(run.status == RunStatus.PASSED)
        recent = verdicts[-RATE_WINDOW:]
        rates.append(sum(recent) / len(recent) if recent and run.status != RunStatus.RUNNING else None)
    rate = trend_chart(
        "Pass rate",
        run_ids,
        {f"pass rate of the last {RATE_WINDOW} runs": rates},
        top=1.0,
        label=lambda share: f"{share:.0%}",
        summary=_rate_summary(history.runs, verdicts),
    )
    durations: dict[str, list[float | None]] = {
        stage: [
            cell.seconds if (cell := history.cells.get((run.id, stage))) is not None else None for run in history.runs
        ]
        for stage in history.stages
    }
    duration = trend_chart(
        "Stage duration",
        run_ids,
        durations,
        summary=_duration_summary(durations),
    )
    return [rate, duration]


def _rate_summary(runs: list[RunSummary], verdicts: list[bool]) -> str:
    if not verdicts:
        return f"No run of the last {len(runs)} has ended with a verdict yet."
    passed = sum(verdicts)
    return (
        f"{passed} of the {len(verdicts)} runs with a verdict passed ({passed / len(verdicts):.0%}); "
        f"the last {min(RATE_WINDOW, len(verdicts))}: {sum(verdicts[-RATE_WINDOW:])} passed."
    )


def _duration_summary(durations: dict[str, list[float | None]]) -> str:
    parts = []
    for stage, values in durations.items():
        known = [v for v in values if v is not None]
        if known:
            parts.append(f"{stage}: latest {known[-1]:.2f} s, slowest {max(known):.2f} s over {len(known)} runs")
        else:
            parts.append(f"{stage}: no run has finished it")
    return "; ".join(parts) + "."
