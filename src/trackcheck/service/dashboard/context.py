"""What the run pages show, read from the state database: the filtered runs list and one run with its
stages, polls, evidence and snapshots. A page and its htmx fragment render the same context."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from flask import abort, request
from sqlalchemy.exc import SQLAlchemyError

from trackcheck.compare.latency import measure
from trackcheck.compare.values import as_instant, display_key
from trackcheck.engine.result import EVIDENCE
from trackcheck.errors import RunNotFound, StoreError, TrackcheckError
from trackcheck.plan.model import Plan, StageSpec
from trackcheck.scheduling.distributed import QueueFacts
from trackcheck.service.app import current_service
from trackcheck.service.dashboard.charts import Arrival, arrival_chart, latency_chart
from trackcheck.service.dashboard.formatting import format_cell, params_text
from trackcheck.service.validation import MAX_OFFSET
from trackcheck.states import RunStatus
from trackcheck.store.database import describe_db_error
from trackcheck.store.history import ParamQuery
from trackcheck.store.models import PlanVersion, Poll, Run, RunStage, Snapshot
from trackcheck.store.repository import aware, utcnow

PAGE_SIZE = 25
#: pages beyond the API's largest offset are empty anyway; the offset must fit every database's integer
MAX_PAGE = MAX_OFFSET // PAGE_SIZE
#: rows of a snapshot, an evidence list or the poll timeline shown on a page (the API has them all)
SHOW_ROWS = 200
SHOW_POLLS = 300
SHOW_COLUMNS = 30
RUN_STATUSES = tuple(RunStatus)
#: how often (ms) fragments refresh: quickly while something runs, slowly on an idle runs list (new runs)
LIVE_MS = 1000
IDLE_MS = 10000


# -- the runs list ------------------------------------------------------------------------------------------
@dataclass
class RunRow:
    run: Run
    stages: list[RunStage]
    params: str

    @property
    def duration(self) -> float | None:
        end = aware(self.run.finished_at) or utcnow()
        start = aware(self.run.created_at)
        return (end - start).total_seconds() if start else None


def _filters() -> tuple[str, str, int, ParamQuery | None]:
    """The runs list's filters from the query string; a ``param`` search that cannot be read is a 400."""
    plan = request.args.get("plan", "").strip()
    status = request.args.get("status", "").strip()
    if status not in RUN_STATUSES:
        status = ""
    try:
        page = min(max(1, int(request.args.get("page", "1"))), MAX_PAGE)
    except ValueError:
        page = 1
    param = request.args.get("param", "")
    try:
        query = ParamQuery.parse(param) if param.strip() else None
    except ValueError as exc:
        abort(400, f"Search by parameter (param): {exc}.")
    return plan, status, page, query


def runs_context() -> dict[str, Any]:
    plan, status, page, query = _filters()
    store = current_service().engine.store
    runs, total = store.list_runs(
        plan=plan or None, status=status or None, limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE, param=query
    )
    stages = store.stages_of([r.id for r in runs])
    rows = [RunRow(run, stages.get(run.id, []), params_text(run.params)) for run in runs]
    running = any(r.run.status == "running" for r in rows)
    pages = max(1, math.ceil(total / PAGE_SIZE))
    return {
        "rows": rows,
        "total": total,
        "page": page,
        "pages": pages,
        "first": (page - 1) * PAGE_SIZE + 1 if rows else 0,
        "last": (page - 1) * PAGE_SIZE + len(rows),
        "plan": plan,
        "status": status,
        "param": request.args.get("param", "").strip() if query else "",
        "refresh_ms": LIVE_MS if running else IDLE_MS,
        "running": running,
        "now": utcnow(),
        "queue": _queue(),
    }


def _queue() -> QueueFacts | str | None:
    """Backend ``procrastinate``: the poll workers and their queue, or why they cannot be shown; None with
    APScheduler (this deployment's poller polls itself)."""
    service = current_service()
    if service.config.scheduler.backend != "procrastinate":
        return None
    try:
        return service.queue()
    except SQLAlchemyError as exc:
        return f"poll workers unknown: {describe_db_error(exc)}"


# -- one run -------------------------------------------------------------------------------------------------
@dataclass
class Records:
    """A stage's snapshot as a table: the first SHOW_ROWS records, columns in order of first appearance."""

    columns: list[str]
    rows: list[list[Any]]
    shown: int
    total: int
    truncated: bool
    more_columns: int
    #: per cell of ``rows``, the value the reference had where this one differs (a mismatch), else MATCHED
    expected: list[list[Any]] = field(default_factory=list)


#: a records-table cell whose field is not among the stage's mismatches
MATCHED = object()


def _records(
    snapshot: Any, found: int | None, mismatches: list[Any] | None = None, key: list[str] | None = None
) -> Records | None:
    """The snapshot's table; none when nothing was read yet. A stage whose polls have found nothing so far
    has no snapshot (the engine stores none until something is found): its table is empty, not unread.
    With the stage's ``mismatches`` and its plan's ``key`` fields, each cell of a mismatched field of a
    mismatched record knows the value expected there: the page marks that cell, not only the row."""
    if snapshot is None:
        return Records([], [], 0, 0, False, 0) if found == 0 else None
    records = [r for r in (snapshot.records or [])[:SHOW_ROWS] if isinstance(r, dict)]
    columns: list[str] = []
    for record in records:
        columns.extend(k for k in record if k not in columns)
    shown_columns = columns[:SHOW_COLUMNS]
    rows = [[record.get(c) for c in shown_columns] for record in records]
    return Records(
        columns=shown_columns,
        rows=rows,
        shown=len(rows),
        total=snapshot.total,
        truncated=bool(snapshot.truncated),
        more_columns=len(columns) - len(shown_columns),
        expected=_expected_cells(records, shown_columns, mismatches or [], key),
    )


def _expected_cells(
    records: list[dict[str, Any]], columns: list[str], mismatches: list[Any], key: list[str] | None
) -> list[list[Any]]:
    """For each shown cell, the expected value of its mismatch (MATCHED if none): mismatches name their
    record by its key as users read it (``display_key``), matched here as JSON text."""
    cells = [[MATCHED] * len(columns) for _ in records]
    if not mismatches or not key:
        return cells
    text = json.JSONEncoder(sort_keys=True, default=str).encode
    rows = {text(display_key(record, key)): index for index, record in reversed(list(enumerate(records)))}
    places = {column: index for index, column in enumerate(columns)}
    for mismatch in mismatches:
        if not isinstance(mismatch, dict):
            continue
        row, column = rows.get(text(mismatch.get("key"))), places.get(str(mismatch.get("field")))
        if row is not None and column is not None:
            cells[row][column] = mismatch.get("expected")
    return cells


@dataclass
class StageView:
    """Everything the run page shows about one stage."""

    stage: RunStage
    evidence: dict[str, list[Any]]
    truncated: dict[str, int]
    records: Records | None

    @property
    def has_evidence(self) -> bool:
        return any(self.evidence.values())

    @property
    def worth_showing(self) -> bool:
        """In "Differences": stages with evidence, or a verdict/error to explain (not "skipped" notes)."""
        explained = self.stage.status in ("waiting", "failed", "error") and bool(self.stage.reason or self.stage.error)
        return self.has_evidence or explained


def run_context(run_id: str) -> dict[str, Any]:
    engine = current_service().engine
    try:
        run = engine.store.run(run_id)
    except RunNotFound:
        abort(404, f"There is no run {run_id!r}.")
    stages = engine.store.run_stages(run_id)
    polls = engine.store.polls(run_id)
    snapshots = engine.store.snapshots(run_id)
    version: PlanVersion | None
    try:
        version = engine.store.plan_version(run.plan_id)
    except StoreError:
        version = None
    plan = _plan(run)
    views = []
    for stage in stages:
        evidence = stage.evidence or {}
        views.append(
            StageView(
                stage=stage,
                evidence={name: list(evidence.get(name) or [])[:SHOW_ROWS] for name in EVIDENCE},
                truncated={
                    name: len(evidence.get(name) or [])
                    for name in EVIDENCE
                    if len(evidence.get(name) or []) > SHOW_ROWS
                }
                | dict(evidence.get("truncated") or {}),
                records=_records(
                    snapshots.get(stage.idx),
                    stage.found,
                    list(evidence.get("mismatches") or [])[:SHOW_ROWS],
                    _key(plan, stage),
                ),
            )
        )
    names = {stage.idx: stage.name for stage in stages}
    start = aware(run.created_at)
    return {
        "run": run,
        "version": version,
        "params": {k: format_cell(v) for k, v in run.params.items()},
        "overrides": {k: v for k, v in (run.overrides or {}).items() if v is not None},
        "stages": stages,
        "views": views,
        "polls": polls[-SHOW_POLLS:],
        "poll_total": len(polls),
        "poll_offset": {p.id: _offset(start, p) for p in polls[-SHOW_POLLS:]},
        "stage_names": names,
        "chart": latency_chart(run, stages),
        "arrivals": _arrivals(run, stages, snapshots, plan),
        "running": run.status == "running",
        "refresh_ms": LIVE_MS,
        "now": utcnow(),
        "show_rows": SHOW_ROWS,
        "matched": MATCHED,
    }


def _plan(run: Run) -> Plan | None:
    """The run's plan version, or None if it no longer loads: its runs can still be shown."""
    try:
        return current_service().engine.plan(run.plan_id)
    except TrackcheckError:
        return None


def _spec(plan: Plan | None, stage: RunStage) -> StageSpec | None:
    """The plan's declaration of ``stage``, if the plan still has it at its place under its name."""
    if plan is None or stage.idx >= len(plan.stages) or plan.stages[stage.idx].name != stage.name:
        return None
    return plan.stages[stage.idx]


def _key(plan: Plan | None, stage: RunStage) -> list[str] | None:
    spec = _spec(plan, stage)
    return plan.key_for(spec) if plan is not None and spec is not None else None


def _arrivals(run: Run, stages: list[RunStage], snapshots: dict[int, Snapshot], plan: Plan | None) -> list[Arrival]:
    """The per-event arrival chart of each stage that keeps first-seen times and found something: lateness
    when the stage has a ``time_field`` (read from the run's plan version), else time since the stage
    started."""
    charts = []
    for stage in stages:
        snapshot = snapshots.get(stage.idx)
        first_seen = snapshot.first_seen if snapshot is not None else None
        if snapshot is None or not first_seen:
            continue
        spec = _spec(plan, stage)
        if plan is not None and spec is not None and spec.time_field:
            records = [r for r in snapshot.records or [] if isinstance(r, dict)]
            lateness = measure(records, plan.key_for(spec), spec.time_field, first_seen)
            bounds = {}
            if spec.latency is not None:
                bounds = {
                    name: bound.total_seconds()
                    for name in ("p50", "p95", "p99", "max")
                    if (bound := getattr(spec.latency, name)) is not None
                }
            charts.append(
                arrival_chart(
                    stage,
                    lateness.seconds,
                    time_field=spec.time_field,
                    unreadable=len(lateness.unreadable),
                    bounds=bounds,
                )
            )
            continue
        started = aware(stage.started_at)
        if started is None:
            continue
        seen = [as_instant(moment) for moment in first_seen.values()]
        charts.append(arrival_chart(stage, [(moment - started).total_seconds() for moment in seen if moment]))
    return charts


def _offset(start: datetime | None, poll: Poll) -> float | None:
    polled = aware(poll.polled_at)
    return (polled - start).total_seconds() if start and polled else None
