"""Recurring runs of a plan on a cron expression (e.g. reconcile yesterday's counts at 02:10 every day).

A schedule is a row of ``tc_schedules`` (plan, cron, and the run request each firing submits: parameters,
expected events, interval and timeout, as JSON) and an APScheduler cron job ``schedule:<id>`` in the
persistent job store whose only argument is the id: no user data is pickled. A paused schedule's job stays,
paused (no next run time). Any
worker can add one (its scheduler is paused but writes to the shared store); the leader fires it.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from apscheduler.jobstores.base import JobLookupError
from sqlalchemy.exc import SQLAlchemyError

from trackcheck.engine.core import RunRequest
from trackcheck.errors import PlanError, StoreError, TrackcheckError
from trackcheck.foreground import overrides_from
from trackcheck.plan.cron import check_cron
from trackcheck.plan.durations import format_duration
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


@dataclass(frozen=True)
class ScheduleSpec:
    """A schedule as a client writes it (API body, dashboard form): the plan, when (five-field cron, UTC), and
    the run request each firing submits: ``params``, ``expect`` (None: the plan's), ``interval`` and
    ``timeout`` (a duration or seconds; None: the plan's)."""

    plan: str
    cron: str
    params: dict[str, Any] = field(default_factory=dict)
    expect: list[dict[str, Any]] | None = None
    interval: str | float | None = None
    timeout: str | float | None = None
    paused: bool = False


def _checked(poller: Poller, spec: ScheduleSpec) -> tuple[CronTrigger, dict[str, float] | None]:
    """The trigger and the runs' overrides once everything a firing would need is valid: PlanError naming
    ``cron``, the plan, ``interval`` or ``timeout``, ParamError naming a parameter or ``expect``. A schedule
    that could only fail when it fires is refused when it is saved."""
    engine = poller.engine
    trigger = parse_cron(spec.cron)
    version = engine.store.latest_plan(spec.plan)
    if version is None:
        raise PlanError("no such plan", plan=spec.plan)
    engine.check(version.id, RunRequest(spec.params, spec.expect))
    overrides = overrides_from(spec.interval, spec.timeout, limits=engine.setup.limits)
    return trigger, overrides or None


def add_schedule(poller: Poller, spec: ScheduleSpec) -> Schedule:
    """Validate and store a schedule and its job: each firing submits a run of the plan's latest version, as
    a run request with ``spec``'s parameters and options would. PlanError/ParamError on bad input, nothing
    stored then."""
    trigger, overrides = _checked(poller, spec)
    schedule = Schedule(
        id=uuid.uuid4().hex,
        plan_name=spec.plan,
        cron=spec.cron,
        params=dict(spec.params),
        expect=spec.expect,
        overrides=overrides,
        paused=spec.paused,
        created_at=utcnow(),
    )
    poller.engine.store.add_schedule(schedule)
    try:
        _put_job(poller, schedule, trigger)
    except Exception:
        poller.engine.store.delete_schedule(schedule.id)
        raise
    return schedule


def replace_schedule(poller: Poller, schedule_id: str, spec: ScheduleSpec) -> Schedule | None:
    """Edit a schedule: all of it, validated as ``add_schedule`` does (nothing changes on bad input); its job
    follows the new cron and pause. None when there is no such schedule."""
    trigger, overrides = _checked(poller, spec)
    store = poller.engine.store
    schedule = store.schedule(schedule_id)
    if schedule is None:
        return None
    schedule.plan_name, schedule.cron, schedule.params = spec.plan, spec.cron, dict(spec.params)
    schedule.expect, schedule.overrides, schedule.paused = spec.expect, overrides, spec.paused
    if not store.replace_schedule(schedule):
        return None
    _put_job(poller, schedule, trigger)
    return schedule


def pause_schedule(poller: Poller, schedule_id: str, paused: bool) -> Schedule | None:
    """Stop firing a schedule (``paused``) or start again, without touching the rest; None if there is none."""
    schedule = poller.engine.store.schedule(schedule_id)
    if schedule is None:
        return None
    schedule.paused = paused
    if not poller.engine.store.replace_schedule(schedule):
        return None
    _put_job(poller, schedule, parse_cron(schedule.cron))
    return schedule


def _put_job(poller: Poller, schedule: Schedule, trigger: CronTrigger) -> None:
    """The schedule's job in the shared job store, with its trigger, paused (no next run time) or not."""
    assert poller.scheduler is not None
    job_id = f"schedule:{schedule.id}"
    with _job_store():
        poller.scheduler.add_job(FIRE, trigger, args=[schedule.id], id=job_id, replace_existing=True, executor=CONTROL)
        if schedule.paused:
            poller.scheduler.pause_job(job_id)


def next_run_time(poller: Poller, schedule_id: str) -> datetime | None:
    """When the schedule fires next; None when it is paused or has no job."""
    with _job_store():
        job = poller.scheduler.get_job(f"schedule:{schedule_id}") if poller.scheduler is not None else None
    when: datetime | None = getattr(job, "next_run_time", None)
    return when


def durations(schedule: Schedule) -> dict[str, str]:
    """The runs' ``interval`` and ``timeout`` that the schedule sets, as a client writes them (``2s``, ``5m``)."""
    return {name: format_duration(timedelta(seconds=s)) for name, s in (schedule.overrides or {}).items()}


def delete_schedule(poller: Poller, schedule_id: str) -> bool:
    if poller.scheduler is not None:
        with suppress(JobLookupError), _job_store():
            poller.scheduler.remove_job(f"schedule:{schedule_id}")
    return poller.engine.store.delete_schedule(schedule_id)


def fire(schedule_id: str) -> None:
    """Job entry point: start a run of the schedule's plan (its latest version) with its parameters."""
    engine = jobs.bound()
    schedule = engine.store.schedule(schedule_id)
    if schedule is None or schedule.paused:
        return
    version = engine.store.latest_plan(schedule.plan_name)
    try:
        if version is None:
            raise PlanError("the plan of this schedule was deleted", plan=schedule.plan_name)
        run_id = engine.submit(version.id, dict(schedule.params), schedule.expect, schedule.overrides)
    except TrackcheckError as exc:
        log.error("schedule %s could not start a run: %s", schedule_id, exc)
        engine.store.schedule_fired(schedule_id, None, str(exc))
        return
    about = {"run_id": run_id, "plan": schedule.plan_name}
    log.info("schedule %s started run %s of plan %s", schedule_id, run_id, schedule.plan_name, extra=about)
    engine.store.schedule_fired(schedule_id, run_id, None)
