"""One worker process of the service: its engine (scheduler paused unless it leads), the lease, the notifier.

Every worker can accept runs and schedules (they go to the shared state database and job store); only the
lease holder polls and sends notifications. See ``trackcheck.scheduling.lease`` for the lease.
"""

from __future__ import annotations

import functools
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from trackcheck.engine.core import Engine, store_plan
from trackcheck.errors import PlanError, StoreError
from trackcheck.scheduling.distributed import QueueFacts, queue_facts
from trackcheck.scheduling.jobs import SYNC_EVERY
from trackcheck.scheduling.lease import Leadership, lease_for
from trackcheck.scheduling.poller import Poller
from trackcheck.service.config import ServiceConfig, state_database_url
from trackcheck.service.metrics import metrics_for
from trackcheck.service.notify import Notifier
from trackcheck.store.database import describe_db_error

log = logging.getLogger("trackcheck.service")
#: the leader is presumed dead when its sync job is this late in the shared job store
LEADER_STALE = SYNC_EVERY * 5


class Service:
    """What the Flask app of one worker process talks to: ``service.engine`` for runs and plans,
    ``service.poller`` for its scheduler (schedules)."""

    def __init__(self, config: ServiceConfig) -> None:
        self.config = config
        self.engine = Engine(state_database_url(config.db, config.db_password_file), setup=config.plan_setup())
        # pool processes (executor ``processpool``) count their queries in the service's metrics too
        self.poller = Poller(
            self.engine, config.scheduler, retention=config.retention_policy(), process_init=metrics_for
        )
        self.notifier = Notifier(self.engine)
        self.leadership: Leadership | None = None

    def start(self, *, load_plans: bool = True) -> Service:
        warn_if_open(self.config)
        self.poller.start(paused=True)
        if load_plans:
            load_plan_folder(self.engine, self.config.plans)
        self.leadership = Leadership(lease_for(self.engine.store.engine), self._lead, self._follow)
        self.leadership.start()
        if self.config.scheduler.backend == "procrastinate":
            metrics_for(self.engine).watch_queue(self.queue)
        return self

    def queue(self) -> QueueFacts:
        """Backend ``procrastinate``: the poll workers alive and the jobs waiting (SQLAlchemyError if the
        state database cannot say)."""
        return queue_facts(self.engine.store, self.config.scheduler.stalled_after)

    def stop(self) -> None:
        if self.leadership is not None:
            self.leadership.stop()
        self.poller.shutdown()

    def _lead(self) -> None:
        self.poller.lead()
        self.notifier.start()

    def _follow(self) -> None:
        self.notifier.stop()
        self.poller.follow()

    @property
    def leading(self) -> bool:
        return self.leadership is not None and self.leadership.leading and self.poller.leading

    def health(self) -> dict[str, Any]:
        """Database reachable, and a scheduler alive somewhere: this process, or the leader's sync job
        still on time in the shared job store. Never raises: each fact that cannot be learnt says why."""
        facts: dict[str, Any] = {"role": "poller" if self.leading else "standby"}
        try:
            self.engine.store.ping()
            facts["database"] = "ok"
        except StoreError as exc:
            facts["database"] = f"unreachable: {exc.message}"
        if self.leading:
            facts["scheduler"] = "ok"
        elif facts["database"] != "ok":
            # the job store is in the state database: no poller anywhere can work without it
            facts["scheduler"] = "no poller is running: the state database is unreachable"
        else:
            try:
                job = self.poller.scheduler.get_job("tc:sync") if self.poller.scheduler is not None else None
            except SQLAlchemyError as exc:
                facts["scheduler"] = f"unknown: the job store is unreachable: {describe_db_error(exc)}"
            else:
                due = getattr(job, "next_run_time", None)
                late = due is None or datetime.now(UTC) - due > LEADER_STALE
                facts["scheduler"] = "no poller is running" if late else "ok"
        if self.config.scheduler.backend == "procrastinate" and facts["database"] == "ok":
            try:
                workers = self.queue().workers
            except SQLAlchemyError as exc:
                facts["workers"] = f"unknown: {describe_db_error(exc)}"
            else:
                facts["workers"] = workers if workers else "no trackcheck worker is running: nothing polls"
        # with procrastinate, ``workers`` is how many are alive, or (a string) why none is known to be
        facts["ok"] = (
            facts["database"] == "ok" and facts["scheduler"] == "ok" and not isinstance(facts.get("workers"), str)
        )
        return facts


def open_access_warning(config: ServiceConfig) -> str | None:
    """What the log and every dashboard page say when no token is configured (None when one is)."""
    if config.authenticated:
        return None
    host = f"[{config.host}]" if ":" in config.host else config.host
    return (
        f"No API token is configured: anyone who can reach {host}:{config.port} is an admin. "
        "Set [[tokens]] or TRACKCHECK_API_TOKEN."
    )


def warn_if_open(config: ServiceConfig) -> None:
    message = open_access_warning(config)
    if message is not None:
        _warn_once(message)


@functools.cache
def _warn_once(message: str) -> None:
    """Log ``message`` once per process: gunicorn's master warns before it forks, so its workers do not."""
    log.warning(message)


def load_plan_folder(engine: Engine, folder: Path | None) -> list[str]:
    """Store every plan file of ``folder`` as a version (unchanged files add none); a bad file is reported
    and skipped so one typo does not keep the service down."""
    loaded: list[str] = []
    if folder is None:
        return loaded
    if not folder.is_dir():
        raise PlanError("the plans folder does not exist", field=str(folder))
    for path in sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")]):
        try:
            _, plan = store_plan(
                engine, path.read_text(encoding="utf-8"), origin=str(path), base_dir=str(path.resolve().parent)
            )
        except PlanError as exc:
            log.error("skipping plan file %s: %s", path, exc)
            continue
        loaded.append(plan.name)
    log.info("loaded %d plan(s) from %s: %s", len(loaded), folder, ", ".join(loaded) or "none")
    return loaded
