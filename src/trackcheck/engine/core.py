"""The Engine, the verifier: submits runs, polls one stage group, and moves each run through its stages.

A poll of a group, a chunk of ``batch_size`` waiting runs at a time: read the chunk's rows → one source query
with the union of their ``where`` values → split the records back per run → compare each run with its
reference (``expect`` or an earlier stage's snapshot) → decide → write the chunk with a few bulk statements.
Runs that passed move to their next stage (a new group); a failed or error stage ends its run and skips the
stages after it.

The engine does not know when it is called: the poller (``trackcheck.scheduling``) decides that, and learns of
the groups runs join through ``group_listeners`` and each poll's ``PollSummary``.
"""

from __future__ import annotations

import contextvars
import functools
import itertools
import logging
import os
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias, cast

from trackcheck.compare import TableRecords, evaluate_stage, in_columns
from trackcheck.compare.checks import collection_paused
from trackcheck.compare.latency import (
    judge_latency,
    keeps_first_seen,
    key_texts,
    merge_first_seen,
    streamed_key_texts,
)
from trackcheck.compare.result import Comparison
from trackcheck.compare.tables import records_table, reference_records, table_bytes, table_of
from trackcheck.compare.values import jsonable
from trackcheck.connections import Connections, Keyring
from trackcheck.connections.keyring import no_key_error
from trackcheck.engine.capture import Capturer
from trackcheck.engine.groups import group_key, split, split_table, union_filters
from trackcheck.engine.outcome import Decision, decide
from trackcheck.engine.result import RunResult, build_result, capped_evidence
from trackcheck.errors import (
    ConfigError,
    ErrorKind,
    ParamError,
    PlanError,
    SourceConnectError,
    SourceError,
    StoreError,
    Superseded,
    TrackcheckError,
)
from trackcheck.loader import check_expect, load_plan_text, resolve_params
from trackcheck.logs import log_context
from trackcheck.plan.limits import DEFAULT_LIMITS, PlanLimits
from trackcheck.plan.masking import mask_plan_text, mask_url_passwords
from trackcheck.plan.model import EXPECT, Plan, StageSpec
from trackcheck.plan.templates import render
from trackcheck.plan.timing import schedule_signature, stage_timeout
from trackcheck.plan.trust import TRUSTED, Trust
from trackcheck.recon import reconcile
from trackcheck.recon.stages import judge, recon_spec, stage_table
from trackcheck.sources import build_source
from trackcheck.sources.base import FetchRequest, FetchResult, Message, Record, Source
from trackcheck.sources.columnar import COLUMNAR_INSTALLED, ColumnarReader, NotColumnar
from trackcheck.sources.emitting import send, stamped
from trackcheck.sources.network import NetworkRule, check_hosts
from trackcheck.sources.sql import SqlSource
from trackcheck.states import STAGE_ENDED, RunStatus, StageStatus
from trackcheck.store.connections import ConnectionStore
from trackcheck.store.database import DEFAULT_URL
from trackcheck.store.repository import Store, utcnow
from trackcheck.store.ticks import (
    Activation,
    Claim,
    NewRun,
    NewStage,
    PollRow,
    QuietPolls,
    RunEnd,
    SnapshotRow,
    StageUpdate,
    TickWrite,
    Waiting,
    storable_text,
)

if TYPE_CHECKING:
    import pyarrow as pa

log = logging.getLogger("trackcheck.poll")
#: the runs a log line of quiet polls names (the others are counted): -v on one run shows its id
QUIET_RUNS_NAMED = 5
#: a batch of at least this many submitted runs is prepared with the cyclic garbage collector paused
BATCH_WITHOUT_COLLECTION = 1000
#: how many of a fetch's notes (messages that did not parse, a gap in listening) a stage's reason quotes
NOTES_SHOWN = 3
#: runs ended per write when their plan version no longer loads (there is no batch_size to go by)
UNLOADABLE_CHUNK = 1000
#: a sql stage expected to read at least this many rows in one query is read and compared in columns. Measured
#: on one poll of one run against as many expected events: at 100,000 rows both paths take about as long, and
#: the first read in columns loads Arrow, polars and ADBC (up to ~130 MB, with pandas, which they import when it
#: is installed; once per process) where the records cost ~85 MB; at 1,000,000 the poll took 5.9 s in columns
#: and 11.0 s as records
COLUMNAR_ROWS = 100_000


@dataclass(frozen=True)
class PlanSetup:
    """What loading a stored plan needs besides its text: the operator's connections (``[connections.*]``,
    ``${ENV}`` not yet expanded), the secret key that opens what is stored encrypted, and the rules for
    uploaded plans. Plain data, so that a process-pool worker can rebuild the same engine."""

    connections: dict[str, dict[str, Any]] = field(default_factory=dict)
    secret_key: str | None = None
    uploads: Trust = field(default_factory=Trust.for_uploads)
    limits: PlanLimits = DEFAULT_LIMITS
    #: the deployment's default poll interval, for plans that do not set ``defaults.interval`` themselves
    interval: timedelta | None = None


@dataclass(frozen=True)
class QueryFacts:
    """One source query of a poll tick (for however many runs it served)."""

    plan: str
    stage: str
    source_type: str
    seconds: float
    error: str | None
    #: rows or messages the source read to answer (a bus reads more than it returns); None if it did not say
    scanned: int | None = None
    #: lines or messages that could not be decoded
    unparsed: int = 0


@dataclass(frozen=True)
class Outcome:
    """What one poll of one run's stage produced, before it is decided: a comparison, or an error."""

    comparison: Comparison | None
    error: str | None
    kind: ErrorKind
    #: the records read (or sent, by the emit stage), kept as the stage's snapshot
    found: list[dict[str, Any]] | TableRecords
    milliseconds: float
    first_seen: dict[str, str] | None = None
    #: a record was found for the first time (the snapshot keeps its first-seen time)
    arrived: bool = False
    #: nothing was found and the source added no note: the reason cannot change until something is found
    quiet: bool = False


#: what a run's stage is compared with: records, an earlier stage's rows kept in columns, or why there is none
Reference: TypeAlias = "list[dict[str, Any]] | pa.Table | str"


@dataclass(frozen=True)
class PollSummary:
    """What a poll of a group tells whoever scheduled it: how many runs it polled, how many still wait, when
    to try again after a source error, the earliest deadline, and the groups runs moved on to."""

    group: str
    polled: int = 0
    remaining: int = 0
    #: seconds until a failing source should be tried again (None: it did not fail)
    retry_in: float | None = None
    earliest_deadline: datetime | None = None
    activated: tuple[str, ...] = ()
    #: the poll's claim was, or became, not the newest (``store.ticks.Claim``): it wrote nothing more, and
    #: whoever scheduled it must not reschedule from it (``remaining`` is then unknown, given as 0)
    superseded: bool = False


@dataclass(frozen=True)
class RunRequest:
    """One run of a batch submit (``Engine.submit_many``): its parameters, its expected events (None: the
    plan's) and its per-run overrides (``interval``/``timeout`` in seconds, as ``overrides_from`` gives)."""

    params: Mapping[str, Any] = field(default_factory=dict)
    expect: list[dict[str, Any]] | None = None
    overrides: Mapping[str, Any] | None = None


def _run_ids(count: int) -> list[str]:
    """``count`` new run ids: 32 hex digits each, 128 bits from the operating system's CSPRNG (what
    ``secrets.token_hex(16)`` gives), read in one call for the batch: a call per run was a tenth of
    submitting 10,000 runs."""
    digits = os.urandom(16 * count).hex()
    return [digits[i : i + 32] for i in range(0, 32 * count, 32)]


def _at_index(exc: ParamError, index: int) -> ParamError:
    """``exc`` naming the run of a batch it is about: ``runs[3].params.test_id: ...``."""
    parameter = exc.context.get("parameter")
    place = f"runs[{index}]"
    if parameter == "expect":
        place += ".expect"
    elif parameter is not None:
        place += f".params.{parameter}"
    context = {key: value for key, value in exc.context.items() if key != "parameter"}
    return ParamError(f"{place}: {exc.message}", **context)


class Engine:
    """State store + plans + sources: submits runs and polls groups. ``start()`` before use, ``shutdown()``
    after (or ``with``). Polling on a schedule is the poller's (``trackcheck.scheduling.Poller``)."""

    def __init__(self, db_url: str = DEFAULT_URL, *, setup: PlanSetup | None = None) -> None:
        self.store = Store(db_url)
        self.setup = setup or PlanSetup()
        self.keyring = Keyring(self.setup.secret_key) if self.setup.secret_key else None
        self.connections = Connections(self.setup.connections, ConnectionStore(self.store), self.keyring)
        self._connections_seen: object = None
        self._sources: dict[tuple[int, str], Source] = {}
        #: a sql source's reader in columns, made when one of its stages first reads enough rows
        self._readers: dict[tuple[int, str], ColumnarReader] = {}
        #: (plan id, stage) whose rows the columnar reader refused (a column Arrow cannot type): read by rows
        self._by_rows: set[tuple[int, str]] = set()
        self._sources_lock = threading.Lock()
        self._group_locks: defaultdict[str, threading.Lock] = defaultdict(threading.Lock)
        self.plan = functools.lru_cache(maxsize=256)(self._load_plan)
        #: called after every source query with its facts (metrics); must be quick and must not raise
        self.query_listeners: list[Callable[[QueryFacts], None]] = []
        #: called with the groups that runs submitted here joined (the poller schedules them); must be quick
        self.group_listeners: list[Callable[[Sequence[str]], None]] = []
        #: the listeners of buses without history, run by the poller while it leads
        self.capture = Capturer(self)

    # -- lifecycle -------------------------------------------------------------------------------------
    def start(self) -> Engine:
        """Open the state database (migrating it to the current schema)."""
        self.store.open()
        return self

    def shutdown(self) -> None:
        """Close the open sources and the state database."""
        self.capture.stop()
        self._close_sources()
        self.store.close()

    def __enter__(self) -> Engine:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    # -- plans and sources -----------------------------------------------------------------------------
    def _load_plan(self, plan_id: int) -> Plan:
        version = self.store.plan_version(plan_id)
        base = Path(version.base_dir) if version.base_dir else None
        text = version.text
        if version.sealed is not None:
            if self.keyring is None:
                raise ConfigError(
                    f"plan {version.name!r} holds secrets stored encrypted and the service has no secret key: "
                    "set TRACKCHECK_SECRET_KEY to the key it was stored with",
                    field="secret_key",
                )
            text = self.keyring.open(version.sealed, what=f"plan {version.name!r}")
        trust = TRUSTED if version.trusted else self.setup.uploads
        plan = load_plan_text(
            text,
            origin=version.name,
            base_dir=base,
            connections=self.connections,
            trust=trust,
            limits=self.setup.limits,
        )
        if self.setup.interval is not None and "interval" not in plan.defaults.model_fields_set:
            # the deployment's default trigger interval, for plans that do not choose their own
            defaults = plan.defaults.model_copy(update={"interval": self.setup.interval})
            plan = plan.model_copy(update={"defaults": defaults})
        return plan

    def source(self, plan_id: int, name: str) -> Source:
        with self._sources_lock:
            if (plan_id, name) not in self._sources:
                plan = self.plan(plan_id)
                source = build_source(name, plan.sources[name], plan=plan.name)
                self._guard(plan_id, plan, name, source)
                source.open()
                self._sources[(plan_id, name)] = source
            return self._sources[(plan_id, name)]

    def _close_sources(self) -> None:
        with self._sources_lock:
            for reader in self._readers.values():
                reader.close()
            self._readers.clear()
            self._by_rows.clear()
            for source in self._sources.values():
                source.close()
            self._sources.clear()

    def _columnar(
        self,
        plan: Plan,
        plan_id: int,
        stage: StageSpec,
        chunk: Sequence[Waiting],
        source: Source,
        request: FetchRequest,
    ) -> ColumnarReader | None:
        """The reader in columns for ``request``, or None to read rows as records (the default).

        Columns pay off past ``COLUMNAR_ROWS`` rows, so a chunk is read in columns when its runs found that many
        at their last poll, or their reference holds that many, or, for runs polled the first time, PostgreSQL's
        planner expects that many (``SqlSource.estimated_rows``: one ``EXPLAIN``). Only what the
        columnar comparison gives the same verdict and evidence for (``compare.in_columns``),
        on PostgreSQL through ADBC with the ``columnar`` extra installed, from a source an operator configured
        or trusted: an uploaded plan's inline source keeps the row path, whose connections are the guarded
        ones."""
        if not (
            isinstance(source, SqlSource)
            and source.engine.dialect.name == "postgresql"
            and source.network is None
            and in_columns(stage)
            and (plan_id, stage.name) not in self._by_rows
            and COLUMNAR_INSTALLED
        ):
            return None
        rows = sum(w.found or 0 for w in chunk)
        if rows < COLUMNAR_ROWS:
            if stage.reference == EXPECT:
                rows = max(rows, sum(len(_expected(w)) for w in chunk))
            elif stage.reference is not None:
                idx = next(i for i, s in enumerate(plan.stages) if s.name == stage.reference)
                sizes = self.store.snapshot_sizes([w.run_id for w in chunk], idx)
                rows = max(rows, sum(size[0] for size in sizes.values()))
        if rows < COLUMNAR_ROWS and any(w.found is None for w in chunk):
            rows = max(rows, source.estimated_rows(request) or 0)
        if rows < COLUMNAR_ROWS:
            return None
        with self._sources_lock:
            reader = self._readers.get((plan_id, stage.source))
            if reader is None:
                reader = self._readers[(plan_id, stage.source)] = ColumnarReader(source)
            return reader

    def _guard(self, plan_id: int, plan: Plan, name: str, source: Source) -> None:
        """An inline source of an uploaded plan stays off private networks at every connection, not only when
        the plan loaded: its hosts are checked again now, and HTTP sources check before each request."""
        uploads = self.setup.uploads
        if plan.sources[name].connection is not None or uploads.allow_private_networks:
            return
        if self.store.plan_version(plan_id).trusted:
            return
        source.network = NetworkRule(allow_private=False)
        problem = check_hosts(source, allow_private=False)
        if problem:
            raise SourceConnectError(problem, plan=plan.name, source=name)

    # -- runs ------------------------------------------------------------------------------------------
    def submit(
        self,
        plan_id: int,
        params: dict[str, Any],
        expect: list[dict[str, Any]] | None = None,
        overrides: dict[str, Any] | None = None,
    ) -> str:
        """Validate a run's input against the plan version and start it; returns the run id at once.

        ParamError if a parameter or the expected events are wrong; nothing is stored then.
        """
        return self._start(plan_id, [RunRequest(params, expect, overrides)], indexed=False)[0]

    def check(self, plan_id: int, request: RunRequest) -> None:
        """ParamError if ``submit`` would refuse ``request`` (its parameters, its expected events); nothing is
        stored. A schedule's request is checked when the schedule is saved, not first when it fires."""
        plan = self.plan(plan_id)
        resolve_params(plan, request.params)
        check_expect(plan, list(request.expect) if request.expect is not None else list(plan.expect))

    def submit_many(self, plan_id: int, runs: Sequence[RunRequest]) -> list[str]:
        """Validate many runs of one plan version and start them all; their ids, in order.

        All or nothing: every run is validated before any is stored, and a ParamError names the first wrong
        one by its index (``runs[3].params.test_id: ...``). The runs and their stages are stored in one
        transaction, and each distinct first-stage group is scheduled once.
        """
        return self._start(plan_id, runs, indexed=True)

    def _start(self, plan_id: int, requests: Sequence[RunRequest], *, indexed: bool) -> list[str]:
        with collection_paused(len(requests), at_least=BATCH_WITHOUT_COLLECTION):
            return self._start_all(plan_id, requests, indexed=indexed)

    def _start_all(self, plan_id: int, requests: Sequence[RunRequest], *, indexed: bool) -> list[str]:
        plan = self.plan(plan_id)
        now = utcnow()
        ids = _run_ids(len(requests))

        def prepared() -> Iterator[tuple[NewRun, list[NewStage]]]:
            """Each run as it is validated; the store writes it while the next is (see ``create_runs``)."""
            plan_events: list[dict[str, Any]] | None = None  # the plan's expect, checked and made JSON once
            for index, request in enumerate(requests):
                try:
                    if request.expect is None and plan_events is None:
                        check_expect(plan, list(plan.expect))
                        plan_events = jsonable([dict(e) for e in plan.expect])
                    yield self._prepare(plan, plan_id, ids[index], request, plan_events, now)
                except ParamError as exc:
                    if not indexed:
                        raise
                    raise _at_index(exc, index) from None

        stages = self.store.create_runs(prepared(), len(requests))
        if not stages:
            return []
        self.capture.wake()
        groups = list(dict.fromkeys(stage.group_key for stage in stages if stage.group_key))
        for listener in self.group_listeners:
            listener(groups)
        return ids

    def _prepare(
        self,
        plan: Plan,
        plan_id: int,
        run_id: str,
        request: RunRequest,
        plan_events: list[dict[str, Any]] | None,
        now: datetime,
    ) -> tuple[NewRun, list[NewStage]]:
        """Run ``run_id``, validated, and its stages, the first one active; ParamError if the request is
        wrong. ``plan_events``: the plan's expect, already checked, for a request that gives none."""
        resolved = resolve_params(plan, request.params)
        if request.expect is not None:
            check_expect(plan, list(request.expect))
            events = jsonable([dict(e) for e in request.expect])
        else:
            assert plan_events is not None
            events = plan_events
        overrides = dict(request.overrides or {})
        run = NewRun(run_id, plan_id, plan.name, RunStatus.RUNNING, resolved, events, overrides, now)
        run.expect_arrow = self._expect_in_columns(plan, events)
        first = self._activation(plan, plan_id, 0, run.id, resolved, overrides, now)
        stages = [
            NewStage(run.id, 0, plan.stages[0].name, first.status, first.group_key, first.where, now, first.deadline),
            *(NewStage(run.id, i, s.name, StageStatus.PENDING) for i, s in enumerate(plan.stages[1:], start=1)),
        ]
        return run, stages

    def _expect_in_columns(self, plan: Plan, events: list[dict[str, Any]]) -> bytes | None:
        """The expected events as Arrow IPC bytes, when there are at least ``COLUMNAR_ROWS`` of them and a stage
        compares with them by rows in columns: such a stage is read in columns, and its polls then read these
        bytes instead of parsing the events' JSON each time (a million took 0.6 to 1 s). None when Arrow would
        not hold them as they are (``records_table``) or the state database would not take them."""
        if len(events) < COLUMNAR_ROWS or not COLUMNAR_INSTALLED:
            return None
        if not any(s.reference == EXPECT and in_columns(s) for s in plan.stages):
            return None
        table = records_table(events)
        if isinstance(table, str):
            log.info("plan %s: the %d expected events are kept as records: %s", plan.name, len(events), table)
            return None
        kept = table_bytes(table)
        return kept if len(kept) <= self.store.largest_blob() else None

    def cancel(self, run_id: str) -> bool:
        """Stop a running run; what its stages verified so far is kept. False if it had already ended."""
        plan = self.plan(self.store.run(run_id).plan_id)
        return self.store.finish_run(run_id, RunStatus.CANCELLED, notify=pending_notice(plan))

    def result(self, run_id: str) -> RunResult:
        return build_result(self.store.run(run_id), self.store.run_stages(run_id))

    def refresh_connections(self) -> None:
        """Forget loaded plans and open sources when a connection changed (in any process): the next poll
        reads with the connection's new options."""
        revision = self.connections.revision()
        if revision != self._connections_seen:
            if self._connections_seen is not None:
                self.plan.cache_clear()
                self.capture.forget_plans()
                self._close_sources()
            self._connections_seen = revision

    def _activation(
        self,
        plan: Plan,
        plan_id: int,
        idx: int,
        run_id: str,
        params: dict[str, Any],
        overrides: dict[str, Any],
        now: datetime,
    ) -> Activation:
        """What makes stage ``idx`` of a run active: its group, its ``where`` values, its deadline."""
        stage = plan.stages[idx]
        source = self.source(plan_id, stage.source)
        key = group_key(plan_id, idx, source.batch_key(stage, params), schedule_signature(plan, stage, overrides))
        deadline = now + stage_timeout(plan, stage, overrides)
        if stage.at is not None and not overrides.get("interval"):
            at = stage.at if stage.at.tzinfo else stage.at.replace(tzinfo=UTC)
            deadline = max(at, now)
        return Activation(run_id, idx, StageStatus.WAITING, key, jsonable(render(stage.where, params)), now, deadline)

    # -- polling ---------------------------------------------------------------------------------------
    def poll_group(self, group: str, fresh_only: bool = False, claim: Claim | None = None) -> PollSummary:
        """Poll every run waiting in ``group`` (only never-polled ones with ``fresh_only``), ``batch_size`` runs
        at a time: each chunk is read as plain rows, fetched with one source query and written at once, so
        memory holds one chunk, not the group.

        ``claim``: the tick a poller gives this poll (``store.ticks.Claim``). It is recorded before anything
        is read, and each chunk is written only if it is still the group's newest claim and its epoch the
        lease's; once it is not, the poll stops and says so (``PollSummary.superseded``). Without it (the
        CLI's foreground run, tests), nothing is fenced."""
        with self._group_locks[group], log_context(group=group):
            if claim is not None and not self.store.claim(claim):
                log.info("poll of group %s not started: a newer claim on it or a newer leader exists", group)
                return PollSummary(group=group, superseded=True)
            try:
                return self._poll_claimed(group, fresh_only, claim)
            except Superseded as exc:
                log.warning("poll of group %s stopped, its remaining writes refused: %s", group, exc)
                return PollSummary(group=group, superseded=True)

    def _poll_claimed(self, group: str, fresh_only: bool, claim: Claim | None) -> PollSummary:
        """``poll_group`` once its claim holds (or without one); Superseded when a write finds it no longer does."""
        polled = 0
        activated: dict[str, None] = {}
        retry_in: float | None = None
        head = self.store.waiting(group, fresh_only=fresh_only, limit=1, arrow=COLUMNAR_INSTALLED)
        if head:
            plan: Plan | None = None
            names: dict[str, str] = {}  # what the lines of this poll are about
            try:  # a group is one stage of one plan version
                plan = self.plan(head[0].plan_id)
                stage = plan.stages[head[0].idx]
                names = {"plan": plan.name, "stage": stage.name}
            except TrackcheckError as exc:  # e.g. a connection it names was deleted: end its runs, say why
                problem = str(exc)
            size = plan.defaults.batch_size if plan is not None else UNLOADABLE_CHUNK
            after = 0
            with log_context(**names), _ChunkWriter(functools.partial(self._apply, claim=claim)) as writer:
                for number in itertools.count():
                    chunk = self.store.waiting(
                        group, fresh_only=fresh_only, after=after, limit=size, arrow=COLUMNAR_INSTALLED
                    )
                    if not chunk:
                        break
                    after = chunk[-1].stage_id
                    write = TickWrite()
                    if plan is None:
                        self._unloadable(chunk, problem, write)
                    else:
                        poll = claim.describe(number) if claim is not None else None
                        backoff = self._poll_chunk(plan, head[0].plan_id, stage, chunk, write, poll=poll)
                        if backoff is not None:
                            retry_in = backoff if retry_in is None else min(retry_in, backoff)
                    writer.write(write, chunk, last=len(chunk) < size)
                    polled += len(write.polls) + sum(len(q.stages) for q in write.quiet)
                    activated.update(dict.fromkeys(a.group_key for a in write.activate))
                    if len(chunk) < size:
                        break
        waiting = self.store.active_groups([group])
        return PollSummary(
            group=group,
            polled=polled,
            remaining=waiting[0].waiting if waiting else 0,
            retry_in=retry_in,
            earliest_deadline=waiting[0].earliest_deadline if waiting else None,
            activated=tuple(activated),
        )

    def _apply(self, write: TickWrite, chunk: Sequence[Waiting], claim: Claim | None = None) -> None:
        """Write a tick so that one run's data cannot hold the others back.

        A value the state database refuses (a NUL character on PostgreSQL, a lone surrogate anywhere) is
        stored escaped, with a note on the runs it concerns; if the tick still cannot be written, each run is
        written on its own and a run whose write fails ends as ``error`` saying why. An outage of the state
        database is not a run's fault: it propagates, and the tick is polled again later; so does Superseded
        (``claim`` no longer holds), which stops the poll.
        """
        try:
            self.store.apply(write, claim)
            return
        except StoreError as exc:
            if not exc.data_error:
                raise
        except (UnicodeError, ValueError):
            pass
        escaped = write.escaped()
        try:
            self.store.apply(escaped, claim)
            return
        except StoreError as exc:
            if not exc.data_error:
                raise
            log.warning("a tick of %d run(s) could not be stored, writing run by run: %s", len(chunk), exc)
        except (UnicodeError, ValueError) as exc:
            log.warning("a tick of %d run(s) could not be stored, writing run by run: %s", len(chunk), exc)
        for waiting in chunk:
            part = escaped.for_run(waiting.run_id)
            try:
                self.store.apply(part, claim)
            except StoreError as exc:
                if not exc.data_error:
                    raise
                self.store.apply(_cannot_store(waiting, part, exc.message), claim)
            except (UnicodeError, ValueError) as exc:
                self.store.apply(_cannot_store(waiting, part, f"{type(exc).__name__}: {exc}"), claim)

    def _unloadable(self, chunk: Sequence[Waiting], why: str, write: TickWrite) -> None:
        """The plan version of these runs no longer loads: they end as ``error`` now rather than wait forever."""
        now = utcnow()
        reason = f"the plan no longer loads, nothing was read: {mask_url_passwords(why)}"
        for waiting in chunk:
            _end_in_error(waiting, reason, now, None, write)

    def _fetch(
        self, plan: Plan, plan_id: int, stage: StageSpec, chunk: Sequence[Waiting], poll: str | None = None
    ) -> Fetched:
        """One source query for the runs of ``chunk`` (the union of their ``where`` values), timed and
        reported to the query listeners; a failure is kept with its kind, never raised. ``poll`` names the
        read (``FetchRequest.poll``)."""
        wheres = [w.where or {} for w in chunk]
        params = chunk[0].params
        since = min(w.created_at for w in chunk)
        began = time.monotonic()
        result: FetchResult | None = None
        failure: str | None = None
        kind = ErrorKind.TRANSIENT
        escaped: frozenset[int] = frozenset()
        rows: TableRecords | None = None
        try:
            source = self.source(plan_id, stage.source)
            captured: list[Message] | None = None
            notes: list[str] = []
            if source.listens_to(stage):  # a bus without history: what the poller heard for these runs
                captured, notes = self.capture.input(plan_id, stage, source, params, since)
            request = FetchRequest(
                plan=plan.name,
                stage=stage,
                filters=union_filters(wheres),
                params=params,
                since=since,
                captured=captured,
                poll=poll,
            )
            reader = self._columnar(plan, plan_id, stage, chunk, source, request)
            table = self._read_columns(reader, request, plan_id) if reader is not None else None
            if table is not None:  # PostgreSQL text holds no NUL and UTF-8 no lone surrogate: nothing to escape
                rows, result = TableRecords(table), FetchResult([], scanned=table.num_rows)
            else:
                result = source.fetch(request)
                result.notes[:0] = notes
                result.records, escaped = _storable_records(result.records)
        except SourceError as exc:
            failure, kind = str(exc), exc.kind
        except StoreError:  # the state database (asked how many rows to expect) is not the source's fault
            raise
        except TrackcheckError as exc:  # a parameter or plan problem: the same at every poll
            failure, kind = str(exc), ErrorKind.PERMANENT
        except Exception as exc:  # a bug must not stall the runs: they end as errors saying so
            log.exception("unexpected error reading stage %s of plan %s", stage.name, plan.name)
            failure = f"unexpected {type(exc).__name__} reading the source: {mask_url_passwords(str(exc))}"
            kind = ErrorKind.PERMANENT
        seconds = time.monotonic() - began
        facts = QueryFacts(
            plan.name,
            stage.name,
            plan.sources[stage.source].type,
            seconds,
            failure,
            scanned=result.scanned if result is not None else None,
            unparsed=result.unparsed if result is not None else 0,
        )
        for listener in self.query_listeners:
            listener(facts)
        return Fetched(result if failure is None else None, failure, kind, seconds * 1000, escaped, rows)

    def _read_columns(self, reader: ColumnarReader, request: FetchRequest, plan_id: int) -> pa.Table | None:
        """The rows in columns, or None when a column has no Arrow type: the stage is then read by rows, now
        and at its next polls."""
        try:
            return reader.read(request)
        except NotColumnar as exc:
            log.info("stage %s is read by rows: %s", request.stage.name, exc)
            self._by_rows.add((plan_id, request.stage.name))
            return None

    def _poll_chunk(
        self,
        plan: Plan,
        plan_id: int,
        stage: StageSpec,
        chunk: Sequence[Waiting],
        write: TickWrite,
        fetched: Fetched | None = None,
        *,
        poll: str | None = None,
    ) -> float | None:
        """Poll up to batch_size runs with one source query; returns the back-off delay if the source failed.

        A permanent failure of a query made for several runs may be one run's doing (a ``where`` value the
        column type cannot read): the runs are then split in two and each half read on its own, so only the
        runs whose values fail end as ``error``; when both halves fail with the same message (the query
        itself is wrong), all of them do.
        """
        alone = chunk[0].run_id if len(chunk) == 1 else None  # a group of one run: its lines name it
        with log_context(runs=len(chunk), run_id=alone):
            return self._read_and_judge(plan, plan_id, stage, chunk, write, fetched, poll)

    def _read_and_judge(
        self,
        plan: Plan,
        plan_id: int,
        stage: StageSpec,
        chunk: Sequence[Waiting],
        write: TickWrite,
        fetched: Fetched | None,
        poll: str | None,
    ) -> float | None:
        """``_poll_chunk``'s work, inside its log context."""
        if stage.emit is not None:
            return self._emit(plan, plan_id, stage, chunk, write)
        if stage.compare is not None and stage.compare.method == "checksum":
            return self._reconcile(plan, plan_id, stage, chunk, write)
        if stage.compare is not None and stage.compare.checksum_above is not None:
            large = self._large(plan, stage, chunk, stage.compare.checksum_above)
            if large:  # their reference read too many rows to compare records: by checksum instead
                delays = [self._reconcile(plan, plan_id, stage, large, write)]
                rest = [w for w in chunk if w.run_id not in {v.run_id for v in large}]
                if rest:
                    delays.append(self._read_and_judge(plan, plan_id, stage, rest, write, fetched, poll))
                return min((d for d in delays if d is not None), default=None)
        fetched = fetched or self._fetch(plan, plan_id, stage, chunk, poll)
        wheres = [w.where or {} for w in chunk]
        distinct = len({repr(sorted(w.items())) for w in wheres}) > 1
        if fetched.failure is not None and fetched.kind is ErrorKind.PERMANENT and distinct:
            halves = [chunk[: len(chunk) // 2], chunk[len(chunk) // 2 :]]
            reads = [self._fetch(plan, plan_id, stage, half, poll) for half in halves]
            # both halves failing alike (an unknown table...) is the query's fault: stop there; failing with
            # different messages (each naming its own bad value) means bad runs in both: split both again
            alike = len({r.failure for r in reads}) == 1
            if not (alike and all(r.failure is not None and r.kind is ErrorKind.PERMANENT for r in reads)):
                delays = [
                    self._poll_chunk(plan, plan_id, stage, half, write, read, poll=poll)
                    for half, read in zip(halves, reads, strict=True)
                ]
                return min((d for d in delays if d is not None), default=None)
        now = utcnow()
        records = fetched.result
        per_run: Sequence[list[Record] | TableRecords]
        if records is None:
            per_run = [[] for _ in chunk]
        elif fetched.rows is not None:
            per_run = split_table(fetched.rows, wheres)
        else:
            per_run = split(records.records, wheres)
        # a run whose stage was quiet, that again found nothing (and no note to add), before its deadline: its
        # comparison and decision would be the last ones again, so only the poll itself is recorded
        hushed = records is not None and _said_nothing_else(records)
        quiet: list[tuple[int, str]] = []
        polled: list[tuple[Waiting, list[dict[str, Any]] | TableRecords]] = []
        for w, found in zip(chunk, per_run, strict=True):
            if hushed and w.quiet and not found and (w.deadline is None or now < w.deadline):
                quiet.append((w.stage_id, w.run_id))
            else:
                polled.append((w, found))
        references = self._references(plan, stage, [w for w, _ in polled]) if records is not None else {}
        max_errors = 0
        for w, found in polled:
            if records is None:  # the source could not be read: every run of the chunk keeps its error
                outcome = Outcome(None, fetched.failure, fetched.kind, found, fetched.milliseconds)
            else:
                outcome = self._compare(plan, stage, w, found, references.get(w.run_id), fetched, records, now)
            decision = self._conclude(plan, plan_id, stage, w, outcome, now, write)
            max_errors = max(max_errors, decision.errors_in_row)
        if quiet:
            write.quiet.append(QuietPolls(now, fetched.milliseconds, tuple(quiet)))
            if log.isEnabledFor(logging.INFO):
                named = " ".join(run_id for _, run_id in quiet[:QUIET_RUNS_NAMED])
                more = f" and {len(quiet) - QUIET_RUNS_NAMED} more" if len(quiet) > QUIET_RUNS_NAMED else ""
                log.info(
                    "poll plan=%s stage=%s outcome=waiting found=0: %d run(s) found nothing again "
                    "(run=%s%s), duration_ms=%.0f",
                    plan.name,
                    stage.name,
                    len(quiet),
                    named,
                    more,
                    fetched.milliseconds,
                )
        return None if fetched.failure is None else _backoff(plan, stage, max_errors)

    def _reconcile(
        self, plan: Plan, plan_id: int, stage: StageSpec, chunk: Sequence[Waiting], write: TickWrite
    ) -> float | None:
        """A stage compared by checksum (``recon.stages``): per run, its table and the reference stage's, each
        narrowed to the run's ``where``, reconciled inside their databases; nothing is read into a snapshot.
        Returns the back-off delay when a database could not be read, as a fetch does."""
        assert stage.compare is not None and stage.reference is not None  # the plan checked both
        reference = plan.stage(stage.reference)
        spec = recon_spec(stage.compare, plan.key_for(stage))
        max_errors = 0
        for w in chunk:
            began = time.monotonic()
            try:
                with log_context(run_id=w.run_id):
                    left = self._sql_source(plan_id, reference.source)
                    right = self._sql_source(plan_id, stage.source)
                    result = reconcile(
                        stage_table(left, reference, jsonable(render(reference.where or {}, w.params))),
                        stage_table(right, stage, w.where or {}),
                        spec,
                    )
                outcome = Outcome(judge(stage.compare, result), None, ErrorKind.TRANSIENT, [], _since(began))
            except SourceError as exc:
                outcome = Outcome(None, str(exc), exc.kind, [], _since(began))
            except TrackcheckError as exc:  # a key or field the tables lack: the same at every poll
                outcome = Outcome(None, str(exc), ErrorKind.PERMANENT, [], _since(began))
            except Exception as exc:  # a bug must not stall the run: it ends as an error saying so
                log.exception("cannot reconcile stage %s of plan %s", stage.name, plan.name, extra={"run_id": w.run_id})
                error = f"cannot reconcile: {type(exc).__name__}: {mask_url_passwords(str(exc))}"
                outcome = Outcome(None, error, ErrorKind.PERMANENT, [], _since(began))
            decision = self._conclude(plan, plan_id, stage, w, outcome, utcnow(), write)
            max_errors = max(max_errors, decision.errors_in_row)
        return None if max_errors == 0 else _backoff(plan, stage, max_errors)

    def _large(self, plan: Plan, stage: StageSpec, chunk: Sequence[Waiting], above: int) -> list[Waiting]:
        """The runs whose reference stage read more than ``above`` rows, or more than its snapshot keeps."""
        idx = next(i for i, s in enumerate(plan.stages) if s.name == stage.reference)
        sizes = self.store.snapshot_sizes([w.run_id for w in chunk], idx)
        return [w for w in chunk if (size := sizes.get(w.run_id)) is not None and (size[1] or size[0] > above)]

    def _sql_source(self, plan_id: int, name: str) -> SqlSource:
        source = self.source(plan_id, name)
        if not isinstance(source, SqlSource):  # the plan allows checksums between sql sources only
            raise PlanError(f"source {name!r} is not a sql source: it cannot be compared by checksum")
        return source

    def _compare(
        self,
        plan: Plan,
        stage: StageSpec,
        w: Waiting,
        found: list[dict[str, Any]] | TableRecords,
        reference: Reference | None,
        fetched: Fetched,
        records: FetchResult,
        now: datetime,
    ) -> Outcome:
        """What one run's records mean against its reference (``str``: why it has none): the comparison, the
        first-seen times of a stage that reads events, and the notes of the read in its reason."""
        if isinstance(reference, str):
            return Outcome(None, reference, ErrorKind.PERMANENT, found, fetched.milliseconds)
        key = plan.key_for(stage)
        first_seen: dict[str, str] | None = None
        arrived = False  # a record was found here for the first time
        try:
            comparison = evaluate_stage(stage, key, found, reference or [])
            if keeps_first_seen(stage):  # when each record was first found here, kept with the snapshot
                limit = plan.defaults.snapshot_limit
                if isinstance(found, TableRecords) and stage.time_field is None:  # no lateness to measure
                    first_seen, arrived = merge_first_seen(w.first_seen, streamed_key_texts(found, key), now, limit)
                else:
                    timed = _timed(found, key, stage.time_field)
                    texts = key_texts(timed, key)
                    first_seen, arrived = merge_first_seen(w.first_seen, texts, now, limit)
                    comparison = judge_latency(stage, comparison, timed, key, first_seen, texts)
        except Exception as exc:  # e.g. a schema file removed since the plan loaded
            log.exception("cannot compare stage %s of plan %s", stage.name, plan.name, extra={"run_id": w.run_id})
            error = f"cannot compare: {type(exc).__name__}: {exc}"
            return Outcome(None, error, ErrorKind.PERMANENT, found, fetched.milliseconds)
        if records.unparsed and comparison.reason:
            comparison.reason += f" ({records.unparsed} unparsed lines)"
        if records.notes:
            said = "; ".join(records.notes[:NOTES_SHOWN])
            more = len(records.notes) - NOTES_SHOWN
            comparison.reason = "; ".join(
                filter(None, [comparison.reason, said + (f" (and {more} more)" if more > 0 else "")])
            )
        escaped = sum(1 for record in found if id(record) in fetched.escaped) if fetched.escaped else 0
        if escaped:
            comparison.reason = (comparison.reason or "") + (
                f" ({escaped} record(s) held a NUL character or a lone surrogate: shown escaped)"
            )
        quiet = comparison.found == 0 and _said_nothing_else(records) and stage.absent is None
        return Outcome(comparison, None, ErrorKind.TRANSIENT, found, fetched.milliseconds, first_seen, arrived, quiet)

    def _conclude(
        self,
        plan: Plan,
        plan_id: int,
        stage: StageSpec,
        w: Waiting,
        outcome: Outcome,
        now: datetime,
        write: TickWrite,
    ) -> Decision:
        """Decide what one poll of one run's stage means, add its rows to the tick, and activate the next
        stage or end the run."""
        comparison, error = outcome.comparison, outcome.error
        deadline, started = w.deadline, w.started_at
        # the time this stage was given: its timeout, or until the `at` instant for an `at` stage
        timeout = deadline - started if deadline and started else stage_timeout(plan, stage, w.overrides or {})
        decision = decide(
            comparison=comparison,
            error=error,
            permanent=outcome.kind is ErrorKind.PERMANENT,
            now=now,
            deadline=deadline,
            timeout=timeout,
            errors_in_row=w.errors_in_row,
            retries=plan.setting(stage, "retries"),
            started=started,
            absent_for=stage.absent.for_ if stage.absent is not None else None,
        )
        terminal = decision.status in STAGE_ENDED
        error_kind = outcome.kind.value if error is not None else None
        write.polls.append(
            PollRow(
                w.run_id,
                w.idx,
                now,
                decision.outcome,
                comparison.found if comparison else None,
                comparison.expected if comparison else None,
                outcome.milliseconds,
                error,
                error_kind,
            )
        )
        # what the stage shows: this poll's counts and evidence, or the last ones when it could not compare
        expected, found_count, evidence = (
            (comparison.expected, comparison.found, capped_evidence(comparison.to_dict()))
            if comparison is not None
            else (w.expected, w.found, None)
        )
        row = StageUpdate(
            id=w.stage_id,
            run_id=w.run_id,
            status=decision.status,
            attempts=w.attempts + 1,
            errors_in_row=decision.errors_in_row,
            finished_at=now if terminal else None,
            reason=decision.reason,
            error=error,
            error_kind=error_kind,
            expected=expected,
            found=found_count,
            evidence=evidence,
            quiet=outcome.quiet and decision.status == decision.outcome == StageStatus.WAITING,
            keep_evidence=comparison is None,
        )
        # a snapshot when what was read changed (none for a first poll that found nothing: the API and the
        # dashboard show no snapshot as no records), when the stage ends, or when a record arrived
        if comparison is not None and (comparison.found != (w.found or 0) or terminal or outcome.arrived):
            passed = decision.status == StageStatus.PASSED
            write.snapshots.append(self._snapshot(plan, stage, w, outcome, now, passed=passed))
        write.stages.append(row)
        log.info(
            "poll run=%s plan=%s stage=%s outcome=%s found=%s expected=%s duration_ms=%.0f%s",
            w.run_id,
            plan.name,
            stage.name,
            decision.outcome,
            row.found,
            row.expected,
            outcome.milliseconds,
            f" error={error}" if error else "",
            extra={"run_id": w.run_id},  # the line is about this run (``trackcheck.logs``), not the whole group
        )
        if decision.status == StageStatus.PASSED and w.idx + 1 < len(plan.stages):
            next_stage = self._activation(plan, plan_id, w.idx + 1, w.run_id, w.params, w.overrides, now)
            write.activate.append(next_stage)
        elif terminal:
            _end_run(plan, w, decision.status, now, write)
        return decision

    def _emit(
        self,
        plan: Plan,
        plan_id: int,
        stage: StageSpec,
        chunk: Sequence[Waiting],
        write: TickWrite,
    ) -> float | None:
        """The stage a plan's ``emit:`` adds: send each run's events (stamped) through the front door. It
        passes once they were accepted, keeping what was sent as its records (``compare: {with: emit}``);
        a refused send is a source error, retried with back-off until the stage's timeout. Returns the
        back-off delay if a send failed."""
        max_errors = 0
        for w in chunk:
            now = utcnow()
            began = time.monotonic()
            events = stamped(reference_records(_expected(w)), stage.emit, w.params, w.run_id) if stage.emit else []
            comparison: Comparison | None = None
            error: str | None = None
            kind = ErrorKind.TRANSIENT
            with log_context(run_id=w.run_id):  # a send per run: what its source logs is about this run
                try:
                    deaf = self.capture.ensure(plan_id, w.params, w.idx + 1) if self.capture.running else None
                    if deaf is not None:  # what it sends would be lost: sent once the bus can be listened to
                        raise SourceConnectError(deaf, plan=plan.name, stage=stage.name)
                    answer = send(self.source(plan_id, stage.source), stage, events, w.params, w.run_id)
                    comparison = Comparison("passed", len(events), len(events), reason=answer)
                except SourceError as exc:
                    error, kind = str(exc), exc.kind
                except TrackcheckError as exc:
                    error, kind = str(exc), ErrorKind.PERMANENT
                except Exception as exc:  # a bug must not stall the run
                    log.exception("unexpected error sending the events of run %s", w.run_id)
                    error, kind = f"unexpected {type(exc).__name__} sending the events: {exc}", ErrorKind.PERMANENT
            milliseconds = (time.monotonic() - began) * 1000
            outcome = Outcome(comparison, error, kind, events, milliseconds)
            decision = self._conclude(plan, plan_id, stage, w, outcome, now, write)
            max_errors = max(max_errors, decision.errors_in_row)
        return None if max_errors == 0 else _backoff(plan, stage, max_errors)

    def _references(self, plan: Plan, stage: StageSpec, chunk: Sequence[Waiting]) -> dict[str, Reference]:
        """Each run's reference records (an Arrow table for expected events or a snapshot kept in columns), or
        a message saying why it cannot be compared."""
        if stage.reference is None:  # an absent stage checks what arrives, against nothing
            return {w.run_id: [] for w in chunk}
        if stage.reference == EXPECT:
            return {w.run_id: _expected(w) for w in chunk}
        idx = next(i for i, s in enumerate(plan.stages) if s.name == stage.reference)
        snapshots = self.store.snapshots_for([w.run_id for w in chunk], idx, arrow=True)
        references: dict[str, Reference] = {}
        for w in chunk:
            snap = snapshots.get(w.run_id)
            if snap is None:
                references[w.run_id] = f"no snapshot of stage {stage.reference!r} to compare with"
            elif snap.arrow is not None and COLUMNAR_INSTALLED:
                references[w.run_id] = table_of(snap.arrow)
            elif snap.arrow is not None:
                references[w.run_id] = (
                    f"stage {stage.reference!r} kept its {snap.total} records in columns: install "
                    "trackcheck[columnar] to compare with them"
                )
            elif snap.truncated:
                references[w.run_id] = (
                    f"stage {stage.reference!r} read {snap.total} records, more than its snapshot keeps "
                    f"({len(snap.records)}); raise defaults.snapshot_limit, or compare with method: checksum"
                )
            else:
                references[w.run_id] = list(snap.records)
        return references

    def _snapshot(
        self, plan: Plan, stage: StageSpec, w: Waiting, outcome: Outcome, now: datetime, *, passed: bool
    ) -> SnapshotRow:
        """What a stage read, kept up to ``snapshot_limit`` records, which later stages compare with and pages
        show. When the stage ``passed`` with more records than that, they are kept whole in columns as well
        (``arrow``) if a later stage compares with them by rows, Arrow holds them as they are (rows read in
        columns always; other records when ``records_table`` takes them) and the state database takes them in
        one value. A stage that still waits is compared with by no one yet, and may write its snapshot at
        every poll."""
        found, limit = outcome.found, plan.defaults.snapshot_limit
        kept = SnapshotRow(
            w.run_id, w.idx, jsonable(found[:limit]), len(found), len(found) > limit, now, outcome.first_seen
        )
        if not (passed and kept.truncated and COLUMNAR_INSTALLED and _compared_by_rows_later(plan, stage)):
            return kept
        table = found.table if isinstance(found, TableRecords) else records_table(jsonable(list(found)))
        if isinstance(table, str):
            problem = f"its {len(found)} records cannot be kept in columns ({table})"
        else:
            arrow = table_bytes(table)
            largest = self.store.largest_blob()
            if len(arrow) <= largest:
                kept.arrow = arrow
                return kept
            problem = (
                f"its {len(found)} records take {len(arrow) / 1e6:.1f} MB in columns, more than the state "
                f"database takes in one value ({largest / 1e6:.1f} MB)"
            )
        log.warning(
            "stage %s of plan %s: %s: its snapshot keeps its first %d records only",
            stage.name,
            plan.name,
            problem,
            limit,
            extra={"run_id": w.run_id},
        )
        return kept


class _ChunkWriter:
    """Writes a group's chunks one behind its reads: while chunk k is written (mostly the state database's
    work, on another core), chunk k+1 is read, fetched and compared. At most one write is in flight, so
    memory still holds about one chunk; a write's error is raised at the next chunk or when the poll ends,
    and every write has ended when the ``with`` block has. A group of one chunk is written in the caller's
    thread, without a second one (benchmark B7: a first tick of 100,000 runs spent ~40 % of its wall time
    waiting for its writes)."""

    def __init__(self, apply: Callable[[TickWrite, Sequence[Waiting]], None]) -> None:
        self._apply = apply
        self._pool: ThreadPoolExecutor | None = None
        self._pending: Future[None] | None = None

    def write(self, write: TickWrite, chunk: Sequence[Waiting], *, last: bool) -> None:
        self._wait()
        if last:
            self._apply(write, chunk)
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="tc-chunk-writer")
        # the write's lines are about the same group as the poll's
        self._pending = self._pool.submit(contextvars.copy_context().run, self._apply, write, chunk)

    def _wait(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def __enter__(self) -> _ChunkWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self._wait()
        finally:
            if self._pool is not None:
                self._pool.shutdown()


def _timed(found: list[dict[str, Any]] | TableRecords, key: list[str], time_field: str | None) -> list[Record]:
    """The records a stage's lateness is measured on: ``found``, or of rows in columns each row's key and sent
    time only (every row is measured; its other fields need not become a dict)."""
    if isinstance(found, TableRecords):
        return found.fields([*key, time_field] if time_field else key)
    return found


def _since(began: float) -> float:
    """Milliseconds since ``began`` (``time.monotonic()``)."""
    return (time.monotonic() - began) * 1000


def _said_nothing_else(records: FetchResult) -> bool:
    """The read added nothing to a stage's reason (no notes, no unparsed lines): the rule by which a poll that
    found nothing makes its stage quiet, and a quiet stage's next empty poll stays quiet."""
    return not records.notes and not records.unparsed


def _backoff(plan: Plan, stage: StageSpec, errors_in_row: int) -> float:
    """Seconds until a failing stage is tried again: its ``backoff``, doubling per error in a row up to 2^10
    (beyond, the regular tick comes first anyway)."""
    backoff: timedelta = plan.setting(stage, "backoff")
    return backoff.total_seconds() * 2 ** min(10, max(0, errors_in_row - 1))


def _storable_records(records: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], frozenset[int]]:
    """Records with every text escaped where no state database could store it (``storable_text``), and the
    ids of the records that changed. Done where records enter trackcheck, so that comparisons, snapshots
    and later stages all see the same values, on SQLite, PostgreSQL and MariaDB alike."""
    cleaned = [_storable_record(record) for record in records]
    return cleaned, frozenset(id(new) for new, old in zip(cleaned, records, strict=True) if new is not old)


def _storable_record(record: dict[str, Any]) -> dict[str, Any]:
    changed = False

    def clean(value: Any) -> Any:
        nonlocal changed
        if isinstance(value, str):
            fixed = storable_text(value)
            changed = changed or fixed is not value
            return fixed
        if isinstance(value, dict):
            return {clean(k): clean(v) for k, v in value.items()}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    cleaned = {clean(k): clean(v) for k, v in record.items()}
    return cleaned if changed else record


@dataclass(frozen=True)
class Fetched:
    """What one source query of a tick gave: the records, or the failure and whether it can fix itself."""

    result: FetchResult | None
    failure: str | None
    kind: ErrorKind
    milliseconds: float
    #: ``id()`` of the records whose text was escaped (they stay alive in ``result``)
    escaped: frozenset[int] = frozenset()
    #: the rows, when they were read in columns (``result`` then holds no records)
    rows: TableRecords | None = None


def _expected(w: Waiting) -> list[dict[str, Any]] | pa.Table:
    """The run's expected events: the table they were kept as in columns (read once per poll), or their
    records."""
    if w.expect_arrow is None:
        return w.expect
    if w.expect_table is None:
        w.expect_table = table_of(w.expect_arrow)
    return cast("pa.Table", w.expect_table)


def _compared_by_rows_later(plan: Plan, stage: StageSpec) -> bool:
    """Whether a later stage compares with ``stage``'s rows (not by checksum, which reads none of them)."""
    return any(
        s.reference == stage.name and not (s.compare is not None and s.compare.method == "checksum")
        for s in plan.stages
    )


def _end_run(plan: Plan, w: Waiting, status: str, now: datetime, write: TickWrite) -> None:
    """The run ends with its stage's ``status``; the stages after a stage that did not pass are skipped."""
    notice = pending_notice(plan)
    write.runs.append(RunEnd(w.run_id, status, now, notice, now if notice else None))
    if status != StageStatus.PASSED:
        write.skip.append((w.run_id, w.idx))


def _end_in_error(w: Waiting, reason: str, now: datetime, notice: dict[str, Any] | None, write: TickWrite) -> None:
    """A poll that could not look ends the stage and its run as ``error`` with ``reason``; the stage keeps
    what it showed before."""
    kind = ErrorKind.PERMANENT.value
    write.polls.append(PollRow(w.run_id, w.idx, now, StageStatus.ERROR, None, None, 0.0, reason, kind))
    write.stages.append(
        StageUpdate(
            id=w.stage_id,
            run_id=w.run_id,
            status=StageStatus.ERROR,
            attempts=w.attempts + 1,
            errors_in_row=w.errors_in_row + 1,
            finished_at=now,
            reason=reason,
            error=reason,
            error_kind=kind,
            expected=w.expected,
            found=w.found,
            evidence=None,
            keep_evidence=True,
        )
    )
    write.runs.append(RunEnd(w.run_id, RunStatus.ERROR, now, notice, now if notice else None))
    write.skip.append((w.run_id, w.idx))


def _cannot_store(w: Waiting, part: TickWrite, why: str) -> TickWrite:
    """The tick of one run whose poll the state database refused: its stage ends as ``error`` saying why
    (the records it read are not kept), and so does the run."""
    reason = f"what this poll read could not be stored in the state database: {mask_url_passwords(why)}"[:2000]
    write = TickWrite()
    notice = next((r.notify for r in part.runs), None)
    _end_in_error(w, reason, utcnow(), notice, write)
    return write


def store_plan(
    engine: Engine, plan_text: str, origin: str, base_dir: str | None, *, trusted: bool = True
) -> tuple[int, Plan]:
    """Validate plan text and store it as a version (reused when unchanged); returns (version id, plan).

    ``trusted=False`` for a plan sent over the API or the dashboard: it loads under the engine's rules for
    uploads. Literal secrets in the text (a URL password, a header, a webhook secret) are stored encrypted
    when the service has a secret key, the shown text masked; without a key an uploaded plan with secrets
    is refused (ConfigError), and a trusted one is stored as it is, as its file on disk is."""
    trust = TRUSTED if trusted else engine.setup.uploads
    base = Path(base_dir) if base_dir else None
    plan = load_plan_text(
        plan_text, origin=origin, base_dir=base, connections=engine.connections, trust=trust, limits=engine.setup.limits
    )
    shown, sealed = plan_text, None
    if mask_plan_text(plan_text) != plan_text:
        if engine.keyring is not None:
            shown = mask_plan_text(plan_text)
            latest = engine.store.latest_plan(plan.name)
            if (
                latest is not None
                and latest.sealed is not None
                and latest.text == shown
                and latest.base_dir == base_dir
                and latest.trusted == trusted
                and engine.keyring.open(latest.sealed, what=f"plan {plan.name!r}") == plan_text
            ):
                return latest.id, plan
            sealed = engine.keyring.seal(plan_text)
        elif not trusted:
            raise no_key_error(f"plan {plan.name!r}")
    version = engine.store.save_plan(plan.name, shown, base_dir, trusted=trusted, sealed=sealed)
    return version.id, plan


def pending_notice(plan: Plan) -> dict[str, Any] | None:
    """The run's notification state when it ends: due at once if the plan names a webhook."""
    return {"state": "pending", "attempts": 0} if plan.notify else None
