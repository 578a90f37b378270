"""A plan's history as the dashboard asks about it: its recent runs by stage (the grid), the streak of failed
runs it is on ("failing since"), and runs found by a parameter's value.

Each answer is one or two bounded queries, whatever the number of runs: a limit on the runs read, and
aggregates or window functions in the database rather than rows counted here. The queries run unchanged on
SQLite, PostgreSQL and MariaDB; only the match of a bare value against every parameter differs (each has
its own way to list a JSON object's values), and every value a user typed is a bound parameter.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Text, and_, exists, func, literal_column, or_, select, text
from sqlalchemy import cast as sql_cast

from trackcheck.states import RunStatus
from trackcheck.store.models import Run, RunStage
from trackcheck.store.ticks import aware

if TYPE_CHECKING:
    from trackcheck.store.repository import Store

#: the statuses of a streak: the run did not pass (its data was wrong, or a source could not be read)
NOT_PASSED = (RunStatus.FAILED, RunStatus.ERROR)
#: a parameter's name as a plan declares it (``plan.names.IDENTIFIER``), bounded
_PARAM_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,99}")
#: the longest value searched for: longer than any test id, short enough to stay a cheap comparison
MAX_PARAM_VALUE = 200


@dataclass(frozen=True)
class RunSummary:
    """A run as lists show it: enough to link it and say what it was run with."""

    id: str
    status: str
    created_at: datetime
    params: dict[str, Any]


@dataclass(frozen=True)
class Cell:
    """One run at one stage: its status and, once it ended, how long the stage took."""

    run_id: str
    idx: int
    name: str
    status: str
    started_at: datetime | None
    finished_at: datetime | None
    found: int | None
    expected: int | None

    @property
    def seconds(self) -> float | None:
        """From the stage starting to wait until it ended; None while it waits or when it never started."""
        if self.started_at is None or self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()


@dataclass(frozen=True)
class Grid:
    """The latest runs of a plan by its stages: ``runs`` oldest first (the newest is the right-most column,
    as in Airflow's grid), ``stages`` the rows, ``cells`` by (run id, stage name); a run of an older plan
    version without one of the stages has no cell there."""

    runs: list[RunSummary]
    stages: list[str]
    cells: dict[tuple[str, str], Cell]


@dataclass(frozen=True)
class Streak:
    """A plan's current run of runs that did not pass: since the first of them (``first``), ``count`` runs,
    the newest of which are ``latest`` (newest first), each with the parameters it was run with."""

    plan: str
    first: RunSummary
    count: int
    latest: list[RunSummary]


@dataclass(frozen=True)
class ParamQuery:
    """A search of runs by a parameter: ``name=value`` (that parameter has that value), or a bare ``value``
    (any parameter has it). Values compare as text: ``42`` finds ``{"n": 42}`` and ``{"n": "42"}``."""

    name: str | None
    value: str

    @classmethod
    def parse(cls, query: str) -> ParamQuery:
        """The search ``query`` as typed; ValueError saying what is wrong with it."""
        query = query.strip()
        if not query:
            raise ValueError("is empty: type a value (t-42) or name=value (test_id=t-42)")
        name: str | None = None
        value = query
        if "=" in query:
            name, value = (part.strip() for part in query.split("=", 1))
            if not _PARAM_NAME.fullmatch(name):
                raise ValueError(
                    f"{name!r} is not a parameter name: letters, digits and _, not starting with a digit"
                    " (write name=value, or the value alone to match any parameter)"
                )
        if not value:
            raise ValueError(f"has no value after {name}=")
        if len(value) > MAX_PARAM_VALUE:
            raise ValueError(f"the value is {len(value)} characters long; at most {MAX_PARAM_VALUE} are searched")
        return cls(name, value)

    def condition(self, dialect: str) -> Any:
        """The WHERE clause matching the runs this query finds, for the state database's ``dialect``."""
        if self.name is not None:
            # the JSON path and the value are both bound parameters on every dialect
            return sql_cast(Run.params[self.name].as_string(), Text) == self.value
        if dialect == "postgresql":
            values = func.json_each_text(Run.params).table_valued("value").alias("param_values")
            return exists(select(literal_column("1")).select_from(values).where(values.c.value == self.value))
        if dialect == "sqlite":
            values = func.json_each(Run.params).table_valued("value").alias("param_values")
            return exists(
                select(literal_column("1")).select_from(values).where(sql_cast(values.c.value, Text) == self.value)
            )
        # MariaDB/MySQL: JSON_TABLE lists the values; no SQLAlchemy construct renders it, the text is fixed
        return text(
            "EXISTS (SELECT 1 FROM JSON_TABLE(tc_runs.params, '$.*' COLUMNS (v TEXT PATH '$')) AS param_values"
            " WHERE param_values.v = :param_value)"
        ).bindparams(param_value=self.value)


def _summary(row: Any) -> RunSummary:
    created = aware(row.created_at)
    assert created is not None
    return RunSummary(row.id, row.status, created, dict(row.params or {}))


def plan_grid(store: Store, plan: str, limit: int) -> Grid:
    """The latest ``limit`` runs of ``plan`` by stage: two queries (the runs, then their stages' columns the
    grid shows: no evidence, no snapshot), whatever the plan's number of runs."""
    runs_query = (
        select(Run.id, Run.status, Run.created_at, Run.params)
        .where(Run.plan_name == plan)
        .order_by(Run.created_at.desc(), Run.id.desc())
        .limit(limit)
    )
    with store.session() as s:
        runs = [_summary(row) for row in s.execute(runs_query)]
        stage_rows = []
        if runs:
            stage_rows = list(
                s.execute(
                    select(
                        RunStage.run_id,
                        RunStage.idx,
                        RunStage.name,
                        RunStage.status,
                        RunStage.started_at,
                        RunStage.finished_at,
                        RunStage.found,
                        RunStage.expected,
                    ).where(RunStage.run_id.in_([run.id for run in runs]))
                )
            )
    cells = {
        (row.run_id, row.name): Cell(
            row.run_id,
            row.idx,
            row.name,
            row.status,
            aware(row.started_at),
            aware(row.finished_at),
            row.found,
            row.expected,
        )
        for row in stage_rows
    }
    # rows in stage order, the newest run's order first: a stage renamed or added later still gets a row
    newest_first = {run.id: rank for rank, run in enumerate(runs)}
    order: dict[str, tuple[int, int]] = {}
    for cell in cells.values():
        rank = (newest_first[cell.run_id], cell.idx)
        if cell.name not in order or rank < order[cell.name]:
            order[cell.name] = rank
    stages = sorted(order, key=lambda name: (order[name][1], order[name][0]))
    return Grid(runs=runs[::-1], stages=stages, cells=cells)


def failing_streaks(store: Store, plans: list[str] | None = None, show: int = 10) -> dict[str, Streak]:
    """Each plan's current streak, by plan name (``plans``: only those; None: every plan): the runs that
    did not pass (failed or error) since its last passed run, or since its first run if none passed.
    Running and cancelled runs neither break nor extend a streak; a plan whose latest ended verdict is
    ``passed`` has none.

    Two queries: when each plan last passed (one row per plan), then per plan the ``show`` newest runs of
    its streak, its first run and its length, by window functions over the streak's runs only. Joined in
    one statement instead, PostgreSQL without fresh statistics (a bulk of runs just written) chose to
    aggregate the passed runs again for each failed one: 2 s instead of 10 ms over 50,000 runs.
    """
    passed = select(Run.plan_name, func.max(Run.created_at)).where(Run.status == RunStatus.PASSED)
    if plans is not None:
        passed = passed.where(Run.plan_name.in_(plans))
    with store.session() as s:
        last_passed: dict[str, datetime] = {plan: at for plan, at in s.execute(passed.group_by(Run.plan_name))}
        since = [and_(Run.plan_name == plan, Run.created_at > at) for plan, at in last_passed.items()]
        streak = select(
            Run.id,
            Run.plan_name,
            Run.status,
            Run.created_at,
            Run.params,
            func.row_number()
            .over(partition_by=Run.plan_name, order_by=(Run.created_at.desc(), Run.id.desc()))
            .label("newest"),
            func.row_number().over(partition_by=Run.plan_name, order_by=(Run.created_at, Run.id)).label("oldest"),
            func.count().over(partition_by=Run.plan_name).label("total"),
        ).where(Run.status.in_(NOT_PASSED), or_(Run.plan_name.not_in(list(last_passed)), *since))
        if plans is not None:
            streak = streak.where(Run.plan_name.in_(plans))
        ranked = streak.subquery("streak")
        query = select(ranked).where(or_(ranked.c.newest <= show, ranked.c.oldest == 1)).order_by(ranked.c.newest)
        rows = list(s.execute(query))
    latest: dict[str, list[RunSummary]] = {}
    first: dict[str, tuple[RunSummary, int]] = {}
    for row in rows:
        run = _summary(row)
        if row.newest <= show:
            latest.setdefault(row.plan_name, []).append(run)
        if row.oldest == 1:
            first[row.plan_name] = (run, row.total)
    return {plan: Streak(plan, run, total, latest.get(plan, [])) for plan, (run, total) in first.items()}
