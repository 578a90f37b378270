"""The start-a-run form: pick a plan, fill in its parameters (one field each), start the run. The form is
validated like the API validates JSON, and errors are shown inline, next to the field they concern.
``read_run_input`` and ``show_refusal`` serve the schedule editor (``schedules``) too."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

from flask import redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue

from trackcheck.errors import ParamError, PlanError, TrackcheckError
from trackcheck.foreground import overrides_from
from trackcheck.plan.masking import mask_url_passwords
from trackcheck.plan.model import Plan
from trackcheck.service.app import current_service
from trackcheck.service.dashboard.blueprint import bp
from trackcheck.service.validation import InputError, parse_json, text_problem
from trackcheck.store.models import PlanVersion

log = logging.getLogger("trackcheck.dashboard")


@dataclass
class FormState:
    """What the start-a-run form shows: the chosen plan, the values typed, and errors per field."""

    plan_name: str = ""
    plan: Plan | None = None
    values: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    general: str | None = None


def plan_of(name: str, state: FormState) -> tuple[PlanVersion, Plan] | None:
    """The latest version of plan ``name`` and the plan itself; None (with the reason on ``state``) if there
    is none or it does not load any more (e.g. a ``${ENV}`` it needs is not set)."""
    engine = current_service().engine
    version = engine.store.latest_plan(name) if name else None
    if version is None:
        if name:
            state.errors["plan"] = f"There is no plan named {name!r}."
        return None
    try:
        return version, engine.plan(version.id)
    except TrackcheckError as exc:
        state.errors["plan"] = f"This plan does not load: {mask_url_passwords(str(exc))}"
        return None


@bp.route("/runs/new", methods=["GET", "POST"])
def new_run() -> ResponseReturnValue:
    """Pick a plan, fill in its parameters (one field each), start the run and land on its page."""
    source = request.form if request.method == "POST" else request.args
    state = FormState(plan_name=source.get("plan", "").strip())
    chosen = plan_of(state.plan_name, state)
    if chosen is not None:
        state.plan = chosen[1]
    if request.method == "POST" and chosen is not None:
        state.values = {k: v for k, v in request.form.items() if k != "plan"}
        run_id = _submit(chosen[0], chosen[1], state)
        if run_id is not None:
            about = {"run_id": run_id, "plan": chosen[1].name}
            log.info("run %s of plan %s started from the dashboard", run_id, chosen[1].name, extra=about)
            return redirect(url_for("dashboard.run_page", run_id=run_id), code=303)
    elif request.method == "POST" and not state.plan_name:
        state.errors["plan"] = "Choose a plan."
    plans = current_service().engine.store.latest_plans()
    status = 422 if state.errors or state.general else 200
    return render_template("dashboard/run_new.html", state=state, plans=plans), status


@dataclass
class RunInput:
    """A run request as a form gave it, parsed: parameters, expected events (None: the plan's), and the
    ``interval``/``timeout`` given, in seconds (``overrides_from``; absent: the plan's)."""

    params: dict[str, Any]
    expect: list[dict[str, Any]] | None
    overrides: dict[str, float]


def read_run_input(plan: Plan, state: FormState) -> RunInput | None:
    """The parameters, expected events, interval and timeout typed in a form (the start-a-run form, the
    schedule editor), checked as the API checks JSON; None with the errors on ``state`` by field."""
    params: dict[str, Any] = {}
    for name in plan.params:
        raw = state.values.get(f"param:{name}", "").strip()
        problem = text_problem(raw)
        if problem is not None:
            state.errors[f"param:{name}"] = f"This value {problem}."
        elif raw != "":
            params[name] = raw
    overrides: dict[str, float] = {}
    limits = current_service().engine.setup.limits
    for name in ("interval", "timeout"):
        raw = state.values.get(name, "").strip()
        if raw:
            try:  # the same rules as the API and `trackcheck run --interval/--timeout`; each error on its field
                overrides |= overrides_from(**{name: raw}, limits=limits)
            except PlanError as exc:
                state.errors[name] = exc.message
    expect: list[dict[str, Any]] | None = None
    raw_expect = state.values.get("expect", "").strip()
    if raw_expect:
        try:
            parsed = parse_json(raw_expect, "expect")
        except InputError as exc:
            state.errors["expect"] = str(exc)
        except json.JSONDecodeError as exc:
            state.errors["expect"] = f"not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        except ValueError as exc:  # NaN, Infinity, an integer of thousands of digits
            state.errors["expect"] = f"not valid JSON: {exc}"
        else:
            if isinstance(parsed, list):
                expect = parsed
            else:
                state.errors["expect"] = "write a JSON array of event objects"
    if state.errors:
        return None
    return RunInput(params, expect, overrides)


def show_refusal(exc: TrackcheckError, plan: Plan, state: FormState) -> None:
    """A ParamError or PlanError of a submit or a save, on the field it names (masked); else on top."""
    target = exc.context.get("parameter") or exc.context.get("field")
    field_name = f"param:{target}" if target in plan.params else target if target in FIELDS else None
    if field_name is not None:
        state.errors[field_name] = mask_url_passwords(exc.message)
    else:
        state.general = mask_url_passwords(str(exc))


#: the form fields besides the parameters that an error can name
FIELDS = ("expect", "interval", "timeout", "cron")


def _submit(version: PlanVersion, plan: Plan, state: FormState) -> str | None:
    """Validate the form like the API validates JSON and submit; errors land on ``state`` by field."""
    given = read_run_input(plan, state)
    if given is None:
        return None
    engine = current_service().engine
    try:
        return engine.submit(version.id, given.params, expect=given.expect, overrides=given.overrides or None)
    except (ParamError, PlanError) as exc:
        show_refusal(exc, plan, state)
    except TrackcheckError as exc:
        state.general = mask_url_passwords(str(exc))
    return None
