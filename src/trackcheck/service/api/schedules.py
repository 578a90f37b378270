"""Schedules: cron-triggered runs of a plan, listed with their next and last run."""

from __future__ import annotations

from typing import Any

from flask import Response, jsonify

from trackcheck.service.api.blueprint import PREFIX, bp, iso, log
from trackcheck.service.api.errors import fail
from trackcheck.service.api.parsing import json_body, object_field, string_field
from trackcheck.service.api.plans import latest_plan
from trackcheck.service.app import current_service
from trackcheck.service.schedules import add_schedule, delete_schedule, next_run_time
from trackcheck.store.models import Schedule

SCHEDULE_KEYS = ("plan", "cron", "params")


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


@bp.get("/schedules")
def list_schedules() -> Any:
    return jsonify({"schedules": [_schedule_document(s) for s in current_service().engine.store.schedules()]})


@bp.post("/schedules")
def create_schedule() -> Any:
    body = json_body(SCHEDULE_KEYS)
    name, cron, params = string_field(body, "plan"), string_field(body, "cron"), object_field(body, "params")
    latest_plan(name)
    schedule = add_schedule(current_service().poller, name, cron, params)
    log.info("schedule %s (%s) of plan %s created through the API", schedule.id, cron, name)
    response = jsonify(_schedule_document(schedule))
    response.status_code = 201
    response.headers["Location"] = f"{PREFIX}/schedules/{schedule.id}"
    return response


@bp.get("/schedules/<schedule_id>")
def get_schedule(schedule_id: str) -> Any:
    schedule = current_service().engine.store.schedule(schedule_id)
    if schedule is None:
        fail(404, "not_found", f"no schedule {schedule_id!r}")
    return jsonify(_schedule_document(schedule))


@bp.delete("/schedules/<schedule_id>")
def remove_schedule(schedule_id: str) -> Any:
    if not delete_schedule(current_service().poller, schedule_id):
        fail(404, "not_found", f"no schedule {schedule_id!r}")
    return Response(status=204)
