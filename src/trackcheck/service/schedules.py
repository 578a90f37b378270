"""Recurring runs of a plan on a cron expression (e.g. reconcile yesterday's counts at 02:10 every day).

A schedule is a row of ``tc_schedules`` (plan, cron, parameters as JSON) and an APScheduler cron job
``schedule:<id>`` in the persistent job store whose only argument is the id: no user data is pickled. Any
worker can add one (its scheduler is paused but writes to the shared store); the leader fires it.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING, Any

from apscheduler.jobstores.base import JobLookupError
from sqlalchemy.exc import SQLAlchemyError

from trackcheck.errors import PlanError, StoreError, TrackcheckError
from trackcheck.loader import resolve_params
from trackcheck.plan.cron import check_cron
from trackcheck.scheduling import jobs
from trackcheck.scheduling.config import CONTROL
from trackcheck.scheduling.triggers import cron_trigger
from trackcheck.store.database import describe_db_error
from trackcheck.store.models import Schedule
from trackcheck.store.repository import utcnow

if TYPE_CHECKING:
    from apscheduler.triggers.cron import CronTrigger

    from trackcheck.scheduling.poller import Poller

log = logging.getLogger("trackcheck.schedules")
FIRE = "trackcheck.service.schedules:fire"
#: ``tc_schedules.cron``'s width
MAX_CRON = 200


@contextmanager
def _job_store() -> Iterator[None]:
    """The job store lives in the state database: its driver errors become StoreError (503), as the store's do."""
    try:
        yield
    except SQLAlchemyError as exc:
        raise StoreError(f"state database error (job store): {describe_db_error(exc)}") from exc


def parse_cron(expression: str) -> CronTrigger:
    """A five-field crontab expression in UTC; PlanError naming ``cron`` if it is not one."""
    if len(expression) > MAX_CRON:
        raise PlanError(f"longer than {MAX_CRON} characters: not a cron expression", field="cron")
    try:
        check_cron(expression)  # the same rules as a stage's cron: valid, and it fires every year
    except ValueError as exc:
        raise PlanError(f"{exc}; e.g. '10 2 * * *' for 02:10 UTC daily", field="cron") from None
    try:
        return cron_trigger(expression)
    except ValueError as exc:
        raise PlanError(f"not a cron expression ({exc}); e.g. '10 2 * * *' for 02:10 UTC daily", field="cron") from None


def add_schedule(poller: Poller, plan_name: str, cron: str, params: dict[str, Any]) -> Schedule:
    """Validate and store a schedule and its job; PlanError/ParamError on bad input, nothing stored then."""
    engine = poller.engine
    trigger = parse_cron(cron)
    version = engine.store.latest_plan(plan_name)
    if version is None:
        raise PlanError("no such plan", plan=plan_name)
    resolve_params(engine.plan(version.id), params)
    schedule = Schedule(id=uuid.uuid4().hex, plan_name=plan_name, cron=cron, params=dict(params), created_at=utcnow())
    engine.store.add_schedule(schedule)
    assert poller.scheduler is not None
    try:
        with _job_store():
            poller.scheduler.add_job(
                FIRE, trigger, args=[schedule.id], id=f"schedule:{schedule.id}", replace_existing=True, executor=CONTROL
            )
    except Exception:
        engine.store.delete_schedule(schedule.id)
        raise
    return schedule


def next_run_time(poller: Poller, schedule_id: str) -> str | None:
    with _job_store():
        job = poller.scheduler.get_job(f"schedule:{schedule_id}") if poller.scheduler is not None else None
    when = getattr(job, "next_run_time", None)
    return when.isoformat() if when is not None else None


def delete_schedule(poller: Poller, schedule_id: str) -> bool:
    if poller.scheduler is not None:
        with suppress(JobLookupError), _job_store():
            poller.scheduler.remove_job(f"schedule:{schedule_id}")
    return poller.engine.store.delete_schedule(schedule_id)


def fire(schedule_id: str) -> None:
    """Job entry point: start a run of the schedule's plan (its latest version) with its parameters."""
    engine = jobs.bound()
    schedule = engine.store.schedule(schedule_id)
    if schedule is None:
        return
    version = engine.store.latest_plan(schedule.plan_name)
    try:
        if version is None:
            raise PlanError("the plan of this schedule was deleted", plan=schedule.plan_name)
        run_id = engine.submit(version.id, dict(schedule.params))
    except TrackcheckError as exc:
        log.error("schedule %s could not start a run: %s", schedule_id, exc)
        engine.store.schedule_fired(schedule_id, None, str(exc))
        return
    about = {"run_id": run_id, "plan": schedule.plan_name}
    log.info("schedule %s started run %s of plan %s", schedule_id, run_id, schedule.plan_name, extra=about)
    engine.store.schedule_fired(schedule_id, run_id, None)
