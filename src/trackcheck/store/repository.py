"""The Store: every read and write of trackcheck's state, in as few round trips as a tick allows.

A poll tick over thousands of runs writes its outcome with a handful of bulk statements (insert polls,
update run stages, replace snapshots, finish runs), never one statement per run.
"""

from __future__ import annotations

import itertools
import threading
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence, Set
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from operator import attrgetter
from typing import Any, cast

from sqlalchemy import (
    JSON,
    Engine,
    Integer,
    String,
    Table,
    Text,
    and_,
    any_,
    bindparam,
    case,
    delete,
    func,
    insert,
    null,
    select,
    text,
    update,
)
from sqlalchemy import cast as sql_cast
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker, undefer
from sqlalchemy.pool import StaticPool

from trackcheck.errors import RunNotFound, StoreError, Superseded
from trackcheck.plan.masking import mask_url_passwords
from trackcheck.states import RUN_ENDED, RunStatus, StageStatus
from trackcheck.store.database import create_state_engine, describe_db_error, is_data_error, migrate
from trackcheck.store.history import ParamQuery
from trackcheck.store.models import (
    GroupTick,
    LoginSession,
    PlanVersion,
    Poll,
    PollerEpoch,
    PollWorker,
    Run,
    RunStage,
    Schedule,
    Snapshot,
)
from trackcheck.store.ticks import (
    POLLER_LEASE,
    Claim,
    NewRun,
    NewStage,
    QuietPolls,
    SnapshotRow,
    StageUpdate,
    TickWrite,
    Waiting,
    aware,
    bind_values,
    column_values,
    field_names,
    json_text,
)


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Retention:
    """How long the state database keeps history: polls for ``polls``, ended runs (with their stages, polls
    and snapshots) for ``runs`` after they finished; None keeps them forever. The poller prunes every ``every``."""

    polls: timedelta | None = None
    runs: timedelta | None = None
    every: timedelta = timedelta(minutes=10)

    @property
    def enabled(self) -> bool:
        return self.polls is not None or self.runs is not None

    def cutoffs(self, now: datetime) -> tuple[datetime | None, datetime | None]:
        """The ``polls_before`` and ``runs_before`` of ``Store.prune`` at ``now``."""
        return (
            now - self.polls if self.polls is not None else None,
            now - self.runs if self.runs is not None else None,
        )


@dataclass(frozen=True)
class PruneCounts:
    """The rows one ``Store.prune`` deleted, per table."""

    runs: int = 0
    stages: int = 0
    polls: int = 0
    snapshots: int = 0

    def __add__(self, other: PruneCounts) -> PruneCounts:
        return PruneCounts(
            self.runs + other.runs,
            self.stages + other.stages,
            self.polls + other.polls,
            self.snapshots + other.snapshots,
        )

    @property
    def total(self) -> int:
        return self.runs + self.stages + self.polls + self.snapshots


@dataclass
class GroupInfo:
    """An active stage group: the runs waiting at one stage that share one job and one query."""

    group_key: str
    plan_id: int
    idx: int
    overrides: dict[str, Any]
    waiting: int
    #: runs never polled yet (they get a prompt first poll)
    fresh: int
    earliest_deadline: datetime | None
    #: the latest start of a run's stage here (the poller's sync looks for newer ones)
    latest_start: datetime | None = None


#: from this many runs, a batch submit on PostgreSQL is written with COPY rather than INSERT
COPY_FROM = 50


class Store:
    """The state database. No I/O until ``open()``; ``close()`` releases the pool."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._engine: Engine | None = None
        self._sessions: sessionmaker[Session] | None = None
        # an in-memory SQLite database is one connection shared by every thread: take turns on it
        self._turns: AbstractContextManager[Any] = nullcontext()
        # SQLite has one writer at a time, and a writer that finds the lock taken sleeps in growing steps
        # (up to 100 ms) before it retries: the threads of this process queue for it here instead
        self._writes: AbstractContextManager[Any] = nullcontext()
        self._largest_blob: int | None = None

    def open(self) -> Store:
        if self._engine is None:
            self._engine = create_state_engine(self.url)
            migrate(self._engine)
            self._sessions = sessionmaker(self._engine, expire_on_commit=False)
            if isinstance(self._engine.pool, StaticPool):
                self._turns = threading.RLock()
            if self._engine.dialect.name == "sqlite":
                self._writes = threading.RLock()
        return self

    @property
    def dialect(self) -> str:
        """The state database's SQLAlchemy dialect: ``postgresql``, ``sqlite``, ``mysql``..."""
        assert self._engine is not None, "open() the store first"
        return self._engine.dialect.name

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = self._sessions = None

    @property
    def in_memory(self) -> bool:
        """An in-memory SQLite database: gone with this process (``verify()``, tests)."""
        return isinstance(self.engine.pool, StaticPool)

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self.open()
        assert self._engine is not None
        return self._engine

    @contextmanager
    def session(self, *, write: bool = False) -> Iterator[Session]:
        """A transaction; database errors become StoreError (masked), the driver's error kept as cause.
        ``write``: it writes (on SQLite, writers of this process then take turns)."""
        if self._sessions is None:
            self.open()
        assert self._sessions is not None
        with self._turns, self._writes if write else nullcontext():
            session = self._sessions()
            try:
                yield session
                session.commit()
            except SQLAlchemyError as exc:
                session.rollback()
                message = f"state database error: {describe_db_error(exc)}"
                raise StoreError(message, data_error=is_data_error(exc)) from exc
            except BaseException:
                session.rollback()
                raise
            finally:
                session.close()

    def ping(self) -> None:
        """StoreError unless the state database answers (health checks: cheap whatever its size)."""
        with self.session() as s:
            s.execute(select(1))

    # -- plans -----------------------------------------------------------------------------------------
    def save_plan(
        self, name: str, text: str, base_dir: str | None, *, trusted: bool = True, sealed: str | None = None
    ) -> PlanVersion:
        """Store plan text as a new version of ``name``, or return the latest one if nothing changed.

        ``trusted``: the operator's plan (plans folder, CLI), not one sent over the API; ``sealed``: the
        full text encrypted, ``text`` then being the masked copy (never compared: a new seal each time)."""
        with self.session(write=True) as s:
            latest = s.scalars(
                select(PlanVersion).where(PlanVersion.name == name).order_by(PlanVersion.version.desc()).limit(1)
            ).first()
            unchanged = latest is not None and latest.text == text and latest.base_dir == base_dir
            if (
                latest is not None
                and unchanged
                and not latest.deleted
                and (latest.trusted or not trusted)  # the operator's own text stays trusted when uploaded again
                and sealed is None
                and latest.sealed is None
            ):
                return latest
            version = PlanVersion(
                name=name,
                version=(latest.version + 1) if latest else 1,
                text=text,
                base_dir=base_dir,
                created_at=utcnow(),
                deleted=False,
                trusted=trusted,
                sealed=sealed,
            )
            s.add(version)
            s.flush()
            return version

    def plan_version(self, plan_id: int) -> PlanVersion:
        with self.session() as s:
            version = s.get(PlanVersion, plan_id)
            if version is None:
                raise StoreError(f"plan version {plan_id} does not exist")
            return version

    def latest_plans(self) -> list[PlanVersion]:
        """The newest version of every plan that is not deleted."""
        with self.session() as s:
            newest = (
                select(PlanVersion.name, func.max(PlanVersion.version).label("v")).group_by(PlanVersion.name).subquery()
            )
            rows = s.scalars(
                select(PlanVersion)
                .join(newest, and_(PlanVersion.name == newest.c.name, PlanVersion.version == newest.c.v))
                .where(PlanVersion.deleted.is_(False))
                .order_by(PlanVersion.name)
            )
            return list(rows)

    def latest_plan(self, name: str) -> PlanVersion | None:
        with self.session() as s:
            latest = s.scalars(
                select(PlanVersion).where(PlanVersion.name == name).order_by(PlanVersion.version.desc()).limit(1)
            ).first()
            return None if latest is None or latest.deleted else latest

    def plan_history(self, name: str) -> list[PlanVersion]:
        with self.session() as s:
            return list(
                s.scalars(select(PlanVersion).where(PlanVersion.name == name).order_by(PlanVersion.version.desc()))
            )

    def delete_plan(self, name: str) -> bool:
        """Mark every version deleted: runs keep the version they started with."""
        with self.session(write=True) as s:
            result = s.execute(
                update(PlanVersion).where(PlanVersion.name == name, PlanVersion.deleted.is_(False)).values(deleted=True)
            )
            return bool(result.rowcount)  # type: ignore[attr-defined]

    # -- runs ------------------------------------------------------------------------------------------
    def create_runs(self, prepared: Iterable[tuple[NewRun, Sequence[NewStage]]], count: int) -> list[NewStage]:
        """Store ``count`` new runs and their stages, as ``prepared`` yields them, in one transaction; the
        stages stored. All or nothing: an exception ``prepared`` raises (a run found wrong) rolls back what
        was written.

        Two Core inserts (executemany), not the ORM's unit of work: this is the one write on the path of
        ``POST /api/runs`` and ``POST /api/runs/batch`` (benchmarks B3 and B7). On PostgreSQL a batch of
        ``COPY_FROM`` runs or more is a COPY instead, into which each run is streamed as soon as it is
        prepared: the database stores it on another core while the next runs are prepared.
        """
        if count <= 0:
            return []
        if self.open().dialect != "postgresql" or count < COPY_FROM:
            pairs = list(prepared)  # before the transaction: preparing may read the store (SQLite: one writer)
            stages = [stage for _, own in pairs for stage in own]
            with self.session(write=True) as s:
                s.execute(insert(cast(Table, Run.__table__)), [column_values(run) for run, _ in pairs])
                s.execute(insert(cast(Table, RunStage.__table__)), [column_values(stage) for stage in stages])
            return stages
        stages = []

        def runs() -> Iterator[NewRun]:
            for run, own in prepared:
                stages.extend(own)
                yield run

        with self.session(write=True) as s:
            # COPY: the driver streams the rows; an INSERT of many VALUES spent 3/4 of a batch submit binding
            # and serialising them in Python (benchmark B7)
            driver = s.connection().connection.driver_connection
            with driver.cursor() as cursor, _driver_errors():  # type: ignore[union-attr]
                _copy(cursor, cast(Table, Run.__table__), runs())
                _copy(cursor, cast(Table, RunStage.__table__), stages)
        return stages

    def run(self, run_id: str) -> Run:
        with self.session() as s:
            run = s.get(Run, run_id)
            if run is None:
                raise RunNotFound("no such run", run=run_id)
            return run

    def run_stages(self, run_id: str) -> list[RunStage]:
        with self.session() as s:
            return list(s.scalars(select(RunStage).where(RunStage.run_id == run_id).order_by(RunStage.idx)))

    def polls(self, run_id: str) -> list[Poll]:
        with self.session() as s:
            return list(s.scalars(select(Poll).where(Poll.run_id == run_id).order_by(Poll.id)))

    def snapshots(self, run_id: str) -> dict[int, Snapshot]:
        with self.session() as s:
            return {snap.stage_idx: snap for snap in s.scalars(select(Snapshot).where(Snapshot.run_id == run_id))}

    def list_runs(
        self,
        plan: str | None = None,
        status: str | None = None,
        limit: int = 50,
        offset: int = 0,
        param: ParamQuery | None = None,
    ) -> tuple[list[Run], int]:
        """Runs newest first, filtered (``param``: the runs with that parameter value), with the total count
        for pagination."""
        query = select(Run)
        if plan:
            query = query.where(Run.plan_name == plan)
        if status:
            query = query.where(Run.status == status)
        if param is not None:
            query = query.where(param.condition(self.open().dialect))
        with self.session() as s:
            total = s.scalar(select(func.count()).select_from(query.subquery())) or 0
            runs = s.scalars(query.order_by(Run.created_at.desc(), Run.id).limit(limit).offset(offset))
            return list(runs), total

    def stages_of(self, run_ids: Sequence[str]) -> dict[str, list[RunStage]]:
        """The stages of many runs (a page of a list) in one query, in stage order."""
        grouped: dict[str, list[RunStage]] = {run_id: [] for run_id in run_ids}
        if not run_ids:
            return grouped
        query = select(RunStage).where(RunStage.run_id.in_(list(run_ids))).order_by(RunStage.run_id, RunStage.idx)
        with self.session() as s:
            for stage in s.scalars(query):
                grouped[stage.run_id].append(stage)
        return grouped

    def runs_by_status(self) -> dict[str, int]:
        with self.session() as s:
            return {status: count for status, count in s.execute(select(Run.status, func.count()).group_by(Run.status))}

    def finish_run(
        self, run_id: str, status: str, error: str | None = None, notify: dict[str, Any] | None = None
    ) -> bool:
        """End a running run (cancel, abort); its active stage becomes skipped. False if it had ended."""
        now = utcnow()
        with self.session(write=True) as s:
            done = s.execute(
                update(Run)
                .where(Run.id == run_id, Run.status == RunStatus.RUNNING)
                .values(status=status, finished_at=now, error=error, notify=notify, notify_due=notify and now)
            )
            if not done.rowcount:  # type: ignore[attr-defined]
                return False
            s.execute(
                update(RunStage)
                .where(RunStage.run_id == run_id, RunStage.status.in_((StageStatus.WAITING, StageStatus.PENDING)))
                .values(status=StageStatus.SKIPPED, finished_at=now, reason=f"run {status}")
            )
            return True

    # -- schedules and notifications -------------------------------------------------------------------
    def add_schedule(self, schedule: Schedule) -> Schedule:
        with self.session(write=True) as s:
            s.add(schedule)
        return schedule

    def replace_schedule(self, schedule: Schedule) -> bool:
        """Write ``schedule`` over its row (all but its id, creation and last firing); False if there is none."""
        values = {
            "plan_name": schedule.plan_name,
            "cron": schedule.cron,
            "params": schedule.params,
            "expect": schedule.expect,
            "overrides": schedule.overrides,
            "paused": schedule.paused,
        }
        with self.session(write=True) as s:
            written = s.execute(update(Schedule).where(Schedule.id == schedule.id).values(**values))
            return bool(cast(Any, written).rowcount)

    def schedules(self) -> list[Schedule]:
        with self.session() as s:
            return list(s.scalars(select(Schedule).order_by(Schedule.created_at, Schedule.id)))

    def schedule(self, schedule_id: str) -> Schedule | None:
        with self.session() as s:
            return s.get(Schedule, schedule_id)

    def delete_schedule(self, schedule_id: str) -> bool:
        with self.session(write=True) as s:
            return bool(s.execute(delete(Schedule).where(Schedule.id == schedule_id)).rowcount)  # type: ignore[attr-defined]

    def schedule_fired(self, schedule_id: str, run_id: str | None, error: str | None) -> None:
        with self.session(write=True) as s:
            s.execute(update(Schedule).where(Schedule.id == schedule_id).values(last_run_id=run_id, last_error=error))

    def due_notifications(self, now: datetime, limit: int = 50) -> list[Run]:
        """Ended runs whose webhook notification is due (oldest first)."""
        with self.session() as s:
            query = select(Run).where(Run.notify_due <= now).order_by(Run.notify_due).limit(limit)
            return list(s.scalars(query))

    def record_notification(self, run_id: str, notify: dict[str, Any], due: datetime | None) -> None:
        """The outcome of a delivery attempt; ``due`` is the next attempt, None once delivered or given up."""
        with self.session(write=True) as s:
            s.execute(update(Run).where(Run.id == run_id).values(notify=notify, notify_due=due))

    # -- the poller ------------------------------------------------------------------------------------
    def active_groups(self, group_keys: Iterable[str] | None = None) -> list[GroupInfo]:
        """Every group with runs waiting (optionally only the given ones), with what scheduling needs."""
        query = self._groups()
        if group_keys is not None:
            query = query.where(RunStage.group_key.in_(list(group_keys)))
        return self._group_infos(query)

    def groups_started_since(self, since: datetime) -> list[GroupInfo]:
        """The groups where a run, never polled yet, started waiting at ``since`` or later: what the poller's
        sync schedules between its full looks (an index range on ``started_at``, not every waiting run)."""
        query = self._groups().where(RunStage.started_at >= since, RunStage.attempts == 0)
        return self._group_infos(query)

    @staticmethod
    def _groups() -> Any:
        return (
            select(
                RunStage.group_key,
                func.min(Run.plan_id),
                func.min(RunStage.idx),
                func.min(Run.id),
                func.count(),
                func.min(RunStage.attempts),
                func.min(RunStage.deadline),
                func.max(RunStage.started_at),
            )
            .join(Run, Run.id == RunStage.run_id)
            .where(RunStage.status == StageStatus.WAITING, Run.status == RunStatus.RUNNING)
            .group_by(RunStage.group_key)
        )

    def _group_infos(self, query: Any) -> list[GroupInfo]:
        with self.session() as s:
            rows = s.execute(query).all()
            sample = {r[3] for r in rows}
            overrides: dict[str, dict[str, Any]] = {}
            if sample:
                overrides = {i: o for i, o in s.execute(select(Run.id, Run.overrides).where(Run.id.in_(sample)))}
        return [
            GroupInfo(
                group_key=g,
                plan_id=p,
                idx=i,
                overrides=overrides.get(r) or {},
                waiting=n,
                fresh=1 if a == 0 else 0,
                earliest_deadline=aware(d),
                latest_start=aware(started),
            )
            for g, p, i, r, n, a, d, started in rows
            if g is not None
        ]

    def waiting(
        self, group_key: str, *, fresh_only: bool = False, after: int = 0, limit: int = 1000, arrow: bool = False
    ) -> list[Waiting]:
        """Up to ``limit`` runs waiting in ``group_key`` (only never-polled ones with ``fresh_only``), in stage
        id order after ``after``: a tick reads its group a chunk at a time, as plain rows. With ``arrow`` (the
        reader has Arrow), expected events kept in columns are read so, and their JSON text is left where it is;
        without, every run's expected events are read as JSON."""
        stage, run = cast(Table, RunStage.__table__).c, cast(Table, Run.__table__).c
        snapshot = cast(Table, Snapshot.__table__).c
        expect, expect_arrow = _as_text(run.expect), cast(Any, null())
        if arrow:
            expect = case((run.expect_arrow.is_(None), sql_cast(run.expect, Text)), else_=null()).label("expect")
            expect_arrow = run.expect_arrow
        query = (
            select(
                stage.id.label("stage_id"),
                stage.run_id,
                stage.idx,
                stage.attempts,
                stage.errors_in_row,
                _as_text(stage.where),
                stage.started_at,
                stage.deadline,
                stage.expected,
                stage.found,
                run.plan_id,
                _as_text(run.params),
                expect,
                expect_arrow.label("expect_arrow"),
                _as_text(run.overrides),
                run.created_at,
                _as_text(snapshot.first_seen),
                stage.quiet,
            )
            .join_from(cast(Table, RunStage.__table__), cast(Table, Run.__table__), run.id == stage.run_id)
            .outerjoin(
                cast(Table, Snapshot.__table__),
                (snapshot.run_id == stage.run_id) & (snapshot.stage_idx == stage.idx),
            )
            .where(
                stage.group_key == group_key,
                stage.status == StageStatus.WAITING,
                run.status == RunStatus.RUNNING,
                stage.id > after,
            )
            .order_by(stage.id)
            .limit(limit)
        )
        if fresh_only:
            query = query.where(stage.attempts == 0)
        with self.session() as s:
            return [Waiting.from_row(row) for row in s.connection().execute(query).mappings().all()]

    def snapshot_sizes(self, run_ids: Sequence[str], stage_idx: int) -> dict[str, tuple[int, bool]]:
        """(rows read, whether the snapshot kept fewer) of each run's snapshot of a stage, without its records:
        one kept in columns (``arrow``) kept them all."""
        with self.session() as s:
            found = s.execute(
                select(Snapshot.run_id, Snapshot.total, Snapshot.truncated & Snapshot.arrow.is_(None)).where(
                    Snapshot.run_id.in_(list(run_ids)), Snapshot.stage_idx == stage_idx
                )
            )
            return {run_id: (total, bool(kept_fewer)) for run_id, total, kept_fewer in found}

    def snapshots_for(self, run_ids: Sequence[str], stage_idx: int, *, arrow: bool = False) -> dict[str, Snapshot]:
        """Each run's snapshot of a stage; with its rows in columns (``arrow``) only when asked for."""
        query = select(Snapshot).where(Snapshot.run_id.in_(list(run_ids)), Snapshot.stage_idx == stage_idx)
        if arrow:
            query = query.options(undefer(Snapshot.arrow))
        with self.session() as s:
            return {snap.run_id: snap for snap in s.scalars(query)}

    def largest_blob(self) -> int:
        """The most bytes one binary value may take in the state database: MariaDB's ``max_allowed_packet`` (16
        MiB by default) less a mebibyte for the rest of the statement; elsewhere 512 MiB, half of what one
        PostgreSQL value or SQLite text holds (COPY sends it as hex text, twice as long). Read once."""
        if self._largest_blob is None:
            largest = 2**29
            if self.dialect in ("mysql", "mariadb"):
                with self.session() as s:
                    packet = s.execute(text("SELECT @@max_allowed_packet")).scalar_one()
                largest = min(largest, max(0, int(packet) - 2**20))
            self._largest_blob = largest
        return self._largest_blob

    # -- fencing (ticks.Claim) -----------------------------------------------------------------------------
    def report_worker(self, report: PollWorker) -> None:
        """Write what a poll worker says of itself (``report.name``'s row, created on its first report)."""
        values = {column.name: getattr(report, column.name) for column in PollWorker.__table__.columns}
        with self.session(write=True) as s:
            table = cast(Table, PollWorker.__table__)
            written = s.execute(update(table).where(table.c.name == report.name).values(**values))
            if cast(Any, written).rowcount == 0:
                s.execute(insert(table).values(**values))

    def poll_workers(self, seen_within: timedelta) -> list[PollWorker]:
        """The poll workers that reported within ``seen_within``, by name."""
        with self.session() as s:
            since = utcnow() - seen_within
            return list(s.scalars(select(PollWorker).where(PollWorker.seen_at > since).order_by(PollWorker.name)))

    def forget_worker(self, name: str) -> None:
        """A worker that stops deletes its row: the dashboard lists the workers that poll."""
        with self.session(write=True) as s:
            s.execute(delete(PollWorker).where(PollWorker.name == name))

    def forget_silent_workers(self, unseen_for: timedelta) -> int:
        """Delete the rows of the workers silent for ``unseen_for`` (killed: they could not delete theirs)."""
        with self.session(write=True) as s:
            gone = s.execute(delete(PollWorker).where(PollWorker.seen_at < utcnow() - unseen_for))
            return int(cast(Any, gone).rowcount)

    def take_epoch(self) -> int:
        """The next epoch of the poller's lease, for a process that just took it. The row is locked until
        the transaction ends, so a former leader's write in progress (which reads it ``FOR SHARE``) ends
        first, and every later one sees the new epoch and is refused."""
        table = cast(Table, PollerEpoch.__table__)
        now = utcnow()
        for _ in range(3):  # two first leaders inserting the row at once: the loser counts up the winner's
            try:
                with self.session(write=True) as s:
                    counted = s.execute(
                        update(table).where(table.c.name == POLLER_LEASE).values(epoch=table.c.epoch + 1, taken_at=now)
                    )
                    if cast(Any, counted).rowcount == 0:
                        s.execute(insert(table).values(name=POLLER_LEASE, epoch=1, taken_at=now))
                    return int(s.execute(select(table.c.epoch).where(table.c.name == POLLER_LEASE)).scalar_one())
            except StoreError as exc:
                if not isinstance(exc.__cause__, IntegrityError):
                    raise
        raise StoreError("cannot take an epoch of the poller's lease: another process keeps taking it")

    def claim(self, claim: Claim) -> bool:
        """Record ``claim`` as its group's newest tick; False (nothing changed) when its epoch is no longer the
        lease's or the group has a newer or equal claim (the tick then must not poll)."""
        ticks = cast(Table, GroupTick.__table__)
        now = utcnow()
        try:
            with self.session(write=True) as s:
                if self._epoch(s) != claim.epoch:
                    return False
                row = s.execute(
                    select(ticks.c.epoch, ticks.c.tick, ticks.c.attempt)
                    .where(ticks.c.group_key == claim.group)
                    .with_for_update()
                ).first()
                values = {"epoch": claim.epoch, "tick": claim.tick, "attempt": claim.attempt, "claimed_at": now}
                if row is None:
                    s.execute(insert(ticks).values(group_key=claim.group, **values))
                elif tuple(row) < claim.token:
                    s.execute(update(ticks).where(ticks.c.group_key == claim.group).values(**values))
                else:
                    return False
        except StoreError as exc:
            if isinstance(exc.__cause__, IntegrityError):
                return False  # another poll claimed the group's first tick at the same moment
            raise
        return True

    @staticmethod
    def _epoch(s: Session) -> int | None:
        """The lease's current epoch, read ``FOR SHARE``: held until the transaction ends (``take_epoch``)."""
        table = cast(Table, PollerEpoch.__table__)
        query = select(table.c.epoch).where(table.c.name == POLLER_LEASE).with_for_update(read=True)
        return s.execute(query).scalar()

    def _check_claim(self, s: Session, claim: Claim) -> None:
        """Superseded unless ``claim`` is still its group's newest and its epoch the lease's, read ``FOR SHARE``
        in the writing transaction: a newer claim or epoch waits for this write to end, and a write that
        starts after them is refused."""
        ticks = cast(Table, GroupTick.__table__)
        epoch = self._epoch(s)
        row = s.execute(
            select(ticks.c.epoch, ticks.c.tick, ticks.c.attempt)
            .where(ticks.c.group_key == claim.group)
            .with_for_update(read=True)
        ).first()
        if epoch != claim.epoch:
            raise Superseded(f"the poller's lease was taken since this poll began (epoch {epoch} > {claim.epoch})")
        if row is None or tuple(row) != claim.token:
            raise Superseded(f"a newer tick of group {claim.group} was claimed since this poll began")

    def apply(self, write: TickWrite, claim: Claim | None = None) -> None:
        """Write one tick's outcome: a few bulk statements in one transaction, whatever the number of runs. On
        PostgreSQL the polls and snapshots are copied in and the stages updated from a copied temporary table
        (benchmark B7: executemany of a 100,000-run tick took most of its write); elsewhere Core executemany.
        Quiet polls take two set-based statements each (``_write_quiet``). With ``claim``, nothing is written
        (Superseded) unless it still holds (``_check_claim``)."""
        with self.session(write=True) as s, ExitStack() as stack:
            if claim is not None:
                self._check_claim(s, claim)
            connection = s.connection()
            driver = connection.connection.driver_connection if connection.dialect.name == "postgresql" else None
            cursor = stack.enter_context(driver.cursor()) if driver is not None else None
            self._write_polls_and_stages(connection, cursor, write)
            for quiet in write.quiet:
                self._write_quiet(connection, quiet)
            if write.snapshots:
                self._replace_snapshots(connection, cursor, write.snapshots)
            if write.activate:
                stages = cast(Table, RunStage.__table__)
                connection.execute(
                    update(stages)
                    .where(stages.c.run_id == bindparam("b_run_id"), stages.c.idx == bindparam("b_idx"))
                    .values(
                        status=bindparam("b_status"),
                        group_key=bindparam("b_group_key"),
                        where=bindparam("b_where"),
                        started_at=bindparam("b_started_at"),
                        deadline=bindparam("b_deadline"),
                    ),
                    [bind_values(a) for a in write.activate],
                )
            if write.skip:
                # one statement per stage index and 500 runs, not one per run: a timeout can fail thousands of
                # runs of a group in one tick (they share the stage index: one group is one stage)
                later = cast(Table, RunStage.__table__).c
                failed: defaultdict[int, list[str]] = defaultdict(list)
                for run_id, after in write.skip:
                    failed[after].append(run_id)
                for after, run_ids in failed.items():
                    for start in range(0, len(run_ids), 500):
                        connection.execute(
                            update(cast(Table, RunStage.__table__))
                            .where(
                                later.run_id.in_(run_ids[start : start + 500]),
                                later.idx > after,
                                later.status == StageStatus.PENDING,
                            )
                            .values(status=StageStatus.SKIPPED, reason="an earlier stage did not pass")
                        )
            if write.runs:
                # only a run still running ends here: one cancelled while this tick polled stays cancelled
                runs = cast(Table, Run.__table__)
                connection.execute(
                    update(runs)
                    .where(runs.c.id == bindparam("b_run_id"), runs.c.status == RunStatus.RUNNING)
                    .values(
                        status=bindparam("b_status"),
                        finished_at=bindparam("b_finished_at"),
                        notify=bindparam("b_notify"),
                        notify_due=bindparam("b_notify_due"),
                    ),
                    [bind_values(r) for r in write.runs],
                )

    @staticmethod
    def _write_polls_and_stages(connection: Any, cursor: Any, write: TickWrite) -> None:
        """The polls and stage updates of ``apply``; ``cursor``: the driver's on PostgreSQL (COPY), else None."""
        if write.polls:
            if cursor is not None:
                with _driver_errors():
                    _copy(cursor, cast(Table, Poll.__table__), write.polls)
            else:  # Core executemany: the ORM's bulk insert prepares each of thousands of rows on its own
                connection.execute(insert(cast(Table, Poll.__table__)), [column_values(p) for p in write.polls])
        for keep in (False, True):  # stages that show this poll's evidence, and those keeping theirs
            rows = [row for row in write.stages if row.keep_evidence is keep]
            columns = [name for name in _STAGE_UPDATE if name != "id" and not (keep and name == "evidence")]
            if not rows:
                continue
            # by primary key, only a stage still waiting: one a cancel skipped while this tick polled stays
            table = cast(Table, RunStage.__table__)
            if cursor is not None:
                with _driver_errors():
                    _update_from_copy(cursor, table, columns, rows, StageStatus.WAITING)
                continue
            connection.execute(
                update(table)
                .where(table.c.id == bindparam("b_id"), table.c.status == StageStatus.WAITING)
                .values({name: bindparam(f"b_{name}") for name in columns}),
                [bind_values(row, "id", *columns) for row in rows],
            )

    @staticmethod
    def _replace_snapshots(connection: Any, cursor: Any, rows: Sequence[SnapshotRow]) -> None:
        """Each row's stage snapshot replaced: the old ones deleted (Core, by run id and stage index), the
        new ones copied in on PostgreSQL (``cursor``), else inserted with one executemany."""
        table = cast(Table, Snapshot.__table__)
        by_stage: defaultdict[int, list[str]] = defaultdict(list)
        for row in rows:
            by_stage[row.stage_idx].append(row.run_id)
        for stage_idx, run_ids in by_stage.items():
            for start in range(0, len(run_ids), 1000):
                listed = _one_of(connection, table.c.run_id, run_ids[start : start + 1000], String)
                connection.execute(delete(table).where(table.c.stage_idx == stage_idx, listed))
        if cursor is not None:
            with _driver_errors():
                _copy(cursor, table, rows)
        else:
            connection.execute(insert(table), [column_values(row) for row in rows])

    @staticmethod
    def _write_quiet(connection: Any, quiet: QuietPolls) -> None:
        """Record quiet polls with two statements over their stage ids: each one's ``tc_polls`` row made from
        its stage's own counts, then its ``attempts`` counted; only stages still waiting (one a cancel ended
        while this tick polled is left alone), as for every other poll."""
        stages, polls = cast(Table, RunStage.__table__), cast(Table, Poll.__table__)
        ids = [stage_id for stage_id, _ in quiet.stages]
        mine = _one_of(connection, stages.c.id, ids, Integer) & (stages.c.status == StageStatus.WAITING)
        rows = select(
            stages.c.run_id,
            stages.c.idx,
            bindparam("polled_at", quiet.polled_at, type_=polls.c.polled_at.type),
            bindparam("outcome", str(StageStatus.WAITING), type_=polls.c.outcome.type),
            stages.c.found,
            stages.c.expected,
            bindparam("duration_ms", quiet.duration_ms, type_=polls.c.duration_ms.type),
        ).where(mine)
        names = ["run_id", "stage_idx", "polled_at", "outcome", "found", "expected", "duration_ms"]
        connection.execute(insert(polls).from_select(names, rows))
        connection.execute(update(stages).where(mine).values(attempts=stages.c.attempts + 1))

    # -- retention -----------------------------------------------------------------------------------
    def prune(self, polls_before: datetime | None, runs_before: datetime | None, batch: int = 5000) -> PruneCounts:
        """Delete the polls taken before ``polls_before`` and the ended runs that finished before ``runs_before``
        with their stages, polls and snapshots (None: keep them). Returns how many rows went from each table.

        Each batch of at most ``batch`` rows (of runs: ``batch`` runs) is a transaction of its own, so no lock is
        held for long and the poller's ticks interleave; it loops until a batch finds fewer rows. Every poll
        older than the cutoff goes, a running run's too: polls are history (stages hold the run's state), and a
        run still waiting after the polls' retention keeps its recent ones. A run whose webhook notification is
        still due is kept until it is delivered or given up. Children are deleted explicitly, not by ON DELETE
        CASCADE: the counts need them, and a SQLite file opened without ``PRAGMA foreign_keys`` would keep them.
        """
        if batch < 1:
            raise ValueError("batch must be at least 1")
        polls = 0
        if polls_before is not None:
            polls = self._delete_polls(Poll.polled_at < polls_before, batch)
        counts = PruneCounts(polls=polls)
        if runs_before is not None:
            # Selected by ``finished_at`` alone, the rest checked here: with ``status IN (...)`` or ``notify_due
            # IS NULL`` in the query, SQLite's planner picks their index, whose condition matches nearly every
            # run (measured over 100,000 runs, none old enough: 18 ms a look instead of 0.01 ms)
            kept: list[str] = []  # ended before the cutoff, not deletable (yet): skipped by the next batches
            while True:
                query = select(Run.id, Run.status, Run.notify_due).where(Run.finished_at < runs_before)
                if kept:
                    query = query.where(Run.id.not_in(kept))
                with self.session() as s:
                    rows = s.execute(query.limit(batch)).all()
                run_ids = [run_id for run_id, status, due in rows if status in RUN_ENDED and due is None]
                kept += [run_id for run_id, status, due in rows if status not in RUN_ENDED or due is not None]
                if run_ids:
                    counts = counts + self._delete_runs(run_ids, batch)
                if len(rows) < batch:
                    break
        return counts

    def _delete_runs(self, run_ids: list[str], batch: int) -> PruneCounts:
        """Delete ended runs with their polls (``batch`` at a time: a run may have thousands), then their
        snapshots, stages and the runs themselves in one transaction."""
        polls = self._delete_polls(Poll.run_id.in_(run_ids), batch)
        with self.session(write=True) as s:
            snapshots = _deleted(s, delete(Snapshot).where(Snapshot.run_id.in_(run_ids)))
            stages = _deleted(s, delete(RunStage).where(RunStage.run_id.in_(run_ids)))
            runs = _deleted(s, delete(Run).where(Run.id.in_(run_ids), Run.status.in_(RUN_ENDED)))
        return PruneCounts(runs=runs, stages=stages, polls=polls, snapshots=snapshots)

    def _delete_polls(self, condition: Any, batch: int) -> int:
        """Delete the polls matching ``condition``, ``batch`` at a time (ids read first: MariaDB allows neither
        LIMIT in an IN subquery nor a subquery on the table a DELETE deletes from)."""
        total = 0
        while True:
            with self.session() as s:
                ids = list(s.scalars(select(Poll.id).where(condition).limit(batch)))
            if not ids:
                return total
            with self.session(write=True) as s:
                total += _deleted(s, delete(Poll).where(Poll.id.in_(ids)))
            if len(ids) < batch:
                return total

    # -- dashboard sessions --------------------------------------------------------------------------
    def start_login_session(self, login: LoginSession) -> None:
        """Store a dashboard login, and delete the logins that have expired by now (logins are rare)."""
        with self.session(write=True) as s:
            s.execute(delete(LoginSession).where(LoginSession.expires_at <= login.created_at))
            s.add(login)

    def login_session(self, session_id: str, now: datetime) -> LoginSession | None:
        """The login ``session_id``, unless it ended or expired before ``now``."""
        with self.session() as s:
            login = s.get(LoginSession, session_id)
        expires = aware(login.expires_at) if login is not None else None
        return login if expires is not None and expires > now else None

    def end_login_session(self, session_id: str) -> bool:
        """Delete the login (logging out): its cookie, wherever it was copied, opens nothing any more."""
        with self.session(write=True) as s:
            return bool(s.execute(delete(LoginSession).where(LoginSession.id == session_id)).rowcount)  # type: ignore[attr-defined]


def _one_of(connection: Any, column: Any, values: Sequence[Any], kind: Any) -> Any:
    """``column IN values``; on PostgreSQL ``column = ANY(:array)``, one parameter, so that a statement of a
    thousand values is neither rendered nor parsed again for each chunk."""
    if connection.dialect.name == "postgresql":
        return column == any_(bindparam(None, list(values), type_=postgresql.ARRAY(kind)))
    return column.in_(values)


def _as_text(column: Any) -> Any:
    """A JSON column selected as its text, under its own name: ``Waiting`` parses what a poll uses of it."""
    return sql_cast(column, Text).label(column.name)


def _deleted(session: Session, statement: Any) -> int:
    return int(session.execute(statement).rowcount)  # type: ignore[attr-defined]


#: the columns of ``tc_run_stages`` a tick updates (``StageUpdate`` without its ``run_id``)
_STAGE_UPDATE = tuple(f.name for f in fields(StageUpdate) if f.name not in ("run_id", "keep_evidence"))


@contextmanager
def _driver_errors() -> Iterator[None]:
    """COPY goes to the driver (psycopg) directly: its errors become StoreError as SQLAlchemy's do, a value the
    database refuses (``data_error``) told apart from an outage."""
    import psycopg

    try:
        yield
    except (psycopg.DataError, psycopg.IntegrityError) as exc:
        raise StoreError(f"state database error: {mask_url_passwords(str(exc))}", data_error=True) from exc
    except psycopg.Error as exc:
        raise StoreError(f"state database error: {mask_url_passwords(str(exc))}") from exc


def _update_from_copy(cursor: Any, table: Table, columns: Sequence[str], rows: Sequence[Any], status: str) -> None:
    """``UPDATE table`` of ``columns`` for ``rows`` by ``id``, only rows still of ``status``, on PostgreSQL: the
    rows copied into a temporary table, analysed, then one UPDATE ... FROM it.

    Without ``ANALYZE`` the planner knows nothing of the copied rows and joined them by hashing the whole
    table (B7: 36 ms for each 1,000 stages of 100,000); with it, each is an index lookup by id. (One array
    parameter per column instead costs more to send than the update saves: psycopg builds arrays in Python.)
    """
    names = ("id", *columns)
    listed = ", ".join(f'"{name}"' for name in names)  # "where" is a keyword
    cursor.execute(f"CREATE TEMP TABLE tc_tick_rows AS SELECT {listed} FROM {table.name} WITH NO DATA")
    _copy_rows(cursor, f"COPY tc_tick_rows ({listed}) FROM STDIN", names, rows, _json_columns(table, names))
    cursor.execute("ANALYZE tc_tick_rows")
    assignments = ", ".join(f'"{name}" = t."{name}"' for name in columns)
    cursor.execute(
        f"UPDATE {table.name} s SET {assignments} FROM tc_tick_rows t WHERE s.id = t.id AND s.status = %s",
        [status],
    )
    cursor.execute("DROP TABLE tc_tick_rows")


def _copy(cursor: Any, table: Table, rows: Iterable[Any]) -> None:
    """``COPY table FROM STDIN`` of ``rows`` (PostgreSQL), read as they come: JSON columns sent as their JSON
    text. Nothing is copied if there are none."""
    rows = iter(rows)
    first = next(rows, None)
    if first is None:
        return
    names = field_names(first)
    columns = ", ".join(f'"{name}"' for name in names)  # "where" is a keyword
    statement = f"COPY {table.name} ({columns}) FROM STDIN"
    _copy_rows(cursor, statement, names, itertools.chain((first,), rows), _json_columns(table, names))


def _json_columns(table: Table, names: Sequence[str]) -> frozenset[str]:
    return frozenset(name for name in names if isinstance(table.c[name].type, JSON))


def _copy_rows(cursor: Any, statement: str, names: Sequence[str], rows: Iterable[Any], as_json: Set[str]) -> None:
    """Each row's ``names`` fields, read in one call per row, written to ``statement`` (a COPY ... FROM STDIN),
    the fields in ``as_json`` as their JSON text: at tens of thousands of rows a tick, a call per value was
    most of the time the copy took (benchmark B7)."""
    values = attrgetter(*names)
    json_at = [i for i, name in enumerate(names) if name in as_json]
    dumps = json_text
    with cursor.copy(statement) as copy:
        for row in rows:
            record = list(values(row))
            for i in json_at:
                if record[i] is not None:
                    record[i] = dumps(record[i])
            copy.write_row(record)
