"""The four APScheduler components, chosen by configuration.

- scheduler: ``background`` (services, the CLI's foreground run draws its display meanwhile) or ``blocking``
  (``trackcheck worker``: a process that only polls);
- job store: ``sqlalchemy`` on the state database (default: a restart loses nothing) or ``memory``;
- executor: ``threadpool`` (default, 10 workers) or ``processpool``;
- trigger: each stage's ``interval`` (default 58s), ``cron`` or ``at``; ``interval`` here is the default
  interval of plans that do not set ``defaults.interval`` themselves.

Jobs coalesce missed runs into one and tolerate ``misfire_grace_time`` of lateness, on purpose: after a
restart or a stall, a stage is polled once, not once per missed tick.

With ``backend = "procrastinate"`` the scheduler only plans: its poll jobs queue work for ``trackcheck
worker`` processes (``distributed.py``).
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from trackcheck.errors import ConfigError
from trackcheck.plan.model import Duration

if TYPE_CHECKING:
    from collections.abc import Callable

    from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
    from apscheduler.schedulers.base import BaseScheduler
    from sqlalchemy import Engine

    from trackcheck.engine.core import Engine as Verifier
    from trackcheck.engine.core import PlanSetup
    from trackcheck.scheduling.jobs import EpochCell

JOBS_TABLE = "tc_apscheduler_jobs"
#: the executor of jobs that must run in the scheduler's own process, whatever the configured executor
CONTROL = "control"


class SchedulerConfig(BaseModel):
    """How polling is scheduled; every field can come from trackcheck.toml or TRACKCHECK_* variables."""

    model_config = ConfigDict(extra="forbid")

    #: who polls: this process's executor (``apscheduler``), or ``trackcheck worker`` processes on any number
    #: of machines taking jobs from a queue in the PostgreSQL state database (``procrastinate``)
    backend: Literal["apscheduler", "procrastinate"] = "apscheduler"
    scheduler: Literal["background", "blocking"] = "background"
    jobstore: Literal["sqlalchemy", "memory"] = "sqlalchemy"
    executor: Literal["threadpool", "processpool"] = "threadpool"
    workers: int = Field(default=10, ge=1, le=200)
    interval: Duration | None = None
    misfire_grace_time: Duration = timedelta(seconds=30)
    coalesce: bool = True
    #: procrastinate: how often a worker says it is alive, and after how long without a word its jobs are
    #: given to another worker
    heartbeat: Duration = timedelta(seconds=2)
    stalled_after: Duration = Field(default=timedelta(seconds=10), validate_default=True)

    @field_validator("executor")
    @classmethod
    def _workers_poll(cls, executor: str, info: ValidationInfo) -> str:
        if info.data.get("backend") == "procrastinate" and executor != "threadpool":
            raise ValueError("with backend 'procrastinate', trackcheck worker threads poll: use 'threadpool'")
        return executor

    @field_validator("stalled_after")
    @classmethod
    def _three_heartbeats(cls, stalled_after: timedelta, info: ValidationInfo) -> timedelta:
        heartbeat = info.data.get("heartbeat")
        if heartbeat is not None and stalled_after < heartbeat * 3:
            raise ValueError(f"must be at least three heartbeats ({heartbeat.total_seconds() * 3:g}s)")
        return stalled_after


def build_scheduler(
    config: SchedulerConfig,
    state_engine: Engine,
    setup: PlanSetup | None = None,
    process_init: Callable[[Verifier], object] | None = None,
    epoch: EpochCell | None = None,
) -> BaseScheduler:
    """An unstarted APScheduler scheduler assembled from ``config``.

    The SQLAlchemy job store shares the state database's engine (its own table), so jobs and run state
    live and die together. A process pool's processes each build their own trackcheck engine on that
    database with ``setup`` (connections, secret key) and call ``process_init`` with it; they poll under
    the epoch that the poller keeps in ``epoch`` (``jobs.init_process``).
    """
    from apscheduler.executors.pool import ProcessPoolExecutor, ThreadPoolExecutor
    from apscheduler.jobstores.memory import MemoryJobStore
    from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
    from apscheduler.schedulers.background import BackgroundScheduler
    from apscheduler.schedulers.blocking import BlockingScheduler

    from trackcheck.scheduling.jobs import init_process
    from trackcheck.store.database import sqlite_file

    if config.jobstore == "sqlalchemy":
        jobstore: object = SQLAlchemyJobStore(engine=state_engine, tablename=JOBS_TABLE)
        _create_jobs_table(jobstore)
    else:
        jobstore = MemoryJobStore()
    if config.executor == "threadpool":
        executor: object = ThreadPoolExecutor(config.workers)
    else:
        if state_engine.dialect.name == "sqlite" and sqlite_file(state_engine.url) is None:
            raise ConfigError("an in-memory state database cannot be shared with pool processes", field="executor")
        # APScheduler spawns pool processes: each builds its own engine on the state database once
        executor = ProcessPoolExecutor(
            config.workers,
            pool_kwargs={
                "initializer": init_process,
                # the engine's PlanSetup (connections, secret key), for the pool's own engines
                "initargs": (state_engine.url.render_as_string(hide_password=False), setup, process_init, epoch),
            },
        )
    cls = _resilient(BackgroundScheduler if config.scheduler == "background" else BlockingScheduler)
    return cls(
        jobstores={"default": jobstore},
        # polls run on the configured executor; bookkeeping jobs (tc:sync, schedules) need this process
        executors={"default": executor, CONTROL: ThreadPoolExecutor(2)},
        job_defaults={
            "coalesce": config.coalesce,
            "misfire_grace_time": int(config.misfire_grace_time.total_seconds()) or 1,
            "max_instances": 1,
        },
        timezone="UTC",
    )


def _create_jobs_table(jobstore: SQLAlchemyJobStore) -> None:
    """Create APScheduler's table now, tolerating another process creating it at the same moment.

    ``SQLAlchemyJobStore.start`` checks for the table, then creates it: two gunicorn workers starting
    together on a new state database could both find it missing, and the loser's ``CREATE TABLE`` failed
    its boot, which made gunicorn stop the whole service (seen on SQLite). Created here, the store's own
    check finds it.
    """
    from sqlalchemy import inspect
    from sqlalchemy.exc import SQLAlchemyError

    table = jobstore.jobs_t
    try:
        table.create(jobstore.engine, checkfirst=True)
    except SQLAlchemyError:
        if not inspect(jobstore.engine).has_table(table.name, schema=table.schema):
            raise


def _resilient(base: type[BaseScheduler]) -> type[BaseScheduler]:
    """``base`` whose job-processing loop survives a failing round.

    With a job store shared by several processes, a job can vanish between APScheduler reading the due
    jobs and updating them (JobLookupError); stock APScheduler lets that kill its scheduler thread, after
    which nothing polls while the scheduler still reports "running". Here the round is logged and retried.
    """

    class Resilient(base):  # type: ignore[valid-type,misc,unused-ignore]
        def _process_jobs(self) -> float | None:
            try:
                wait: float | None = super()._process_jobs()
            except Exception:
                logging.getLogger("trackcheck.scheduler").exception("a scheduling round failed; retrying in 1s")
                return 1.0
            return wait

    Resilient.__name__ = Resilient.__qualname__ = f"Resilient{base.__name__}"
    return Resilient
