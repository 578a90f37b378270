"""The start-a-run form: pick a plan, fill in its parameters (one field each), start the run. The form is
validated like the API validates JSON, and errors are shown inline, next to the field they concern."""

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


def _plan_of(name: str, state: FormState) -> tuple[PlanVersion, Plan] | None:
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
    chosen = _plan_of(state.plan_name, state)
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


def _submit(version: PlanVersion, plan: Plan, state: FormState) -> str | None:
    """Validate the form like the API validates JSON and submit; errors land on ``state`` by field."""
    params: dict[str, Any] = {}
    for name in plan.params:
        raw = state.values.get(f"param:{name}", "").strip()
        problem = text_problem(raw)
        if problem is not None:
            state.errors[f"param:{name}"] = f"This value {problem}."
        elif raw != "":
            params[name] = raw
    overrides: dict[str, float] = {}
    for name in ("interval", "timeout"):
        raw = state.values.get(name, "").strip()
        if raw:
            limits = current_service().engine.setup.limits
            try:  # the same rules as the API and `trackcheck run --interval/--timeout`
                given = overrides_from(interval=raw, limits=limits) if name == "interval" else None
                overrides |= given if given is not None else overrides_from(timeout=raw, limits=limits)
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
    try:
        return current_service().engine.submit(version.id, params, expect=expect, overrides=overrides or None)
    except ParamError as exc:
        target = exc.context.get("parameter")
        field_name = f"param:{target}" if target in plan.params else "expect" if target == "expect" else None
        if field_name is not None:
            state.errors[field_name] = mask_url_passwords(exc.message)
        else:
            state.general = mask_url_passwords(str(exc))
    except TrackcheckError as exc:
        state.general = mask_url_passwords(str(exc))
    return None
