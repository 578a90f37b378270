"""Schedules: cron-triggered runs of a plan, each with the run request it submits, listed with their next and
last run; created, replaced (``PUT``), paused or resumed (``PATCH {"paused"}``) and deleted by admins."""

from __future__ import annotations

from typing import Any

from flask import Response, jsonify
from flask_openapi3 import Tag

from trackcheck.service.api.blueprint import PREFIX, answers, bp, iso, log
from trackcheck.service.api.errors import fail
from trackcheck.service.api.models import Schedule as ScheduleDocument
from trackcheck.service.api.models import ScheduleList, SchedulePath, SchedulePause, ScheduleRequest
from trackcheck.service.api.plans import latest_plan
from trackcheck.service.app import current_service
from trackcheck.service.schedules import (
    ScheduleSpec,
    add_schedule,
    delete_schedule,
    durations,
    next_run_time,
    pause_schedule,
    replace_schedule,
)
from trackcheck.store.models import Schedule

TAGS = [Tag(name="schedules", description="Cron-triggered runs of a plan")]


def _schedule_document(schedule: Schedule) -> dict[str, Any]:
    return {
        "id": schedule.id,
        "plan": schedule.plan_name,
        "cron": schedule.cron,
        "params": schedule.params,
        "expect": schedule.expect,
        "interval": durations(schedule).get("interval"),
        "timeout": durations(schedule).get("timeout"),
        "paused": bool(schedule.paused),
        "created_at": iso(schedule.created_at),
        "next_run_time": iso(next_run_time(current_service().poller, schedule.id)),
        "last_run_id": schedule.last_run_id,
        "last_error": schedule.last_error,
    }


def _spec(body: ScheduleRequest) -> ScheduleSpec:
    return ScheduleSpec(body.plan, body.cron, body.params or {}, body.expect, body.interval, body.timeout, body.paused)


@bp.get("/schedules", tags=TAGS, summary="Every schedule", responses=answers({200: ScheduleList}))
def list_schedules() -> Any:
    return jsonify({"schedules": [_schedule_document(s) for s in current_service().engine.store.schedules()]})


@bp.post(
    "/schedules",
    tags=TAGS,
    summary="Run a plan on a cron expression (UTC)",
    responses=answers({201: ScheduleDocument}, 404, 413, 415),
)
def create_schedule(body: ScheduleRequest) -> Any:
    """Everything a firing needs is checked now: the cron expression, the plan, the parameters, the expected
    events, the interval and timeout against the deployment's limits."""
    latest_plan(body.plan)
    schedule = add_schedule(current_service().poller, _spec(body))
    log.info("schedule %s (%s) of plan %s created through the API", schedule.id, body.cron, body.plan)
    response = jsonify(_schedule_document(schedule))
    response.status_code = 201
    response.headers["Location"] = f"{PREFIX}/schedules/{schedule.id}"
    return response


@bp.get("/schedules/<schedule_id>", tags=TAGS, summary="A schedule", responses=answers({200: ScheduleDocument}, 404))
def get_schedule(path: SchedulePath) -> Any:
    schedule_id = path.schedule_id
    schedule = current_service().engine.store.schedule(schedule_id)
    if schedule is None:
        fail(404, "not_found", f"no schedule {schedule_id!r}")
    return jsonify(_schedule_document(schedule))


@bp.put(
    "/schedules/<schedule_id>",
    tags=TAGS,
    summary="Replace a schedule (all of it), checked as a new one",
    responses=answers({200: ScheduleDocument}, 404, 413, 415),
)
def put_schedule(path: SchedulePath, body: ScheduleRequest) -> Any:
    latest_plan(body.plan)
    schedule = replace_schedule(current_service().poller, path.schedule_id, _spec(body))
    if schedule is None:
        fail(404, "not_found", f"no schedule {path.schedule_id!r}")
    log.info("schedule %s (%s) of plan %s replaced through the API", schedule.id, body.cron, body.plan)
    return jsonify(_schedule_document(schedule))


@bp.patch(
    "/schedules/<schedule_id>",
    tags=TAGS,
    summary="Pause or resume a schedule",
    responses=answers({200: ScheduleDocument}, 404, 413, 415),
)
def patch_schedule(path: SchedulePath, body: SchedulePause) -> Any:
    schedule = pause_schedule(current_service().poller, path.schedule_id, body.paused)
    if schedule is None:
        fail(404, "not_found", f"no schedule {path.schedule_id!r}")
    log.info("schedule %s %s through the API", schedule.id, "paused" if body.paused else "resumed")
    return jsonify(_schedule_document(schedule))


@bp.delete("/schedules/<schedule_id>", tags=TAGS, summary="Delete a schedule", responses=answers({204: None}, 404))
def remove_schedule(path: SchedulePath) -> Any:
    schedule_id = path.schedule_id
    if not delete_schedule(current_service().poller, schedule_id):
        fail(404, "not_found", f"no schedule {schedule_id!r}")
    return Response(status=204)
