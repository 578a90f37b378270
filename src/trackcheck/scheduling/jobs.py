"""The polling jobs: one per active stage group, plus one-shot jobs for prompt, retry and deadline polls.

Job ids (the group key is an internal hash; no user data goes into the job store):

- ``poll:<group>``          the group's regular trigger (interval, cron or at);
- ``poll:<group>:now``      a new run's first poll, at once (only the runs never polled yet);
- ``poll:<group>:retry``    a source error's back-off retry, sooner than the next regular tick;
- ``poll:<group>:deadline`` a poll at the earliest timeout, when that comes before the next tick;
- ``tc:sync``               every 2 s, the groups that runs joined since the last look (runs submitted by
                            another process); every ``FULL_SYNC_EVERY`` and when this process starts to lead,
                            every group with waiting runs, dropping the jobs of drained ones;
- ``tc:prune``              deletes the polls and ended runs past their retention (``[retention]``).

Jobs call ``poll`` by textual reference, so a persistent job store holds nothing but that reference and
the group key. The poll's summary goes back to the scheduler's process through the job-executed event,
which is where jobs are added and removed: this works with thread and process pool executors alike.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable
from contextlib import suppress
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from apscheduler.events import (
    EVENT_JOB_ERROR,
    EVENT_JOB_EXECUTED,
    EVENT_JOB_MAX_INSTANCES,
    EVENT_JOB_SUBMITTED,
    JobEvent,
    JobExecutionEvent,
)
from apscheduler.jobstores.base import JobLookupError

from trackcheck.engine.core import PollSummary
from trackcheck.errors import StoreError, TrackcheckError
from trackcheck.scheduling.config import CONTROL
from trackcheck.scheduling.triggers import build_trigger
from trackcheck.store.ticks import Claim

if TYPE_CHECKING:
    from apscheduler.schedulers.base import BaseScheduler

    from trackcheck.engine.core import Engine, PlanSetup
    from trackcheck.scheduling.poller import Poller
    from trackcheck.store.repository import GroupInfo, Retention

log = logging.getLogger("trackcheck.scheduler")
SYNC_EVERY = timedelta(seconds=2)
#: how often ``tc:sync`` looks at every waiting group rather than at the runs that joined since its last look
FULL_SYNC_EVERY = timedelta(seconds=60)
#: how far back an incremental sync looks before the newest start it saw: another process's clock or a slow
#: commit may put a run's start a little before what this process already read
SYNC_OVERLAP = timedelta(seconds=30)
#: how long a prompt first poll waits, so that a burst of submissions to one group is one poll
PROMPT_DELAY = timedelta(milliseconds=50)
SYNC_JOB = "trackcheck.scheduling.jobs:sync"
POLL_JOB = "trackcheck.scheduling.jobs:poll"
PRUNE_JOB = "trackcheck.scheduling.jobs:prune"
PRUNE_ID = "tc:prune"
#: what the jobs of this process run against; set by ``Poller.start`` (a pool process: ``init_process``)
_engine: Engine | None = None
_poller: Poller | None = None
#: a pool process's view of its parent poller's epoch (0: the parent does not lead), see ``EpochCell``
_epoch_cell: EpochCell | None = None
_tick_lock = threading.Lock()
_last_tick = 0


class EpochCell(Protocol):
    """A ``multiprocessing.Value('q')`` the poller shares with its pool processes: the epoch they poll under."""

    value: int


def next_tick() -> int:
    """A new tick number for a claim: microseconds since 1970, and always more than the last one given in this
    process (a clock stepped back, two ticks in one microsecond)."""
    global _last_tick
    with _tick_lock:
        _last_tick = max(_last_tick + 1, time.time_ns() // 1000)
        return _last_tick


def bind(engine: Engine, poller: Poller | None = None) -> None:
    """Make ``engine`` (and ``poller``) the ones the jobs of this process run against."""
    global _engine, _poller
    _engine, _poller = engine, poller


def unbind(engine: Engine) -> None:
    """Forget ``engine`` if it is the bound one (another poller of this process may have bound its own)."""
    global _engine, _poller
    if _engine is engine:
        _engine, _poller = None, None


def init_process(
    state_url: str,
    setup: PlanSetup | None,
    process_init: Callable[[Engine], object] | None = None,
    epoch: EpochCell | None = None,
) -> None:
    """Pool process initializer (executor ``processpool``): an engine of its own on the state database.

    It only polls; scheduling stays with the parent's scheduler, which gets each poll's summary back. Its
    polls claim their ticks under the parent's epoch, read from ``epoch`` when each starts. Two one-shot jobs
    of one group may poll it at the same moment in two processes: the later claim wins and the other poll
    stops, which is waste, and why the thread pool is the default.
    """
    global _epoch_cell
    from trackcheck.engine.core import Engine

    engine = Engine(state_url, setup=setup).start()
    if process_init is not None and os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        process_init(engine)
    bind(engine)
    _epoch_cell = epoch


def bound() -> Engine:
    """The engine that jobs of this process run against."""
    if _engine is None:
        raise RuntimeError("no trackcheck engine is running in this process")
    return _engine


def poll(group_key: str, fresh_only: bool = False) -> PollSummary | None:
    """Job entry point: poll every run waiting in a group under this process's poller's claim (a pool
    process: its parent's epoch); returns a summary for the scheduler (None: the poll was queued for
    workers, ``Poller.poll``)."""
    if _poller is not None and _poller.engine is _engine:
        return _poller.poll(group_key, fresh_only)
    if _epoch_cell is None:  # a pool process of a poller of its own runs only (``resume=False``): unfenced
        return bound().poll_group(group_key, fresh_only=fresh_only)
    epoch = _epoch_cell.value
    if epoch <= 0:  # the parent no longer leads: another poller does, under a newer epoch
        return PollSummary(group=group_key, superseded=True)
    return bound().poll_group(group_key, fresh_only, Claim(group_key, epoch, next_tick()))


def sync(full: bool = False) -> None:
    """Job entry point: give the groups that runs joined their jobs (runs from other processes, a restart)."""
    if _poller is not None and _poller.planner is not None:
        _poller.planner.request_sync(full=full)


def prune() -> None:
    """Job entry point: delete what retention no longer keeps (the poller only: jobs run where it leads)."""
    if _poller is not None:
        _poller.prune()


class JobPlanner:
    """Keeps the scheduler's jobs in line with the groups that have runs waiting."""

    def __init__(self, scheduler: BaseScheduler, poller: Poller) -> None:
        self.scheduler = scheduler
        self.poller = poller
        self.store = poller.engine.store
        # A persistent job store or a process pool needs jobs by textual reference (they then run against
        # the process's bound engine); in memory, on threads, jobs call this engine directly, so several
        # engines can live in one process (verify() called from several threads, tests).
        config = poller.config
        inline = config.jobstore == "memory" and config.executor == "threadpool"
        self.poll_func: Callable[..., Any] | str = poller.poll if inline else POLL_JOB
        self.sync_func: Callable[..., None] | str = self.request_sync if inline else SYNC_JOB
        self.prune_func: Callable[[], object] | str = poller.prune if inline else PRUNE_JOB
        #: groups whose regular job this planner added or found (no job store lookup for them again)
        self._known: set[str] = set()
        #: per group, the latest start of a run whose prompt first poll was asked for
        self._prompted: dict[str, datetime] = {}
        #: groups whose prompt poll is scheduled and not yet handed to the executor: a new run there needs no
        #: other one (that poll reads every run never polled when it starts)
        self._prompt_pending: set[str] = set()
        #: the newest stage start an incremental sync has seen, and when the last full sync was
        self._seen_until: datetime | None = None
        self._full_at: datetime | None = None
        # Rescheduling happens on a thread of its own, never in the job-event listener: APScheduler's
        # shutdown() holds its job store lock while it waits for running jobs, and a listener that asked for
        # that lock (to add or remove a job) would deadlock it.
        self._summaries: queue.SimpleQueue[PollSummary | tuple[str, str] | str | None] = queue.SimpleQueue()
        self._worker = threading.Thread(target=self._reschedule_loop, name="trackcheck-planner", daemon=True)
        self._worker.start()
        scheduler.add_listener(self._on_job_event, EVENT_JOB_EXECUTED | EVENT_JOB_ERROR)
        scheduler.add_listener(self._on_job_started, EVENT_JOB_SUBMITTED | EVENT_JOB_MAX_INSTANCES)

    def request_start(self, group_key: str) -> None:
        """A run joined ``group_key``: schedule its prompt first poll from the planner thread, so that a
        submission never waits for the job store."""
        self._summaries.put(("start", group_key))

    def request_sync(self, full: bool = False) -> None:
        """Have the planner thread run ``Poller.sync_groups`` (jobs must not touch the job store themselves)."""
        self._summaries.put("full" if full else "sync")

    def stop(self) -> None:
        """Finish the rescheduling in progress; call before shutting the scheduler down."""
        self._summaries.put(None)
        self._worker.join()

    def forget(self) -> None:
        """Drop what this planner knows of the jobs: after a pause, another process may have changed them."""
        self._known.clear()
        self._prompted.clear()
        self._prompt_pending.clear()
        self._seen_until = self._full_at = None

    def start_sync(self) -> None:
        self.scheduler.add_job(
            self.sync_func,
            "interval",
            seconds=SYNC_EVERY.total_seconds(),
            id="tc:sync",
            executor=CONTROL,
            replace_existing=True,
            coalesce=True,
            max_instances=1,
        )

    def start_prune(self, retention: Retention) -> None:
        """Prune every ``retention.every`` on the control executor; with nothing to prune, remove the job a
        former poller (configured otherwise) may have left in a shared job store."""
        if not retention.enabled:
            self._remove(PRUNE_ID)
            return
        self.scheduler.add_job(
            self.prune_func,
            "interval",
            seconds=retention.every.total_seconds(),
            id=PRUNE_ID,
            executor=CONTROL,
            replace_existing=True,
            coalesce=True,
            max_instances=1,
        )

    def sync(self, *, full: bool, only: set[str] | None = None) -> None:
        """Schedule the groups with waiting runs: all of them (``full``, or when the last full look is older
        than ``FULL_SYNC_EVERY``), else those with runs started since the last look; ``only``: these groups."""
        now = datetime.now(UTC)
        if full or self._full_at is None or now - self._full_at >= FULL_SYNC_EVERY:
            groups = self.store.active_groups()
            if only is not None:
                groups = [g for g in groups if g.group_key in only]
            self.ensure(groups, prune=True)
            self._full_at = now
            self._seen_until = max((g.latest_start for g in groups if g.latest_start), default=self._seen_until)
            return
        since = (self._seen_until or now) - SYNC_OVERLAP
        groups = self.store.groups_started_since(since)
        if only is not None:
            groups = [g for g in groups if g.group_key in only]
        self.ensure(groups)
        self._seen_until = max((g.latest_start for g in groups if g.latest_start), default=self._seen_until)

    def ensure(self, groups: Iterable[GroupInfo], *, prune: bool = False) -> None:
        """Add the missing regular jobs, a prompt poll where a group has runs never polled; with ``prune``,
        remove the jobs of groups that no longer have waiting runs."""
        now = datetime.now(UTC)
        active: set[str] = set()
        existing = self.scheduler.get_jobs() if prune else []
        if prune:  # the job store is the truth: a date trigger's job, or another poller, may have removed jobs
            self._known = {
                job.id.split(":")[1] for job in existing if job.id.startswith("poll:") and job.id.count(":") == 1
            }
        for group in groups:
            active.add(group.group_key)
            try:
                plan = self.poller.engine.plan(group.plan_id)
                stage = plan.stages[group.idx]
            except StoreError:
                continue  # the state database is away: the next sync schedules it
            except TrackcheckError as exc:
                # the plan version no longer loads (a connection it names was removed...): one poll now ends
                # its runs with the reason; the other groups are scheduled as usual
                log.warning(
                    "group %s: its plan does not load, its runs end: %s",
                    group.group_key,
                    exc,
                    extra={"group": group.group_key},
                )
                self._once(group.group_key, "now", now)
                continue
            main = f"poll:{group.group_key}"
            if group.group_key not in self._known and self.scheduler.get_job(main) is None:
                self.scheduler.add_job(
                    self.poll_func,
                    build_trigger(plan, stage, group.overrides),
                    args=[group.group_key],
                    id=main,  # and no name: only internal keys go into the (pickling) job store
                    replace_existing=True,
                )
            self._known.add(group.group_key)
            prompt = group.fresh and (stage.at is None or group.overrides.get("interval") is not None)
            latest = group.latest_start
            asked = self._prompted.get(group.group_key)
            if prompt and (latest is None or asked is None or latest > asked):
                self._prompt(group.group_key, now)
                if latest is not None:
                    self._prompted[group.group_key] = latest
        if prune:
            for job in existing:
                if job.id.startswith("poll:") and _group_of(job.id) not in active:
                    self._remove(job.id)
            self._known &= active
            self._prompted = {g: t for g, t in self._prompted.items() if g in active}
            self._prompt_pending &= active

    def _prompt(self, group: str, now: datetime) -> None:
        """The first poll of the group's runs never polled, in ``PROMPT_DELAY``; none if one is already
        scheduled and has not started: it will read them too."""
        if group in self._prompt_pending:
            return
        self._prompt_pending.add(group)
        self._once(group, "now", now + PROMPT_DELAY, fresh_only=True)

    def _once(self, group: str, kind: str, when: datetime, fresh_only: bool = False) -> None:
        self.scheduler.add_job(
            self.poll_func,
            "date",
            run_date=when,
            args=[group, fresh_only],
            id=f"poll:{group}:{kind}",
            replace_existing=True,
            misfire_grace_time=None,
            max_instances=3,
        )

    def _remove(self, job_id: str) -> None:
        with suppress(JobLookupError):
            self.scheduler.remove_job(job_id)

    def _on_job_started(self, event: JobEvent) -> None:
        """A prompt poll went to the executor (or was skipped: others of its group still run): a run joining
        its group from now on needs a prompt poll of its own."""
        if event.job_id.endswith(":now"):
            self._prompt_pending.discard(_group_of(event.job_id))

    def _on_job_event(self, event: JobExecutionEvent) -> None:
        if event.exception is not None:
            log.error(
                "poll job %s failed: %s",
                event.job_id,
                event.exception,
                extra={"group": _group_of(event.job_id) or None},
            )
            return
        if isinstance(event.retval, PollSummary):
            self._summaries.put(event.retval)

    def _reschedule_loop(self) -> None:
        stopping = False
        while not stopping:
            batch = [self._summaries.get()]
            while len(batch) < 1000:  # take what else is waiting: a burst of submissions is one ensure()
                try:
                    batch.append(self._summaries.get_nowait())
                except queue.Empty:
                    break
            stopping = None in batch
            if not self.poller.leading:  # a former poller must not touch the jobs of the one that took over
                continue
            started = {item[1] for item in batch if isinstance(item, tuple)}
            try:
                if started:
                    self.ensure(self.store.active_groups(started))
                if "full" in batch or "sync" in batch:
                    self.poller.sync_groups(full="full" in batch)
                for item in batch:
                    if isinstance(item, PollSummary):
                        self.after_poll(item)
            except Exception:  # a bookkeeping failure must not stop the poller; tc:sync repairs it
                log.exception("could not reschedule the poll jobs")

    def after_poll(self, summary: PollSummary) -> None:
        """Reschedule from a poll's summary: retire a drained group, back off after errors, honour deadlines,
        and start the groups that runs moved on to."""
        group = summary.group
        if summary.superseded:  # another leader, or a newer tick of the group, decides what comes next
            return
        self.poller.polled(summary)
        if summary.remaining == 0:
            for suffix in ("", ":retry", ":deadline"):
                self._remove(f"poll:{group}{suffix}")
            self._known.discard(group)
            self._prompted.pop(group, None)
        else:
            main = self.scheduler.get_job(f"poll:{group}")
            next_tick = main.next_run_time if main is not None else None
            if summary.retry_in is not None:
                retry_at = datetime.now(UTC) + timedelta(seconds=summary.retry_in)
                if next_tick is None or retry_at < next_tick:
                    self._once(group, "retry", retry_at)
            deadline = summary.earliest_deadline
            if deadline is not None and (next_tick is None or deadline < next_tick):
                self._once(group, "deadline", deadline + timedelta(milliseconds=50))
        if summary.activated:
            self.ensure(self.store.active_groups(summary.activated))


def _group_of(job_id: str) -> str:
    """The group of a poll job (``poll:<group>`` or ``poll:<group>:<kind>``); "" for any other job."""
    return job_id.split(":")[1] if job_id.startswith("poll:") else ""
