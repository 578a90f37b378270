"""Runs: accepting one or a batch (202 at once: the poller picks them up), listing, reading a run's polls
and records, cancelling and rerunning."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from flask import jsonify, request

from trackcheck.engine.core import RunRequest
from trackcheck.engine.result import build_result
from trackcheck.errors import PlanError
from trackcheck.foreground import overrides_from
from trackcheck.service.api.blueprint import PREFIX, bp, iso, log
from trackcheck.service.api.errors import ApiError, fail
from trackcheck.service.api.parsing import expect_field, int_arg, json_body, object_field, string_field
from trackcheck.service.api.plans import latest_plan
from trackcheck.service.app import current_service
from trackcheck.states import RunStatus
from trackcheck.store.models import Run, RunStage

RUN_STATUSES = tuple(RunStatus)
DEFAULT_LIMIT, MAX_LIMIT = 50, 500
RUN_KEYS = ("plan", "params", "expect", "interval", "timeout")
BATCH_KEYS = ("plan", "runs")
BATCH_RUN_KEYS = ("params", "expect", "interval", "timeout")
#: runs per ``POST /api/runs/batch``: one transaction of a few seconds at most, and within max_body_bytes
MAX_BATCH = 10_000
#: a duration is a number and a unit: anything longer is not one (and is not echoed back whole)
MAX_DURATION_TEXT = 40


def run_document(run: Run, stages: list[RunStage]) -> dict[str, Any]:
    """``trackcheck run --json`` (``Engine.result``) plus the webhook notification state (None if none)."""
    return build_result(run, stages).to_dict() | {"notify": run.notify}


def _run_summary(run: Run, stages: list[RunStage]) -> dict[str, Any]:
    return {
        "id": run.id,
        "plan": run.plan_name,
        "status": run.status,
        "created_at": iso(run.created_at),
        "finished_at": iso(run.finished_at),
        "stages": [{"name": stage.name, "status": stage.status} for stage in stages],
    }


def _about(run_id: str, plan: str) -> dict[str, str]:
    """The fields that make a log line about a run (``trackcheck.logs``): its id and its plan's name."""
    return {"run_id": run_id, "plan": plan}


def _accepted(run_id: str) -> Any:
    response = jsonify({"id": run_id, "status": "processing"})
    response.status_code = 202
    response.headers["Location"] = f"{PREFIX}/runs/{run_id}"
    return response


@bp.post("/runs")
def submit_run() -> Any:
    """Validate and store a run; the poller does the rest in the background."""
    body = json_body(RUN_KEYS)
    name = string_field(body, "plan")
    params, expect = object_field(body, "params"), expect_field(body)
    overrides = _overrides(body)
    version = latest_plan(name)
    run_id = current_service().engine.submit(version.id, params, expect, overrides)
    log.info("run %s of plan %s (version %d) accepted", run_id, name, version.version, extra=_about(run_id, name))
    return _accepted(run_id)


@bp.post("/runs/batch")
def submit_batch() -> Any:
    """Validate and store many runs of one plan at once, all or nothing; an error names the run's index."""
    body = json_body(BATCH_KEYS)
    name = string_field(body, "plan")
    items = body.get("runs")
    if not isinstance(items, list) or not items:
        fail(400, "bad_request", f"'runs' is required and must be a list of 1 to {MAX_BATCH} run objects")
    if len(items) > MAX_BATCH:
        fail(400, "bad_request", f"'runs' holds {len(items)} runs; at most {MAX_BATCH} are accepted per request")
    requests = [_batch_run(index, item) for index, item in enumerate(items)]
    version = latest_plan(name)
    ids = current_service().engine.submit_many(version.id, requests)
    log.info("%d runs of plan %s (version %d) accepted", len(ids), name, version.version, extra={"plan": name})
    response = jsonify({"ids": ids, "status": "processing"})
    response.status_code = 202
    return response


def _batch_run(index: int, item: Any) -> RunRequest:
    """``runs[index]`` checked as ``POST /api/runs`` checks a body."""
    if not isinstance(item, dict):
        fail(400, "invalid_params", f"runs[{index}] must be an object with the keys {', '.join(BATCH_RUN_KEYS)}")
    with _naming(index):
        unknown = sorted(set(item) - set(BATCH_RUN_KEYS))
        if unknown:
            fail(400, "bad_request", f"unknown key {unknown[0]!r} (allowed: {', '.join(BATCH_RUN_KEYS)})")
        return RunRequest(object_field(item, "params"), expect_field(item), _overrides(item))


@contextmanager
def _naming(index: int) -> Iterator[None]:
    """Errors about one run of a batch, their detail prefixed with ``runs[index]``."""
    place = f"runs[{index}]"
    try:
        yield
    except ApiError as exc:
        detail = str(exc.detail)
        joined = f"{place}.{detail}" if detail.startswith(("params", "expect")) else f"{place}: {detail}"
        raise ApiError(exc.status, exc.error, joined) from None
    except PlanError as exc:
        field = exc.context.get("field")
        raise PlanError(f"{place}.{field}: {exc.message}" if field else f"{place}: {exc}") from None


def _overrides(body: dict[str, Any]) -> dict[str, float]:
    """``interval``/``timeout`` like ``trackcheck run --interval/--timeout``: every stage of this run polls
    that often and times out then, within the deployment's limits (``min_interval``, 30 days); anything
    else is a PlanError (400) naming the key."""
    limits = current_service().engine.setup.limits
    for key in ("interval", "timeout"):
        value = body.get(key)
        if isinstance(value, str) and len(value) > MAX_DURATION_TEXT:
            fail(400, "invalid_plan", f"field {key!r}: not a duration (e.g. 500ms, 58s, 5m, 2h, 1d)")
    return overrides_from(body.get("interval"), body.get("timeout"), limits=limits)


@bp.get("/runs")
def list_runs() -> Any:
    status = request.args.get("status") or None
    if status is not None and status not in RUN_STATUSES:
        fail(400, "bad_request", f"unknown status {status!r} (one of: {', '.join(RUN_STATUSES)})")
    limit = int_arg("limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    offset = int_arg("offset", 0, 0)
    store = current_service().engine.store
    runs, total = store.list_runs(request.args.get("plan") or None, status, limit, offset)
    stages = store.stages_of([run.id for run in runs])
    summaries = [_run_summary(run, stages[run.id]) for run in runs]
    return jsonify({"runs": summaries, "total": total, "limit": limit, "offset": offset})


@bp.get("/runs/<run_id>")
def get_run(run_id: str) -> Any:
    store = current_service().engine.store
    return jsonify(run_document(store.run(run_id), store.run_stages(run_id)))


@bp.get("/runs/<run_id>/polls")
def run_polls(run_id: str) -> Any:
    """Every poll of the run, oldest first, with the stage it polled."""
    store = current_service().engine.store
    store.run(run_id)  # 404 for an unknown run, not an empty list
    names = {stage.idx: stage.name for stage in store.run_stages(run_id)}
    polls = [
        {
            "stage": names.get(poll.stage_idx),
            "polled_at": iso(poll.polled_at),
            "outcome": poll.outcome,
            "found": poll.found,
            "expected": poll.expected,
            "duration_ms": round(poll.duration_ms, 3),
            "error": poll.error,
        }
        for poll in store.polls(run_id)
    ]
    return jsonify({"run_id": run_id, "polls": polls})


@bp.get("/runs/<run_id>/records/<stage>")
def run_records(run_id: str, stage: str) -> Any:
    """What the stage last read for this run (capped at the plan's snapshot_limit: see ``truncated``)."""
    store = current_service().engine.store
    store.run(run_id)
    stages = store.run_stages(run_id)
    idx = next((s.idx for s in stages if s.name == stage), None)
    if idx is None:
        names = ", ".join(s.name for s in stages)
        fail(404, "not_found", f"run {run_id} has no stage {stage!r} (stages: {names})")
    snapshot = store.snapshots_for([run_id], idx).get(run_id)
    return jsonify(
        {
            "run_id": run_id,
            "stage": stage,
            "records": snapshot.records if snapshot else [],
            "total": snapshot.total if snapshot else 0,
            "truncated": bool(snapshot.truncated) if snapshot else False,
            "taken_at": iso(snapshot.taken_at) if snapshot else None,
        }
    )


@bp.post("/runs/<run_id>/cancel")
def cancel_run(run_id: str) -> Any:
    engine = current_service().engine
    if not engine.cancel(run_id):
        fail(409, "conflict", f"run {run_id} has already ended ({engine.store.run(run_id).status})")
    log.info("run %s cancelled through the API", run_id, extra={"run_id": run_id})
    return jsonify(run_document(engine.store.run(run_id), engine.store.run_stages(run_id)))


@bp.post("/runs/<run_id>/rerun")
def rerun(run_id: str) -> Any:
    """A new run of the same plan *version* with the same parameters, events and overrides."""
    engine = current_service().engine
    run = engine.store.run(run_id)
    if engine.store.latest_plan(run.plan_name) is None:
        fail(409, "conflict", f"plan {run.plan_name!r} was deleted; PUT it again to run it")
    new_id = engine.submit(run.plan_id, dict(run.params), list(run.expect), dict(run.overrides or {}))
    log.info("run %s accepted as a rerun of %s", new_id, run_id, extra=_about(new_id, run.plan_name))
    return _accepted(new_id)
