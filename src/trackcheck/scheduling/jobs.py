"""The polling jobs: one per active stage group, plus one-shot jobs for prompt, retry and deadline polls.

Job ids (the group key is an internal hash; no user data goes into the job store):

- ``poll:<group>``          the group's regular trigger (interval, cron or at);
- ``poll:<group>:now``      a new run's first poll, at once (only the runs never polled yet);
- ``poll:<group>:retry``    a source error's back-off retry, sooner than the next regular tick;
- ``poll:<group>:deadline`` a poll at the earliest timeout, when that comes before the next tick;
- ``tc:sync``               finds groups with no job (runs submitted by another process, a restart);
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
from collections.abc import Callable
from contextlib import suppress
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED, JobExecutionEvent
from apscheduler.jobstores.base import JobLookupError

from trackcheck.errors import StoreError, TrackcheckError
from trackcheck.scheduling.config import CONTROL
from trackcheck.scheduling.triggers import build_trigger

if TYPE_CHECKING:
    from apscheduler.schedulers.base import BaseScheduler

    from trackcheck.engine.core import Engine
    from trackcheck.store.repository import GroupInfo, PruneCounts, Retention

log = logging.getLogger("trackcheck.scheduler")
SYNC_EVERY = timedelta(seconds=2)
_SYNC = "sync"
SYNC_JOB = "trackcheck.scheduling.jobs:sync"
POLL_JOB = "trackcheck.scheduling.jobs:poll"
PRUNE_JOB = "trackcheck.scheduling.jobs:prune"
PRUNE_ID = "tc:prune"
_bound: Engine | None = None


def bind(engine: Engine | None) -> None:
    """Make ``engine`` the one the jobs of this process (and of forked pool workers) run against."""
    global _bound
    _bound = engine


def init_process(state_url: str, config: dict[str, Any], setup: Any = None) -> None:
    """Pool process initializer (executor ``processpool``): an engine of its own on the state database.

    It only polls; scheduling stays with the parent's scheduler, which gets each poll's summary back.
    Two one-shot jobs of one group may then poll it at the same moment in two processes: harmless (the
    second finds the same rows) but wasteful, which is why the thread pool is the default.
    """
    from trackcheck.engine.core import Engine
    from trackcheck.scheduling.config import SchedulerConfig

    engine = Engine(state_url, SchedulerConfig.model_validate(config), poll=False, setup=setup).start()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):  # the service's metrics, counted where the polls run
        from trackcheck.service.metrics import metrics_for

        metrics_for(engine)
    bind(engine)


def bound() -> Engine:
    """The engine that jobs of this process run against."""
    if _bound is None:
        raise RuntimeError("no trackcheck engine is running in this process")
    return _bound


def poll(group_key: str, fresh_only: bool = False) -> dict[str, Any]:
    """Job entry point: poll every run waiting in a group; returns a summary for the scheduler."""
    return bound().poll_group(group_key, fresh_only=fresh_only)


def sync() -> None:
    """Job entry point: give every active group its jobs (runs from other processes, after a restart)."""
    if _bound is not None and _bound.planner is not None:
        _bound.planner.request_sync()


def prune() -> None:
    """Job entry point: delete what retention no longer keeps (the poller only: jobs run where it leads)."""
    if _bound is not None:
        prune_now(_bound)


def prune_now(engine: Engine) -> PruneCounts:
    """Prune ``engine``'s state database now; one INFO line says what went, when anything did."""
    counts = engine.prune()
    if counts.total:
        log.info(
            "retention: deleted %d run(s) with %d stage(s) and %d snapshot(s), and %d poll(s)",
            counts.runs,
            counts.stages,
            counts.snapshots,
            counts.polls,
        )
    return counts


class JobPlanner:
    """Keeps the scheduler's jobs in line with the groups that have runs waiting."""

    def __init__(self, scheduler: BaseScheduler, engine: Engine) -> None:
        self.scheduler = scheduler
        self.engine = engine
        # A persistent job store or a process pool needs jobs by textual reference (they then run against
        # the process's bound engine); in memory, on threads, jobs call this engine directly, so several
        # engines can live in one process (verify() called from several threads, tests).
        inline = engine.config.jobstore == "memory" and engine.config.executor == "threadpool"
        self.poll_func: Callable[..., Any] | str = engine.poll_group if inline else POLL_JOB
        self.sync_func: Callable[[], None] | str = self.request_sync if inline else SYNC_JOB
        self.prune_func: Callable[[], object] | str = self.prune_now if inline else PRUNE_JOB
        # Rescheduling happens on a thread of its own, never in the job-event listener: APScheduler's
        # shutdown() holds its job store lock while it waits for running jobs, and a listener that asked for
        # that lock (to add or remove a job) would deadlock it.
        self._summaries: queue.SimpleQueue[dict[str, Any] | tuple[str, str] | str | None] = queue.SimpleQueue()
        self._worker = threading.Thread(target=self._reschedule_loop, name="trackcheck-planner", daemon=True)
        self._worker.start()
        scheduler.add_listener(self._on_job_event, EVENT_JOB_EXECUTED | EVENT_JOB_ERROR)

    def request_start(self, group_key: str) -> None:
        """A run joined ``group_key``: schedule its prompt first poll from the planner thread, so that a
        submission never waits for the job store."""
        self._summaries.put(("start", group_key))

    def request_sync(self) -> None:
        """Have the planner thread run ``Engine.sync_groups`` (jobs must not touch the job store themselves)."""
        self._summaries.put(_SYNC)

    def stop(self) -> None:
        """Finish the rescheduling in progress; call before shutting the scheduler down."""
        self._summaries.put(None)
        self._worker.join()

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

    def prune_now(self) -> PruneCounts:
        return prune_now(self.engine)

    def ensure(self, groups: list[GroupInfo], *, prune: bool = False) -> None:
        """Add the missing regular jobs, a prompt poll where a group has new runs; with ``prune``, remove
        the jobs of groups that no longer have waiting runs."""
        now = datetime.now(UTC)
        for group in groups:
            try:
                plan = self.engine.plan(group.plan_id)
                stage = plan.stages[group.idx]
            except StoreError:
                continue  # the state database is away: the next sync schedules it
            except TrackcheckError as exc:
                # the plan version no longer loads (a connection it names was removed...): one poll now ends
                # its runs with the reason; the other groups are scheduled as usual
                log.warning("group %s: its plan does not load, its runs end: %s", group.group_key, exc)
                self._once(group.group_key, "now", now)
                continue
            main = f"poll:{group.group_key}"
            if self.scheduler.get_job(main) is None:
                self.scheduler.add_job(
                    self.poll_func,
                    build_trigger(plan, stage, group.overrides),
                    args=[group.group_key],
                    id=main,  # and no name: only internal keys go into the (pickling) job store
                    replace_existing=True,
                )
            if group.fresh and (stage.at is None or group.overrides.get("interval") is not None):
                self._once(group.group_key, "now", now, fresh_only=True)
        if prune:
            active = {g.group_key for g in groups}
            for job in self.scheduler.get_jobs():
                if job.id.startswith("poll:") and job.id.split(":")[1] not in active:
                    self._remove(job.id)

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

    def _on_job_event(self, event: JobExecutionEvent) -> None:
        if event.exception is not None:
            log.error("poll job %s failed: %s", event.job_id, event.exception)
            return
        summary = event.retval
        if isinstance(summary, dict) and "group" in summary:
            self._summaries.put(summary)

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
            if not self.engine.leading:  # a former poller must not touch the jobs of the one that took over
                continue
            started = {item[1] for item in batch if isinstance(item, tuple)}
            try:
                if started:
                    self.ensure(self.engine.store.active_groups(started))
                for item in batch:
                    if item == _SYNC:
                        self.engine.sync_groups()
                    elif isinstance(item, dict):
                        self.after_poll(item)
            except Exception:  # a bookkeeping failure must not stop the poller; tc:sync repairs it
                log.exception("could not reschedule the poll jobs")

    def after_poll(self, summary: dict[str, Any]) -> None:
        """Reschedule from a poll's summary: retire a drained group, back off after errors, honour deadlines,
        and start the groups that runs moved on to."""
        group = summary["group"]
        if summary["remaining"] == 0:
            for suffix in ("", ":retry", ":deadline"):
                self._remove(f"poll:{group}{suffix}")
        else:
            main = self.scheduler.get_job(f"poll:{group}")
            next_tick = main.next_run_time if main is not None else None
            if summary.get("retry_in") is not None:
                retry_at = datetime.now(UTC) + timedelta(seconds=summary["retry_in"])
                if next_tick is None or retry_at < next_tick:
                    self._once(group, "retry", retry_at)
            deadline = summary.get("earliest_deadline")
            if deadline is not None:
                at = datetime.fromisoformat(deadline)
                if next_tick is None or at < next_tick:
                    self._once(group, "deadline", at + timedelta(milliseconds=50))
        if summary.get("activated"):
            self.ensure(self.engine.store.active_groups(summary["activated"]))
