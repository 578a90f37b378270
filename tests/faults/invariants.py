"""What every fault scenario must leave behind, read from the state database alone (read-only SQL).

- **lost**: a run the service accepted (202 with its id) that is not in ``tc_runs``;
- **stuck**: a run still ``running`` after the deadline of the stage it waits at, plus a grace;
- **duplicated transitions**: a stage with more than one ``passed``/``failed`` poll, or polled again after it
  had ended (a second terminal poll of any outcome: the first one set ``finished_at``);
- **double polls**: a stage whose ``tc_polls`` rows are not as many as its ``attempts`` (two pollers wrote
  the same tick);
- **inconsistent**: an ended run whose stages disagree with it (passed: every stage passed; failed/error:
  exactly one stage ended so, those before it passed, those after it skipped);
- **wrong outcome**: an ended run whose status is not the one its scenario expects, or whose deciding stage
  does not give the reason expected.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.exc import SQLAlchemyError

ENDED = ("passed", "failed", "error", "cancelled")


@dataclass(frozen=True)
class Expected:
    """What a run must end as: one of ``statuses``, its deciding stage's reason containing ``reason``
    (case-insensitive; ``""``: any non-empty reason); ``label`` names the fate in messages."""

    label: str
    statuses: frozenset[str]
    reason: str | None = None


@dataclass
class Verdict:
    runs: int
    lost: list[str] = field(default_factory=list)
    stuck: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    double_polls: list[str] = field(default_factory=list)
    inconsistent: list[str] = field(default_factory=list)
    wrong: list[str] = field(default_factory=list)
    outcomes: Counter[str] = field(default_factory=Counter)

    @property
    def ok(self) -> bool:
        return not (self.lost or self.stuck or self.duplicated or self.double_polls or self.inconsistent or self.wrong)

    def line(self, title: str, seconds: float) -> str:
        """The one-line summary a scenario prints."""
        ended = ", ".join(f"{status} {n}" for status, n in sorted(self.outcomes.items()))
        return (
            f"{title}: {self.runs} runs ({ended}), lost {len(self.lost)}, stuck {len(self.stuck)}, "
            f"duplicated transitions {len(self.duplicated)}, double polls {len(self.double_polls)}, "
            f"inconsistent {len(self.inconsistent)}, wrong outcome {len(self.wrong)} ({seconds:.0f} s)"
        )

    def details(self, limit: int = 8) -> str:
        parts = []
        for name in ("lost", "stuck", "duplicated", "double_polls", "inconsistent", "wrong"):
            items: list[str] = getattr(self, name)
            if items:
                more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
                parts.append(f"{name}:\n  " + "\n  ".join(items[:limit]) + more)
        return "\n".join(parts)


def reader(db_url: str) -> Engine:
    """An engine whose sessions cannot write (the checks only look)."""
    engine = create_engine(db_url, connect_args=_connect_args(db_url))

    @event.listens_for(engine, "connect")
    def _read_only(dbapi_connection: Any, _record: Any) -> None:
        statement = {
            "sqlite": "PRAGMA query_only = ON",
            "postgresql": "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY",
            "mysql": "SET SESSION TRANSACTION READ ONLY",
        }[engine.dialect.name]
        cursor = dbapi_connection.cursor()
        cursor.execute(statement)
        cursor.close()
        if engine.dialect.name != "sqlite":
            dbapi_connection.commit()

    return engine


def _connect_args(db_url: str) -> dict[str, Any]:
    if db_url.startswith("sqlite"):
        return {"timeout": 30}
    return {"connect_timeout": 5}


def as_utc(moment: datetime | str | None) -> datetime | None:
    """A stored time as an aware UTC datetime (SQLite and MariaDB hand back naive ones)."""
    if isinstance(moment, str):  # SQLite through plain SQL
        moment = datetime.fromisoformat(moment)
    if moment is not None and moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment


@dataclass
class _State:
    runs: dict[str, dict[str, Any]]
    stages: dict[str, list[dict[str, Any]]]
    polls: list[dict[str, Any]]


def _read(engine: Engine, with_polls: bool = True) -> _State:
    with engine.connect() as connection:
        runs = {row["id"]: row for row in _rows(connection, "SELECT id, status, created_at, finished_at FROM tc_runs")}
        stages: defaultdict[str, list[dict[str, Any]]] = defaultdict(list)
        for row in _rows(
            connection,
            "SELECT run_id, idx, name, status, attempts, deadline, finished_at, reason, error "
            "FROM tc_run_stages ORDER BY run_id, idx",
        ):
            stages[row["run_id"]].append(row)
        polls = (
            _rows(connection, "SELECT run_id, stage_idx, outcome, polled_at FROM tc_polls ORDER BY id")
            if with_polls
            else []
        )
    return _State(runs, dict(stages), polls)


def _rows(connection: Any, sql: str) -> list[dict[str, Any]]:
    rows = [dict(row._mapping) for row in connection.execute(text(sql))]
    for row in rows:
        for name in ("created_at", "finished_at", "deadline", "polled_at"):
            if name in row:
                row[name] = as_utc(row[name])
    return rows


def _due(run: dict[str, Any], stages: list[dict[str, Any]]) -> datetime:
    """When a running run should have moved at the latest: its waiting stage's deadline (if it waits nowhere,
    which never happens to a healthy run, the last time anything happened to it)."""
    deadlines: list[datetime] = [s["deadline"] for s in stages if s["status"] == "waiting" and s["deadline"]]
    if deadlines:
        return max(deadlines)
    moments: list[datetime] = [run["created_at"], *(s["finished_at"] for s in stages if s["finished_at"])]
    return max(moments)


def settle(db_url: str, run_ids: list[str], grace: float, cap: float = 900) -> float:
    """Wait until every run ended, or each one still running is past its deadline plus ``grace`` (stuck);
    returns the seconds waited. The database may be unreachable for a while: it is asked again."""
    began = time.monotonic()
    engine = reader(db_url)
    wanted = set(run_ids)
    try:
        while time.monotonic() < began + cap:
            try:
                state = _read(engine, with_polls=False)
            except SQLAlchemyError:
                time.sleep(0.5)
                continue
            now = datetime.now(UTC)
            running = [r for i, r in state.runs.items() if i in wanted and r["status"] == "running"]
            late = now - timedelta(seconds=grace)
            if all(_due(r, state.stages.get(r["id"], [])) < late for r in running):
                return time.monotonic() - began
            time.sleep(0.5)
        return time.monotonic() - began
    finally:
        engine.dispose()


def check(db_url: str, expected: Mapping[str, Expected], grace: float) -> Verdict:
    """The invariants over the runs in ``expected`` (every run the scenario had accepted)."""
    engine = reader(db_url)
    try:
        state = _read(engine)
    finally:
        engine.dispose()
    verdict = Verdict(runs=len(expected))
    now = datetime.now(UTC)
    for run_id, want in expected.items():
        run = state.runs.get(run_id)
        if run is None:
            verdict.lost.append(f"{run_id} ({want.label})")
            continue
        stages = state.stages.get(run_id, [])
        verdict.outcomes[run["status"]] += 1
        if run["status"] == "running":
            due = _due(run, stages)
            if due + timedelta(seconds=grace) < now:
                where = next((s["name"] for s in stages if s["status"] == "waiting"), "no waiting stage")
                verdict.stuck.append(
                    f"{run_id} ({want.label}) running at {where}, {(now - due).total_seconds():.0f} s past its deadline"
                )
            continue
        problem = _inconsistency(run, stages)
        if problem:
            verdict.inconsistent.append(f"{run_id} ({want.label}): {problem}")
        wrong = _wrong(run, stages, want)
        if wrong:
            verdict.wrong.append(f"{run_id} ({want.label}): {wrong}")
    _polls(state, set(expected), verdict)
    return verdict


def _inconsistency(run: dict[str, Any], stages: list[dict[str, Any]]) -> str | None:
    statuses = [s["status"] for s in stages]
    if run["finished_at"] is None:
        return f"{run['status']} without finished_at"
    if run["status"] == "passed":
        return None if all(s == "passed" for s in statuses) else f"passed with stages {statuses}"
    if run["status"] in ("failed", "error"):
        ended = [i for i, s in enumerate(statuses) if s == run["status"]]
        if len(ended) != 1:
            return f"{run['status']} with stages {statuses}"
        at = ended[0]
        if any(s != "passed" for s in statuses[:at]) or any(s != "skipped" for s in statuses[at + 1 :]):
            return f"{run['status']} with stages {statuses}"
    return None


def _wrong(run: dict[str, Any], stages: list[dict[str, Any]], want: Expected) -> str | None:
    status = run["status"]
    deciding = next((s for s in stages if s["status"] == status), stages[-1] if stages else None)
    reason = (deciding or {}).get("reason") or ""
    said = f"{status} at {(deciding or {}).get('name')}: {reason[:200]!r}"
    if status not in want.statuses:
        return f"ended {said}, expected {'/'.join(sorted(want.statuses))}"
    if status != "passed" and not reason.strip():
        return f"ended {said} without a reason"
    if want.reason and want.reason.lower() not in reason.lower():
        return f"ended {said}, the reason should mention {want.reason!r}"
    return None


def _polls(state: _State, runs: set[str], verdict: Verdict) -> None:
    terminal: Counter[tuple[str, int]] = Counter()
    count: Counter[tuple[str, int]] = Counter()
    after_end: Counter[tuple[str, int]] = Counter()
    ended = {
        (s["run_id"], s["idx"]): s["finished_at"]
        for run_id in runs
        for s in state.stages.get(run_id, [])
        if s["finished_at"] is not None
    }
    for poll in state.polls:
        key = (poll["run_id"], poll["stage_idx"])
        if key[0] not in runs:
            continue
        count[key] += 1
        if poll["outcome"] in ("passed", "failed"):
            terminal[key] += 1
        finished = ended.get(key)
        if finished is not None and poll["polled_at"] > finished:
            after_end[key] += 1
    for key, n in sorted(terminal.items()):
        if n > 1:
            verdict.duplicated.append(f"{key[0]} stage {key[1]}: {n} passed/failed polls")
    for key, n in sorted(after_end.items()):
        verdict.duplicated.append(f"{key[0]} stage {key[1]}: polled {n} time(s) after it ended")
    for run_id in sorted(runs):
        for stage in state.stages.get(run_id, []):
            key = (run_id, stage["idx"])
            if count[key] != (stage["attempts"] or 0):
                verdict.double_polls.append(
                    f"{run_id} stage {stage['idx']}: {count[key]} polls for {stage['attempts']} attempts"
                )
