"""The pages: the runs list, one run (with cancel and rerun), the plans, one plan. The runs
list and a running run also have fragment endpoints that htmx re-fetches; a fragment with nothing running
any more comes back without its polling trigger, which stops the polling."""

from __future__ import annotations

import logging

from flask import abort, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue

from trackcheck.errors import RunNotFound, TrackcheckError
from trackcheck.plan.masking import mask_url_passwords
from trackcheck.plan.model import Plan
from trackcheck.service.api import mask_plan_text
from trackcheck.service.app import current_service
from trackcheck.service.dashboard import plan_runs
from trackcheck.service.dashboard.blueprint import bp
from trackcheck.service.dashboard.context import RUN_STATUSES, run_context, runs_context
from trackcheck.sources import build_source
from trackcheck.sources.base import MASK
from trackcheck.store.models import PlanVersion

log = logging.getLogger("trackcheck.dashboard")


# -- runs ---------------------------------------------------------------------------------------------------
@bp.get("/")
def runs() -> ResponseReturnValue:
    """Every run, newest first, each with its stages as a pipeline; the table refreshes itself."""
    context = runs_context()
    plan_names = sorted({p.name for p in current_service().engine.store.latest_plans()} | {context["plan"]} - {""})
    return render_template("dashboard/runs.html", plan_names=plan_names, statuses=RUN_STATUSES, **context)


@bp.get("/fragments/runs")
def runs_fragment() -> ResponseReturnValue:
    return render_template("dashboard/_runs_table.html", **runs_context())


@bp.get("/runs/<run_id>")
def run_page(run_id: str) -> ResponseReturnValue:
    """One run: its header, the latency chart, every poll, the evidence and what each stage read."""
    return render_template("dashboard/run.html", **run_context(run_id))


@bp.get("/fragments/runs/<run_id>")
def run_fragment(run_id: str) -> ResponseReturnValue:
    return render_template("dashboard/_run_live.html", **run_context(run_id))


@bp.post("/runs/<run_id>/cancel")
def cancel_run(run_id: str) -> ResponseReturnValue:
    try:
        cancelled = current_service().engine.cancel(run_id)
    except RunNotFound:
        abort(404, f"There is no run {run_id!r}.")
    if cancelled:
        log.info("run %s cancelled from the dashboard", run_id, extra={"run_id": run_id})
    return redirect(url_for("dashboard.run_page", run_id=run_id), code=303)


@bp.post("/runs/<run_id>/rerun")
def rerun(run_id: str) -> ResponseReturnValue:
    """The same plan version, parameters, expected events and overrides again, as a new run."""
    engine = current_service().engine
    try:
        run = engine.store.run(run_id)
    except RunNotFound:
        abort(404, f"There is no run {run_id!r}.")
    if engine.store.latest_plan(run.plan_name) is None:
        message = f"Plan {run.plan_name!r} was deleted; store it again to run it."
        return render_template("dashboard/error.html", title="Could not start the run again", message=message), 409
    try:
        new_id = engine.submit(run.plan_id, dict(run.params), expect=list(run.expect), overrides=dict(run.overrides))
    except TrackcheckError as exc:
        message = mask_url_passwords(str(exc))
        return render_template("dashboard/error.html", title="Could not start the run again", message=message), 422
    about = {"run_id": new_id, "plan": run.plan_name}
    log.info("run %s started from the dashboard as a rerun of %s", new_id, run_id, extra=about)
    return redirect(url_for("dashboard.run_page", run_id=new_id), code=303)


# -- plans and schedules ------------------------------------------------------------------------------------
def masked_plan_text(version: PlanVersion) -> str:
    """Plan YAML fit to show, masked exactly as ``GET /api/plans/<name>`` masks it (URL passwords and values
    of secret-looking keys), and also every secret the plan's sources themselves declare (e.g. a header the
    key-name rule does not know). ``${ENV}`` references stay as written: they hold no secret. The plan is
    loaded as the engine loads it (its trust, its connections), so a connection's secrets are masked too."""
    text = version.text
    secrets: list[str] = []
    try:
        plan = current_service().engine.plan(version.id)
        for name, spec in plan.sources.items():
            secrets.extend(build_source(name, spec, plan=plan.name).secrets())
        if plan.notify is not None and plan.notify.secret:
            secrets.append(plan.notify.secret)
    except (TrackcheckError, ValueError, KeyError):
        pass  # an old version that no longer loads (missing ${ENV}, removed backend): the regex still masks
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return mask_plan_text(text)


@bp.get("/plans")
def plans() -> ResponseReturnValue:
    """The plans, each with since when it fails (and for which parameters) if its latest verdict did not pass."""
    engine = current_service().engine
    items = []
    for version in engine.store.latest_plans():
        try:
            plan: Plan | None = engine.plan(version.id)
        except TrackcheckError:
            plan = None
        items.append((version, plan))
    streaks = plan_runs.streaks(engine.store, [version.name for version, _ in items])
    failing = {name: plan_runs.failing_runs(streak) for name, streak in streaks.items()}
    return render_template("dashboard/plans.html", items=items, streaks=streaks, failing=failing)


@bp.get("/plans/<name>")
def plan_page(name: str) -> ResponseReturnValue:
    """The plan's latest runs by stage, whether it is failing and since when, its pass rate and stage
    durations over its last runs; the latest version's YAML (masked), what it declares, and its history;
    ``?version=N`` shows an older one."""
    engine = current_service().engine
    history = engine.store.plan_history(name)
    if not history:
        abort(404, f"There is no plan named {name!r}.")
    wanted = request.args.get("version", "")
    shown = next((v for v in history if str(v.version) == wanted), None) or history[0]
    try:
        plan: Plan | None = engine.plan(shown.id)
        problem = None
    except TrackcheckError as exc:
        plan, problem = None, mask_url_passwords(str(exc))
    return render_template(
        "dashboard/plan.html",
        name=name,
        shown=shown,
        latest=history[0],
        history=history,
        plan=plan,
        problem=problem,
        text=masked_plan_text(shown),
        **plan_runs.plan_runs_context(engine.store, name),
    )
