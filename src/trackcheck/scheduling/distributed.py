"""Polling on procrastinate: the poller plans, ``trackcheck worker`` processes on any number of machines poll.

``[scheduler] backend = "procrastinate"``, on a PostgreSQL state database: procrastinate's queue lives in it,
beside the runs, so a deployment adds no server. The poller that holds the lease plans as it does with
APScheduler (a job per group on its trigger; prompt, retry and deadline polls; ``jobs.JobPlanner``), but a
due job does not poll: it defers one procrastinate job (``Dispatcher.dispatch``) naming the group and the
poller's epoch, with ``queueing_lock="poll:<group>"`` (a group never has two ticks waiting). Workers take
jobs with ``FOR UPDATE SKIP LOCKED`` and poll under the claim ``(epoch, job id, attempt)``
(``store.ticks.Claim``): job ids come from one sequence, so a later job of a group outranks an earlier one
whatever the machines' clocks; a job retried after its worker stalled outranks the stalled attempt, whose
writes are then refused; a job deferred by a former leader is refused whole.

A worker sends a heartbeat every ``heartbeat``; every worker looks for jobs whose worker has been silent for
``stalled_after`` (killed, frozen, cut off) and puts them back in the queue, and deletes finished jobs after
an hour. What a poll's summary asks for (a retry after a source error, a poll at the earliest deadline) the
worker defers itself, each kind under its own queueing lock; the groups runs moved on to, and drained groups,
are found by the leader's sync within seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import text
from sqlalchemy.engine import URL, make_url

from trackcheck.errors import ConfigError, StoreError
from trackcheck.store.database import normalize_url, with_dead_peer_options
from trackcheck.store.models import PollWorker
from trackcheck.store.ticks import Claim

if TYPE_CHECKING:
    import procrastinate

    from trackcheck.engine.core import Engine, PollSummary
    from trackcheck.scheduling.config import SchedulerConfig
    from trackcheck.store.repository import Store

log = logging.getLogger("trackcheck.scheduler")
TASK = "trackcheck.poll"
QUEUE = "trackcheck"
#: finished jobs are deleted this many hours after they ended
KEEP_FINISHED_HOURS = 1
#: an advisory lock key of PostgreSQL: one process at a time installs procrastinate's schema ("trackprc")
_SCHEMA_LOCK_KEY = 0x7472_6163_6B70_7263


def conninfo(state_url: str) -> str:
    """The libpq URI of the state database (procrastinate connects with psycopg, without SQLAlchemy);
    ConfigError unless it is PostgreSQL."""
    url: URL = make_url(normalize_url(state_url))
    if url.get_backend_name() != "postgresql":
        raise ConfigError(
            f"the procrastinate backend keeps its queue in the state database, which must be PostgreSQL "
            f"(this one is {url.get_backend_name()})",
            field="scheduler.backend",
        )
    # procrastinate's sessions too: a worker cut off mid-fetch must not hold its job rows for hours
    url = with_dead_peer_options(url)
    from psycopg.conninfo import make_conninfo

    parts = {"host": url.host, "port": url.port, "user": url.username, "password": url.password, "dbname": url.database}
    extra = {key: value if isinstance(value, str) else value[-1] for key, value in url.query.items()}
    return make_conninfo("", **{key: value for key, value in {**parts, **extra}.items() if value is not None})


def _procrastinate() -> Any:
    try:
        import procrastinate
    except ImportError:
        raise ConfigError(
            "the procrastinate backend needs the procrastinate package: pip install 'trackcheck[procrastinate]'",
            field="scheduler.backend",
        ) from None
    return procrastinate


class Dispatcher:
    """Defers poll jobs (the leader's planner, and workers for their follow-ups), from any thread."""

    def __init__(self, state_url: str) -> None:
        library = _procrastinate()
        self._conninfo = conninfo(state_url)
        self.app: procrastinate.App = library.App(
            connector=library.SyncPsycopgConnector(conninfo=self._conninfo, min_size=1, max_size=2)
        )
        self._already = library.exceptions.AlreadyEnqueued

    def open(self) -> Dispatcher:
        self.app.open()
        install_schema(self._conninfo)
        return self

    def close(self) -> None:
        self.app.close()

    def dispatch(self, group: str, fresh_only: bool, epoch: int, *, kind: str = "", at: datetime | None = None) -> bool:
        """Queue a poll of ``group`` under ``epoch`` (at ``at``, or now); False when one of this ``kind`` already
        waits (it will read the same runs). ``kind``: "" for the regular tick, ``now`` for a prompt first poll
        (``fresh_only``), ``retry`` or ``deadline``."""
        kind = kind or ("now" if fresh_only else "")
        # No procrastinate ``lock``: its check costs every fetch a scan of the waiting jobs (one B8 run at 4
        # workers: 21.8 ticks/s with it, 30.0 without), and a job queued for later (a deadline) held every tick of its
        # group queued after it. Two polls of a group may then overlap (a prompt poll and a regular tick):
        # the later claim wins and the other stops writing (``store.ticks.Claim``).
        try:
            self.app.configure_task(
                TASK,
                queue=QUEUE,
                queueing_lock=f"poll:{group}:{kind}" if kind else f"poll:{group}",
                schedule_at=at,
            ).defer(group=group, fresh_only=fresh_only, epoch=epoch)
        except self._already:
            return False
        return True

    def follow_up(self, summary: PollSummary, epoch: int) -> None:
        """What a worker's poll asks for next: a retry after a source error, a poll at the earliest deadline."""
        if summary.superseded or summary.remaining == 0:
            return
        now = datetime.now(UTC)
        if summary.retry_in is not None:
            self.dispatch(summary.group, False, epoch, kind="retry", at=now + timedelta(seconds=summary.retry_in))
        if summary.earliest_deadline is not None:
            at = max(now, summary.earliest_deadline + timedelta(milliseconds=50))
            self.dispatch(summary.group, False, epoch, kind="deadline", at=at)


@dataclass(frozen=True)
class QueueFacts:
    """What the queue looks like now: workers whose heartbeat is recent, poll jobs due and not taken, how
    long the oldest of them has been due (0 when none is), and what each worker reported it polled."""

    workers: int
    due: int
    oldest_due_s: float
    reports: tuple[PollWorker, ...] = ()


def queue_facts(store: Store, stalled_after: timedelta) -> QueueFacts:
    """Read from procrastinate's tables in the state database, and the workers' reports (metrics, health,
    dashboard); before any worker or planner installed them: no worker, nothing due."""
    with store.engine.connect() as connection:
        if connection.execute(text("SELECT to_regclass('procrastinate_jobs')")).scalar() is None:
            return QueueFacts(0, 0, 0.0)
        workers = connection.execute(
            text("SELECT count(*) FROM procrastinate_workers WHERE last_heartbeat > now() - make_interval(secs => :s)"),
            {"s": stalled_after.total_seconds()},
        ).scalar_one()
        due, oldest = connection.execute(
            text(
                "SELECT count(*), coalesce(extract(epoch FROM now() - min(coalesce(j.scheduled_at, e.at))), 0) "
                "FROM procrastinate_jobs j JOIN procrastinate_events e ON e.job_id = j.id AND e.type = 'deferred' "
                "WHERE j.status = 'todo' AND j.queue_name = :queue AND coalesce(j.scheduled_at, e.at) <= now()"
            ),
            {"queue": QUEUE},
        ).one()
    return QueueFacts(int(workers), int(due), max(0.0, float(oldest)), tuple(store.poll_workers(stalled_after)))


def install_schema(dsn: str) -> None:
    """Procrastinate's tables and functions in the state database, installed once (under an advisory lock,
    so that workers started together do not race); nothing when they are there."""
    import psycopg

    _procrastinate()
    from procrastinate.schema import SchemaManager

    with psycopg.connect(dsn, autocommit=True) as connection:
        connection.execute("SELECT pg_advisory_lock(%s)", (_SCHEMA_LOCK_KEY,))
        try:
            found = connection.execute("SELECT to_regclass('procrastinate_jobs')").fetchone()
            if found is None or found[0] is None:
                connection.execute(SchemaManager.get_schema())
                log.info("installed procrastinate's schema in the state database")
        finally:
            connection.execute("SELECT pg_advisory_unlock(%s)", (_SCHEMA_LOCK_KEY,))


class Tally:
    """What this worker polled, reported at each heartbeat as its row of ``tc_poll_workers``: the API
    processes show each worker's throughput (dashboard, ``/metrics``) from there, without reaching it."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.started_at = datetime.now(UTC)
        self._lock = threading.Lock()
        self._polls = self._runs = self._failed = 0
        self._finished: deque[float] = deque()  # when the polls of the last minute finished (monotonic)

    def done(self, runs: int, *, failed: bool = False) -> None:
        with self._lock:
            self._polls += 1
            self._runs += runs
            self._failed += failed
            self._finished.append(time.monotonic())

    def report(self) -> PollWorker:
        with self._lock:
            while self._finished and self._finished[0] < time.monotonic() - 60:
                self._finished.popleft()
            return PollWorker(
                name=self.name,
                started_at=self.started_at,
                seen_at=datetime.now(UTC),
                polls=self._polls,
                runs=self._runs,
                failed=self._failed,
                last_minute=len(self._finished),
            )


def run_worker(engine: Engine, config: SchedulerConfig, dispatcher: Dispatcher, *, name: str | None = None) -> None:
    """Execute poll jobs until SIGINT or SIGTERM (``trackcheck worker``): ``config.workers`` at a time, each
    in a thread of its own, under the claim its job carries; ``dispatcher`` defers their follow-ups.
    ``name`` (default ``host:pid``) names it in procrastinate's logs and on the dashboard."""
    library = _procrastinate()
    tally = Tally(name or f"{socket.gethostname()}:{os.getpid()}")
    dsn = conninfo(engine.store.url)
    # procrastinate's own connections: one listens, the others fetch and finish jobs and send heartbeats.
    # Fewer than ``workers`` + 2 starved it: with polls held by a slow source, a pool of 4 for 4 polls at a
    # time stalled the worker (and the planner beside it) for the pool's 30 s timeout (test_distributed).
    app = library.App(connector=library.PsycopgConnector(conninfo=dsn, min_size=1, max_size=config.workers + 2))

    @app.task(name=TASK, queue=QUEUE, pass_context=True)
    def poll(context: Any, group: str, fresh_only: bool, epoch: int) -> None:
        job = context.job
        try:
            summary = engine.poll_group(group, fresh_only, Claim(group, epoch, job.id, job.attempts))
        except Exception:
            tally.done(0, failed=True)
            raise
        tally.done(summary.polled)
        dispatcher.follow_up(summary, epoch)

    async def work() -> None:
        async with app.open_async():
            janitor = asyncio.create_task(_janitor(app, config, engine.store, tally))
            try:
                await app.run_worker_async(
                    queues=[QUEUE],
                    name=tally.name,
                    concurrency=config.workers,
                    update_heartbeat_interval=config.heartbeat.total_seconds(),
                    stalled_worker_timeout=config.stalled_after.total_seconds(),
                    delete_jobs="successful",
                )
            finally:
                janitor.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await janitor
                with contextlib.suppress(StoreError):  # else it goes an hour after its last report
                    engine.store.forget_worker(tally.name)

    asyncio.run(work())


async def _janitor(app: procrastinate.App, config: SchedulerConfig, store: Store, tally: Tally) -> None:
    """Report what this worker polled; put back in the queue the jobs of workers silent for
    ``stalled_after`` (a retried job runs under a higher attempt, which fences the silent one off); delete
    finished jobs, and the reports of workers gone, older than an hour."""
    manager = app.job_manager
    last_cleanup = 0.0
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(config.heartbeat.total_seconds())
        try:
            await asyncio.to_thread(store.report_worker, tally.report())
        except StoreError:  # the state database away for a moment: the next heartbeat reports again
            log.warning("could not report this worker's polls to the state database", exc_info=True)
        try:
            stalled = await manager.get_stalled_jobs(
                queue=QUEUE, seconds_since_heartbeat=config.stalled_after.total_seconds()
            )
            for job in stalled:
                await _put_back(app, job)
            if loop.time() - last_cleanup > 60:
                await manager.delete_old_jobs(nb_hours=KEEP_FINISHED_HOURS, queue=QUEUE, include_failed=True)
                await asyncio.to_thread(store.forget_silent_workers, timedelta(hours=KEEP_FINISHED_HOURS))
                last_cleanup = loop.time()
        except Exception:  # the state database away for a moment: the next round tries again
            log.exception("could not look for stalled poll jobs")


async def _put_back(app: procrastinate.App, job: Any) -> None:
    """Queue a silent worker's job again (its next attempt outranks the silent one); when a newer tick of its
    group already waits (the queueing lock is taken), end it as failed instead: that tick polls the same runs.
    Every worker looks for stalled jobs: one another worker handled
    first is no longer ``doing``, and is left alone."""
    library = _procrastinate()
    try:
        try:
            await app.job_manager.retry_job(job)
            log.warning("poll job %s of a silent worker put back in the queue (attempt %d)", job.id, job.attempts + 1)
        except library.exceptions.UniqueViolation:
            await app.job_manager.finish_job(job, library.jobs.Status.FAILED, delete_job=False)
            log.warning("poll job %s of a silent worker given up: a newer tick of its group waits", job.id)
    except library.exceptions.ConnectorException as exc:
        log.debug("poll job %s of a silent worker was handled by another worker: %s", job.id, exc)
