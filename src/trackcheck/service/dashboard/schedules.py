"""The schedules page and its editor: create, edit, pause, resume and delete recurring runs, each with the
run request it submits (parameters, expected events, interval, timeout).

Saving goes through ``service.schedules`` as the API does, so a schedule that could only fail when it fires
(a wrong parameter, an expected event without the key, an interval under the deployment's floor) is refused
here, with the error next to its field. Changing a schedule needs the admin role, as over the API.
"""

from __future__ import annotations

import json
from typing import Any

from flask import abort, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue

from trackcheck.errors import ParamError, PlanError, TrackcheckError
from trackcheck.plan.masking import mask_url_passwords
from trackcheck.plan.model import Plan
from trackcheck.service.app import current_service
from trackcheck.service.dashboard.blueprint import bp
from trackcheck.service.dashboard.formatting import params_text
from trackcheck.service.dashboard.forms import FormState, plan_of, read_run_input, show_refusal
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


@bp.get("/schedules")
def schedules() -> ResponseReturnValue:
    service = current_service()
    rows = [
        {
            "schedule": schedule,
            "params": params_text(schedule.params),
            "options": _options_text(schedule),
            "next": next_run_time(service.poller, schedule.id),
            "error": mask_url_passwords(schedule.last_error or ""),
        }
        for schedule in service.engine.store.schedules()
    ]
    return render_template("dashboard/schedules.html", rows=rows)


@bp.route("/schedules/new", methods=["GET", "POST"])
def new_schedule() -> ResponseReturnValue:
    return _editor(None)


@bp.route("/schedules/<schedule_id>/edit", methods=["GET", "POST"])
def edit_schedule(schedule_id: str) -> ResponseReturnValue:
    schedule = current_service().engine.store.schedule(schedule_id)
    if schedule is None:
        abort(404, f"There is no schedule {schedule_id!r}.")
    return _editor(schedule)


@bp.post("/schedules/<schedule_id>/pause")
def pause(schedule_id: str) -> ResponseReturnValue:
    """Pause (``paused=1``) or resume (``paused=0``) a schedule; back to the list."""
    if pause_schedule(current_service().poller, schedule_id, request.form.get("paused") == "1") is None:
        abort(404, f"There is no schedule {schedule_id!r}.")
    return redirect(url_for("dashboard.schedules"), code=303)


@bp.post("/schedules/<schedule_id>/delete")
def remove(schedule_id: str) -> ResponseReturnValue:
    if not delete_schedule(current_service().poller, schedule_id):
        abort(404, f"There is no schedule {schedule_id!r}.")
    return redirect(url_for("dashboard.schedules"), code=303)


def _editor(schedule: Schedule | None) -> ResponseReturnValue:
    """The form for a new schedule (``schedule`` None) or an existing one: choose the plan (a GET that shows
    its parameters), then cron, parameters and options; saved and back to the list, or shown again with
    each error beside its field (422)."""
    source = request.form if request.method == "POST" else request.args
    name = source.get("plan", "").strip() or (schedule.plan_name if schedule is not None else "")
    state = FormState(plan_name=name)
    chosen = plan_of(name, state)
    if chosen is not None:
        state.plan = chosen[1]
    if request.method == "POST":
        state.values = {k: v for k, v in request.form.items() if k != "plan"}
        if chosen is None and not name:
            state.errors["plan"] = "Choose a plan."
        elif chosen is not None and _save(schedule, chosen[1], state):
            return redirect(url_for("dashboard.schedules"), code=303)
    elif schedule is not None:
        state.values = _values_of(schedule)
    plans = current_service().engine.store.latest_plans()
    status = 422 if state.errors or state.general else 200
    return render_template("dashboard/schedule_form.html", state=state, plans=plans, schedule=schedule), status


def _save(schedule: Schedule | None, plan: Plan, state: FormState) -> bool:
    cron = state.values.get("cron", "").strip()
    if not cron:
        state.errors["cron"] = "Write a cron expression, e.g. 10 2 * * * for 02:10 UTC every day."
    given = read_run_input(plan, state)
    if given is None or state.errors:
        return False
    poller = current_service().poller
    interval, timeout = given.overrides.get("interval"), given.overrides.get("timeout")
    spec = ScheduleSpec(
        plan.name, cron, given.params, given.expect, interval, timeout, state.values.get("paused") == "1"
    )
    try:
        if schedule is None:
            add_schedule(poller, spec)
        elif replace_schedule(poller, schedule.id, spec) is None:
            state.general = "This schedule was deleted meanwhile."
            return False
    except (ParamError, PlanError) as exc:
        show_refusal(exc, plan, state)
        return False
    except TrackcheckError as exc:
        state.general = mask_url_passwords(str(exc))
        return False
    return True


def _values_of(schedule: Schedule) -> dict[str, str]:
    """The form's fields as the schedule has them, to edit."""
    values = {f"param:{name}": _typed(value) for name, value in schedule.params.items()}
    values["cron"] = schedule.cron
    values |= durations(schedule)
    if schedule.expect is not None:
        values["expect"] = json.dumps(schedule.expect, indent=1, ensure_ascii=False)
    if schedule.paused:
        values["paused"] = "1"
    return values


def _typed(value: Any) -> str:
    """A parameter's value as typed in its field (the form sends text; the plan's type reads it back)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _options_text(schedule: Schedule) -> str:
    """What the schedule's runs differ in from the plan's defaults, in a few words."""
    parts = [f"{name} {text}" for name, text in durations(schedule).items()]
    if schedule.expect is not None:
        parts.append(f"{len(schedule.expect)} expected event{'s' if len(schedule.expect) != 1 else ''}")
    return ", ".join(parts)
