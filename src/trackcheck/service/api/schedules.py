"""Schedules: cron-triggered runs of a plan, listed with their next and last run."""

from __future__ import annotations

from typing import Any

from flask import Response, jsonify
from flask_openapi3 import Tag

from trackcheck.service.api.blueprint import PREFIX, answers, bp, iso, log
from trackcheck.service.api.errors import fail
from trackcheck.service.api.models import Schedule as ScheduleDocument
from trackcheck.service.api.models import ScheduleList, SchedulePath, ScheduleRequest
from trackcheck.service.api.plans import latest_plan
from trackcheck.service.app import current_service
from trackcheck.service.schedules import add_schedule, delete_schedule, next_run_time
from trackcheck.store.models import Schedule

TAGS = [Tag(name="schedules", description="Cron-triggered runs of a plan")]


def _schedule_document(schedule: Schedule) -> dict[str, Any]:
    return {
        "id": schedule.id,
        "plan": schedule.plan_name,
        "cron": schedule.cron,
        "params": schedule.params,
        "created_at": iso(schedule.created_at),
        "next_run_time": next_run_time(current_service().poller, schedule.id),
        "last_run_id": schedule.last_run_id,
        "last_error": schedule.last_error,
    }


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
    name, cron, params = body.plan, body.cron, body.params or {}
    latest_plan(name)
    schedule = add_schedule(current_service().poller, name, cron, params)
    log.info("schedule %s (%s) of plan %s created through the API", schedule.id, cron, name)
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


@bp.delete("/schedules/<schedule_id>", tags=TAGS, summary="Delete a schedule", responses=answers({204: None}, 404))
def remove_schedule(path: SchedulePath) -> Any:
    schedule_id = path.schedule_id
    if not delete_schedule(current_service().poller, schedule_id):
        fail(404, "not_found", f"no schedule {schedule_id!r}")
    return Response(status=204)
