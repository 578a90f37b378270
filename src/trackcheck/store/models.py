"""The state database: plans (versioned), runs, their stages, every poll, and what each stage read.

Alembic owns the schema (store/migrations); these models are its source of truth. JSON columns hold values
users sent or sources returned: they are stored as JSON, never pickled.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON, datetime: DateTime(timezone=True)}


class PlanVersion(Base):
    """One version of a plan's YAML; a run keeps the version it started with."""

    __tablename__ = "tc_plans"
    __table_args__ = (UniqueConstraint("name", "version", name="uq_tc_plans_name_version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200), index=True)
    version: Mapped[int] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(Text)
    base_dir: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    #: False for plans uploaded over the API or the dashboard: loaded as data (no ${ENV}, connections only)
    trusted: Mapped[bool] = mapped_column(Boolean, default=True)
    #: the full text encrypted (Fernet) when it holds literal secrets; ``text`` then has them masked
    sealed: Mapped[str | None] = mapped_column(Text)


class Run(Base):
    """One verification of a plan with its parameters."""

    __tablename__ = "tc_runs"
    __table_args__ = (Index("ix_tc_runs_plan_status", "plan_name", "status"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    plan_id: Mapped[int] = mapped_column(ForeignKey("tc_plans.id"))
    plan_name: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), index=True)
    params: Mapped[dict[str, Any]]
    expect: Mapped[list[Any]]
    #: many expected events, when a stage compares with them by rows, also in columns: Arrow IPC bytes
    #: (``compare.tables.table_bytes``), which a poll reads instead of parsing ``expect``'s JSON
    expect_arrow: Mapped[bytes | None] = mapped_column(LargeBinary(2**32 - 1), deferred=True)
    overrides: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(index=True)
    #: indexed for retention: the ended runs to prune are a range of it (status alone matches nearly every run)
    finished_at: Mapped[datetime | None] = mapped_column(index=True)
    error: Mapped[str | None] = mapped_column(Text)
    notify: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    #: when the webhook notification is next due (set when the run ends, cleared once delivered or given up)
    notify_due: Mapped[datetime | None] = mapped_column(index=True)


class RunStage(Base):
    """A run at one stage. ``group_key`` joins the runs polled together by one job with one query."""

    __tablename__ = "tc_run_stages"
    __table_args__ = (
        UniqueConstraint("run_id", "idx", name="uq_tc_run_stages_run_idx"),
        # a tick reads its group in stage id order, a chunk after the last id it read: an index range
        Index("ix_tc_run_stages_group_status_id", "group_key", "status", "id"),
        # every poll updates the row: room on its page lets PostgreSQL do it without index writes (0009)
        {"postgresql_with": {"fillfactor": 70}},
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("tc_runs.id", ondelete="CASCADE"))
    idx: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    errors_in_row: Mapped[int] = mapped_column(Integer, default=0)
    group_key: Mapped[str | None] = mapped_column(String(64))
    where: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    #: indexed for the poller's sync: the runs that joined a group since its last look are a range of it
    started_at: Mapped[datetime | None] = mapped_column(index=True)
    deadline: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    expected: Mapped[int | None] = mapped_column(Integer)
    found: Mapped[int | None] = mapped_column(Integer)
    evidence: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    reason: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    #: whether ``error`` can fix itself: ``permanent`` or ``transient`` (trackcheck.errors.ErrorKind)
    error_kind: Mapped[str | None] = mapped_column(String(16))
    #: the last poll found nothing and its reason cannot change while nothing is found (``ticks.StageUpdate``)
    quiet: Mapped[bool] = mapped_column(Boolean, default=False)


class Poll(Base):
    """Every poll of every run's stage: when, the outcome, how much was found, how long it took."""

    __tablename__ = "tc_polls"
    __table_args__ = (Index("ix_tc_polls_run", "run_id", "stage_idx"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("tc_runs.id", ondelete="CASCADE"))
    stage_idx: Mapped[int] = mapped_column(Integer)
    #: indexed for retention: the polls to prune are a range of it, found without reading the whole table
    polled_at: Mapped[datetime] = mapped_column(index=True)
    outcome: Mapped[str] = mapped_column(String(16))
    found: Mapped[int | None] = mapped_column(Integer)
    expected: Mapped[int | None] = mapped_column(Integer)
    duration_ms: Mapped[float] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text)
    error_kind: Mapped[str | None] = mapped_column(String(16))


class Snapshot(Base):
    """What a stage read for a run (capped): later stages compare with it, users inspect it; and when each
    record first arrived there."""

    __tablename__ = "tc_snapshots"
    __table_args__ = (UniqueConstraint("run_id", "stage_idx", name="uq_tc_snapshots_run_stage"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("tc_runs.id", ondelete="CASCADE"))
    stage_idx: Mapped[int] = mapped_column(Integer)
    records: Mapped[list[Any]]
    total: Mapped[int] = mapped_column(Integer)
    truncated: Mapped[bool] = mapped_column(Boolean, default=False)
    taken_at: Mapped[datetime]
    #: when each record was first found at this stage (the poll tick's time), by the JSON text of its canonical
    #: key (``compare.latency.key_texts``): kept across polls, for stages that read events; None otherwise
    first_seen: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    #: every row, when the stage read more than ``records`` keeps in columns and a later stage compares with
    #: them by rows: Arrow IPC bytes (``compare.tables.table_bytes``). Loaded only when asked for: a page
    #: that shows the records never reads megabytes it does not show
    arrow: Mapped[bytes | None] = mapped_column(LargeBinary(2**32 - 1), deferred=True)


class Schedule(Base):
    """A recurring run of a plan. Its parameters live here as JSON; the APScheduler job that fires it
    (``schedule:<id>``, a cron trigger in the persistent job store) carries nothing but this id."""

    __tablename__ = "tc_schedules"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    plan_name: Mapped[str] = mapped_column(String(200))
    cron: Mapped[str] = mapped_column(String(200))
    params: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]
    last_run_id: Mapped[str | None] = mapped_column(String(32))
    last_error: Mapped[str | None] = mapped_column(Text)
    #: the runs' expected events (None: the plan's), as a run request gives them
    expect: Mapped[list[Any] | None] = mapped_column(JSON, nullable=True)
    #: the runs' ``interval``/``timeout`` in seconds (``foreground.overrides_from``; None: the plan's)
    overrides: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    #: kept with its job, but not fired
    paused: Mapped[bool] = mapped_column(Boolean, default=False)


class Connection(Base):
    """A system defined once by an admin over the API, used by plans as ``connection: NAME``.

    ``options`` is what may be shown (secrets masked); ``sealed`` the complete options, encrypted with the
    service's secret key (None when they hold no secret).
    """

    __tablename__ = "tc_connections"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    type: Mapped[str] = mapped_column(String(32))
    options: Mapped[dict[str, Any]]
    sealed: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime] = mapped_column(index=True)


class LoginSession(Base):
    """A dashboard login, so that logging out ends it on the server: the cookie only carries its id."""

    __tablename__ = "tc_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    token_name: Mapped[str] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime] = mapped_column(index=True)


class CaptureChannel(Base):
    """A subscription the poller holds on a bus that keeps no history (an MQTT topic, trackcheck's queue on
    a RabbitMQ exchange) for the runs that will read it: since when it listens, and when it was not."""

    __tablename__ = "tc_capture_channels"

    #: a hash of (plan version, source, channel): no user text in a key
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    #: what is listened to, for people: ``mqtt devices/+/events qos 1``
    description: Mapped[str] = mapped_column(Text)
    #: names what the broker keeps for trackcheck (its queue, its session): random, so two state databases
    #: (installations, parallel CI jobs) never share one, and kept, so a restart finds its own again
    token: Mapped[str] = mapped_column(String(32))
    #: whether the broker keeps what is published while trackcheck is away (a queue, a persistent session)
    durable: Mapped[bool] = mapped_column(Boolean)
    listening_since: Mapped[datetime]
    #: the last time the poller drained it: a gap in listening starts there
    heard_at: Mapped[datetime]
    #: [[from, to], ...] ISO instants when nobody listened and what was published was lost
    gaps: Mapped[list[Any]] = mapped_column(JSON)
    #: messages deleted because the buffer was full (oldest first)
    dropped: Mapped[int] = mapped_column(Integer, default=0)


class Capture(Base):
    """One message a listening channel heard, kept until no run needs the channel any more."""

    __tablename__ = "tc_captures"
    __table_args__ = (Index("ix_tc_captures_channel", "channel", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    channel: Mapped[str] = mapped_column(String(64))
    #: the broker's timestamp, or when trackcheck received it
    at: Mapped[datetime]
    #: when the poller stored it: a run reads what was heard from its start on (a broker's timestamp may be
    #: whole seconds, or a publisher's clock)
    heard: Mapped[datetime]
    payload: Mapped[bytes] = mapped_column(LargeBinary(2**24))
    meta: Mapped[dict[str, Any]]


class PollerEpoch(Base):
    """How many times the poller's lease was taken: each new leader takes the next epoch, and a poll of a
    former leader (a process frozen, then woken after another took over) is refused by it (``Claim``)."""

    __tablename__ = "tc_poller_epochs"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    epoch: Mapped[int] = mapped_column(BigInteger)
    taken_at: Mapped[datetime]


class GroupTick(Base):
    """The newest tick claimed of each group: only the poll holding it may write (``Store.apply``), so a
    stale or repeated tick of a group cannot apply its polls over a newer one's."""

    __tablename__ = "tc_group_ticks"

    group_key: Mapped[str] = mapped_column(String(64), primary_key=True)
    epoch: Mapped[int] = mapped_column(BigInteger)
    tick: Mapped[int] = mapped_column(BigInteger)
    attempt: Mapped[int] = mapped_column(Integer)
    claimed_at: Mapped[datetime]


class PollWorker(Base):
    """A poll worker of the procrastinate backend, as it last said (at each heartbeat): the polls it finished
    since it started, the run stages they read, the polls that failed, and the polls finished in the last
    minute (its throughput now). The API processes show it without reaching the worker."""

    __tablename__ = "tc_poll_workers"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    started_at: Mapped[datetime]
    seen_at: Mapped[datetime]
    polls: Mapped[int] = mapped_column(BigInteger)
    runs: Mapped[int] = mapped_column(BigInteger)
    failed: Mapped[int] = mapped_column(BigInteger)
    last_minute: Mapped[int] = mapped_column(Integer)
