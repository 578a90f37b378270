"""Runs: accepting one or a batch (202 at once: the poller picks them up), listing, reading a run's polls
and records, cancelling and rerunning."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from flask import jsonify
from flask_openapi3 import Tag

from trackcheck.engine.core import RunRequest as EngineRun
from trackcheck.engine.result import build_result
from trackcheck.errors import PlanError
from trackcheck.foreground import overrides_from
from trackcheck.service.api.blueprint import PREFIX, answers, bp, iso, log
from trackcheck.service.api.errors import fail
from trackcheck.service.api.models import (
    MAX_BATCH,
    BatchAccepted,
    BatchRun,
    BatchRunRequest,
    PollList,
    Records,
    RunAccepted,
    RunList,
    RunPath,
    RunRequest,
    RunResult,
    RunsQuery,
    StagePath,
)
from trackcheck.service.api.plans import latest_plan
from trackcheck.service.app import current_service
from trackcheck.store.models import Run, RunStage

TAGS = [Tag(name="runs", description="Start runs (one or a batch), follow them, cancel and rerun them")]


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


@bp.post(
    "/runs",
    tags=TAGS,
    summary="Start a run of a plan's latest version; answers at once, polling happens in the background",
    responses=answers({202: RunAccepted}, 404, 413, 415, 502),
)
def submit_run(body: RunRequest) -> Any:
    """Validate and store a run; the poller does the rest in the background (poll GET /api/runs/{run_id}
    until its status is not running)."""
    overrides = _overrides(body)
    version = latest_plan(body.plan)
    run_id = current_service().engine.submit(version.id, body.params or {}, body.expect, overrides)
    log.info(
        "run %s of plan %s (version %d) accepted", run_id, body.plan, version.version, extra=_about(run_id, body.plan)
    )
    return _accepted(run_id)


@bp.post(
    "/runs/batch",
    tags=TAGS,
    summary=f"Start up to {MAX_BATCH} runs of a plan's latest version at once, all or nothing",
    responses=answers({202: BatchAccepted}, 404, 413, 415, 502),
)
def submit_batch(body: BatchRunRequest) -> Any:
    """One transaction, answered at once; an error names the run (runs[3].params.test_id) and stores none.
    The body must fit max_body_bytes (1 MiB by default: about 10,000 runs of ~100 bytes each)."""
    requests = []
    for index, item in enumerate(body.runs):
        with _naming(index):
            requests.append(EngineRun(item.params or {}, item.expect, _overrides(item)))
    version = latest_plan(body.plan)
    ids = current_service().engine.submit_many(version.id, requests)
    log.info(
        "%d runs of plan %s (version %d) accepted", len(ids), body.plan, version.version, extra={"plan": body.plan}
    )
    response = jsonify({"ids": ids, "status": "processing"})
    response.status_code = 202
    return response


@contextmanager
def _naming(index: int) -> Iterator[None]:
    """Errors about one run of a batch, their detail prefixed with ``runs[index]``."""
    place = f"runs[{index}]"
    try:
        yield
    except PlanError as exc:
        field = exc.context.get("field")
        raise PlanError(f"{place}.{field}: {exc.message}" if field else f"{place}: {exc}") from None


def _overrides(run: BatchRun) -> dict[str, float]:
    """``interval``/``timeout`` like ``trackcheck run --interval/--timeout``: every stage of this run polls
    that often and times out then, within the deployment's limits (``min_interval``, 30 days); anything
    else is a PlanError (400) naming the key."""
    return overrides_from(run.interval, run.timeout, limits=current_service().engine.setup.limits)


@bp.get("/runs", tags=TAGS, summary="Runs, newest first", responses=answers({200: RunList}))
def list_runs(query: RunsQuery) -> Any:
    store = current_service().engine.store
    runs, total = store.list_runs(query.plan or None, query.status, query.limit, query.offset)
    stages = store.stages_of([run.id for run in runs])
    summaries = [_run_summary(run, stages[run.id]) for run in runs]
    return jsonify({"runs": summaries, "total": total, "limit": query.limit, "offset": query.offset})


@bp.get("/runs/<run_id>", tags=TAGS, summary="A run's result", responses=answers({200: RunResult}, 404))
def get_run(path: RunPath) -> Any:
    store = current_service().engine.store
    return jsonify(run_document(store.run(path.run_id), store.run_stages(path.run_id)))


@bp.get(
    "/runs/<run_id>/polls",
    tags=TAGS,
    summary="Every poll of a run, oldest first",
    responses=answers({200: PollList}, 404),
)
def run_polls(path: RunPath) -> Any:
    """Every poll of the run, oldest first, with the stage it polled."""
    run_id = path.run_id
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


@bp.get(
    "/runs/<run_id>/records/<stage>",
    tags=TAGS,
    summary="What a stage read for the run (its snapshot; empty before the first poll)",
    responses=answers({200: Records}, 404),
)
def run_records(path: StagePath) -> Any:
    """What the stage last read for this run (capped at the plan's snapshot_limit: see ``truncated``)."""
    run_id, stage = path.run_id, path.stage
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


@bp.post(
    "/runs/<run_id>/cancel",
    tags=TAGS,
    summary="Cancel a running run (what was verified is kept)",
    responses=answers({200: RunResult}, 404, 409),
)
def cancel_run(path: RunPath) -> Any:
    run_id = path.run_id
    engine = current_service().engine
    if not engine.cancel(run_id):
        fail(409, "conflict", f"run {run_id} has already ended ({engine.store.run(run_id).status})")
    log.info("run %s cancelled through the API", run_id, extra={"run_id": run_id})
    return jsonify(run_document(engine.store.run(run_id), engine.store.run_stages(run_id)))


@bp.post(
    "/runs/<run_id>/rerun",
    tags=TAGS,
    summary="A new run of the same plan version with the same params, expect and overrides",
    responses=answers({202: RunAccepted}, 404, 409, 502),
)
def rerun(path: RunPath) -> Any:
    """A new run of the same plan *version* with the same parameters, events and overrides."""
    engine = current_service().engine
    run = engine.store.run(path.run_id)
    if engine.store.latest_plan(run.plan_name) is None:
        fail(409, "conflict", f"plan {run.plan_name!r} was deleted; PUT it again to run it")
    new_id = engine.submit(run.plan_id, dict(run.params), list(run.expect), dict(run.overrides or {}))
    log.info("run %s accepted as a rerun of %s", new_id, path.run_id, extra=_about(new_id, run.plan_name))
    return _accepted(new_id)
