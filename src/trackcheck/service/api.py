"""The JSON API under ``/api``: runs, plans and schedules (documented in ``openapi.py``).

Conventions, so that clients can rely on them:

- Accepting a run only writes rows (the poller picks it up): ``POST /api/runs`` answers 202 at once.
- Every error is ``{"error": <short code>, "detail": <what is wrong, naming the key/plan/stage>}``:
  400 invalid input (malformed body, unknown key, wrong parameter, bad plan, bad cron), 401 missing/wrong
  token, 404 unknown run/plan/stage/schedule/route, 405, 409 state conflict, 413 body too large,
  415 wrong Content-Type, 502 a source could not be opened, 503 the state database is unreachable.
  Invalid input is rejected before anything is stored.
- JSON bodies must be sent as ``application/json``: a cross-site page cannot send that without a CORS
  preflight (which this API never grants), so a token-less deployment on 127.0.0.1 is not open to CSRF.
- With ``api_token`` set, every route except ``/api/openapi.json`` needs ``Authorization: Bearer <token>``.
- Nothing returned holds a credential: plan text has URL passwords and literal secrets masked, error
  details are TrackcheckError messages (masked where raised) masked once more.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import quote

import yaml
from flask import Blueprint, Request, Response, current_app, jsonify, request
from sqlalchemy import select
from werkzeug.exceptions import HTTPException

from trackcheck.engine.core import store_plan
from trackcheck.engine.result import build_result
from trackcheck.errors import ParamError, PlanError, RunNotFound, SourceError, StoreError, TrackcheckError
from trackcheck.foreground import overrides_from
from trackcheck.plan.loader import load_plan_text
from trackcheck.service.app import EXTENSION, current_service, error_response
from trackcheck.service.schedules import add_schedule, delete_schedule, next_run_time
from trackcheck.sources.base import MASK, mask_url_passwords
from trackcheck.store.models import PlanVersion, Run, RunStage, Schedule
from trackcheck.store.repository import RUN_FINISHED, Store, aware

log = logging.getLogger("trackcheck.api")
bp = Blueprint("api", __name__)

PREFIX = "/api"
RUN_STATUSES = ("running", *RUN_FINISHED)
DEFAULT_LIMIT, MAX_LIMIT = 50, 500
RUN_KEYS = ("plan", "params", "expect", "interval", "timeout")
SCHEDULE_KEYS = ("plan", "cron", "params")
YAML_TYPES = frozenset({"application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml", "text/plain"})
#: endpoints anyone may read: the API description holds no data
OPEN_ENDPOINTS = frozenset({"api.openapi"})


class ApiError(Exception):
    """An error answer decided by a view: status, short code, and a detail that says what to change."""

    def __init__(self, status: int, error: str, detail: Any) -> None:
        super().__init__(detail)
        self.status, self.error, self.detail = status, error, detail


# -- authentication ----------------------------------------------------------------------------------------
def check_token(req: Request) -> bool:
    """True if ``req`` may use the API: no token is configured, or it carries ``Bearer <token>``.

    Compared with ``hmac.compare_digest`` so the answer time does not reveal how much of a guess was right.
    The dashboard reuses this for its own requests.
    """
    token = current_app.extensions[EXTENSION].config.api_token
    if token is None:
        return True
    scheme, _, given = req.headers.get("Authorization", "").partition(" ")
    given = given.strip() if scheme.lower() == "bearer" else ""
    expected = token.get_secret_value()
    return hmac.compare_digest(given.encode(), expected.encode()) and bool(given)


def _unauthorized() -> Any:
    body, status = error_response(401, "unauthorized", "send the API token as 'Authorization: Bearer <token>'")
    body.headers["WWW-Authenticate"] = 'Bearer realm="trackcheck"'
    return body, status


@bp.before_request
def _authenticate() -> Any:
    if request.endpoint in OPEN_ENDPOINTS or check_token(request):
        return None
    return _unauthorized()


@bp.after_request
def _no_store(response: Response) -> Response:
    """API answers are live state: no cache (browser or proxy) should keep them."""
    response.headers.setdefault("Cache-Control", "no-store")
    return response


# -- errors ------------------------------------------------------------------------------------------------
def is_api_request() -> bool:
    return request.path == PREFIX or request.path.startswith(PREFIX + "/")


def _http_error(exc: HTTPException) -> Any:
    """Flask's own errors (404, 405, 413...) in the API's JSON shape."""
    if exc.code in (404, 405) and not check_token(request):
        return _unauthorized()  # unauthenticated clients learn nothing about which routes exist
    code = exc.code or 500
    error = (exc.name or "error").lower().replace(" ", "_")
    detail = exc.description
    if code == 413:
        detail = f"the body is larger than {current_service().config.max_body_bytes} bytes (max_body_bytes)"
    elif code == 405:
        allowed = sorted(set(getattr(exc, "valid_methods", None) or []) - {"HEAD", "OPTIONS"})
        detail = f"{request.method} is not allowed here; use {', '.join(allowed)}"
    response, status = error_response(code, error, detail)
    if code == 405:
        response.headers["Allow"] = ", ".join(getattr(exc, "valid_methods", None) or [])
    return response, status


@bp.app_errorhandler(HTTPException)
def _app_http_error(exc: HTTPException) -> Any:
    """Routing errors (no such path or method) happen outside the blueprint: answer JSON under /api only."""
    return _http_error(exc) if is_api_request() else exc


@bp.errorhandler(Exception)
def _view_error(exc: Exception) -> Any:
    """Every exception of an API view becomes the error shape; an unexpected one is logged, not shown."""
    if isinstance(exc, HTTPException):
        return _http_error(exc)
    if isinstance(exc, ApiError):
        return error_response(exc.status, exc.error, _masked(exc.detail))
    if isinstance(exc, TrackcheckError):
        status, error = _trackcheck_status(exc)
        return error_response(status, error, mask_url_passwords(str(exc)))
    log.exception("unexpected error in %s %s", request.method, request.path)
    return error_response(500, "internal_error", "an unexpected error occurred; the service log has the details")


def _trackcheck_status(exc: TrackcheckError) -> tuple[int, str]:
    if isinstance(exc, ParamError):
        return 400, "invalid_params"
    if isinstance(exc, PlanError):
        return 400, "invalid_plan"
    if isinstance(exc, RunNotFound):
        return 404, "not_found"
    if isinstance(exc, SourceError):
        return 502, "source_unavailable"
    if isinstance(exc, StoreError):
        return 503, "state_database_unavailable"
    return 500, "internal_error"


def _masked(detail: Any) -> Any:
    return mask_url_passwords(detail) if isinstance(detail, str) else detail


def _fail(status: int, error: str, detail: str) -> NoReturn:
    raise ApiError(status, error, detail)


# -- request parsing ---------------------------------------------------------------------------------------
def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a JSON number")


def _json_body(allowed: tuple[str, ...]) -> dict[str, Any]:
    """The body as a JSON object with only ``allowed`` keys; 415/413/400 otherwise."""
    if not request.is_json:
        _fail(415, "unsupported_media_type", "send the body as JSON with 'Content-Type: application/json'")
    raw = request.get_data(cache=True)  # 413 here when longer than max_body_bytes
    try:
        body = json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        _fail(400, "bad_request", f"the body is not valid JSON: {exc}")
    if not isinstance(body, dict):
        _fail(400, "bad_request", f"the body must be a JSON object with the keys {', '.join(allowed)}")
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        _fail(400, "bad_request", f"unknown key {unknown[0]!r} in the body (allowed: {', '.join(allowed)})")
    return body


def _string(body: Mapping[str, Any], key: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value.strip():
        _fail(400, "bad_request", f"{key!r} is required and must be a non-empty string")
    return value


def _object(body: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = body.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        _fail(400, "invalid_params", f"{key!r} must be a JSON object of name: value")
    return value


def _expect(body: Mapping[str, Any]) -> list[dict[str, Any]] | None:
    value = body.get("expect")
    if value is None:
        return None
    if not isinstance(value, list):
        _fail(400, "invalid_params", "'expect' must be a list of event objects")
    for index, event in enumerate(value):
        if not isinstance(event, dict):
            _fail(400, "invalid_params", f"expect[{index}] is not an object")
    return value


def _int_arg(name: str, default: int, low: int, high: int | None = None) -> int:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        _fail(400, "bad_request", f"query parameter {name!r} must be an integer, got {raw!r}")
    if value < low or (high is not None and value > high):
        bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
        _fail(400, "bad_request", f"query parameter {name!r} must be {bounds}, got {value}")
    return value


# -- documents ---------------------------------------------------------------------------------------------
def _iso(moment: datetime | None) -> str | None:
    value = aware(moment)
    return value.isoformat() if value else None


def run_document(run: Run, stages: list[RunStage]) -> dict[str, Any]:
    """``trackcheck run --json`` (``Engine.result``) plus the webhook notification state (None if none)."""
    return build_result(run, stages).to_dict() | {"notify": run.notify}


def _run_summary(run: Run, stages: list[tuple[str, str]]) -> dict[str, Any]:
    return {
        "id": run.id,
        "plan": run.plan_name,
        "status": run.status,
        "created_at": _iso(run.created_at),
        "finished_at": _iso(run.finished_at),
        "stages": [{"name": name, "status": status} for name, status in stages],
    }


def _stage_statuses(store: Store, run_ids: list[str]) -> dict[str, list[tuple[str, str]]]:
    """Every listed run's stages in one query (a list page must not cost one query per run)."""
    found: dict[str, list[tuple[str, str]]] = {run_id: [] for run_id in run_ids}
    if not run_ids:
        return found
    query = (
        select(RunStage.run_id, RunStage.name, RunStage.status)
        .where(RunStage.run_id.in_(run_ids))
        .order_by(RunStage.run_id, RunStage.idx)
    )
    with store.session() as session:
        for run_id, name, status in session.execute(query):
            found[run_id].append((name, status))
    return found


def _plan_outline(text: str) -> dict[str, Any]:
    """Description and stage names, read from the stored YAML without expanding ``${ENV}``: listing plans
    must not depend on this process's environment."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError:
        raw = None
    raw = raw if isinstance(raw, dict) else {}
    stages = raw.get("stages")
    stages = stages if isinstance(stages, list) else []
    description = raw.get("description")
    return {
        "description": description if isinstance(description, str) else None,
        "stages": [str(s["name"]) for s in stages if isinstance(s, dict) and "name" in s],
    }


def _plan_summary(version: PlanVersion) -> dict[str, Any]:
    return {
        "name": version.name,
        "version": version.version,
        **_plan_outline(version.text),
        "created_at": _iso(version.created_at),
    }


#: keys whose values are credentials: authorization, password, token, secret, api keys (also x-api-key,
#: client_secret, access_token...); the plan's own ``key:`` is not one of them
_SECRET_NAME = r"(?:[\w.-]*[-_])?(?:authorization|password|passwd|secret|token|api[-_]?key)"  # noqa: S105 - a pattern, not a password
_SECRET_KEY_NAME = re.compile(rf"(?i){_SECRET_NAME}")
_SECRET_KEY = re.compile(
    rf"""(?ix)
    (?P<head>(?<![\w-])["']?{_SECRET_NAME}["']?[ \t]*:[ \t]*)
    (?P<value>"(?:[^"\\\n]|\\.)*"|'(?:[^'\n]|'')*'
        |(?:\$\{{[^}}\n]*\}}|[^\s,}}\]#|>])(?:\$\{{[^}}\n]*\}}|[^\s,}}\]]|[ \t]+(?=[^\s#,}}\]]))*)
    """
)
_ENV_REF = re.compile(r"\$\{[^}]*\}")
#: like ``mask_url_passwords``, but up to the *last* ``@`` of the authority: an unencoded ``@`` in a password
#: must not leave its tail visible
_URL_PASSWORD = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)([^\s/]+)@")
_AUTH_SCHEMES = re.compile(r"(?i)\b(?:bearer|basic|token)\b")
#: shorter secrets are masked where they stand (by the patterns), not replaced everywhere in the text
_MIN_REPLACED = 4


def _literal_secret(value: str) -> bool:
    """A value is a literal secret unless it only references environment variables (``Bearer ${TOKEN}``)."""
    rest = _AUTH_SCHEMES.sub("", _ENV_REF.sub("", value.strip().strip("\"'")))
    return bool(rest.strip())


def _yaml_secrets(node: Any, key: str | None = None) -> set[str]:
    """The literal secrets in parsed plan YAML: values of secret keys (and their last word: ``Bearer x``)
    and URL passwords anywhere."""
    if isinstance(node, dict):
        return set().union(*(_yaml_secrets(v, str(k)) for k, v in node.items()))
    if isinstance(node, list):
        return set().union(*(_yaml_secrets(v) for v in node))
    if isinstance(node, bool) or not isinstance(node, str | int | float):
        return set()
    value = str(node)
    found = {m.group(2) for m in _URL_PASSWORD.finditer(value) if _literal_secret(m.group(2))}
    if key is not None and _SECRET_KEY_NAME.fullmatch(key) and _literal_secret(value):
        found |= {value, *value.split()[1:]}
    return found


def mask_plan_text(text: str) -> str:
    """Plan YAML safe to show: URL passwords (as ``mask_url_passwords`` does) and the values of secret keys
    (Authorization, password, secret, token, api keys) become ``***``. ``${ENV}`` references are kept: they
    are no secret, and a client that saves the text back must not lose them.

    Secrets are found by parsing the YAML (exact, whatever the quoting or layout) and replaced wherever
    they occur; the patterns then catch what parsing cannot see (text that is not valid YAML)."""
    try:
        secrets = _yaml_secrets(yaml.safe_load(text))
    except yaml.YAMLError:
        secrets = set()
    for secret in sorted((s for s in secrets if len(s) >= _MIN_REPLACED), key=len, reverse=True):
        text = text.replace(secret, MASK)

    def url(match: re.Match[str]) -> str:
        keep = not _literal_secret(match.group(2))
        return match.group(0) if keep else f"{match.group(1)}{MASK}@"

    def key(match: re.Match[str]) -> str:
        return match.group(0) if not _literal_secret(match.group("value")) else f"{match.group('head')}{MASK}"

    return _SECRET_KEY.sub(key, _URL_PASSWORD.sub(url, text))


def _schedule_document(schedule: Schedule) -> dict[str, Any]:
    return {
        "id": schedule.id,
        "plan": schedule.plan_name,
        "cron": schedule.cron,
        "params": schedule.params,
        "created_at": _iso(schedule.created_at),
        "next_run_time": next_run_time(current_service().engine, schedule.id),
        "last_run_id": schedule.last_run_id,
        "last_error": schedule.last_error,
    }


def _latest_plan(name: str) -> PlanVersion:
    version = current_service().engine.store.latest_plan(name)
    if version is None:
        _fail(404, "not_found", f"no plan named {name!r} (GET /api/plans lists them; PUT /api/plans/<name> adds one)")
    return version


def _accepted(run_id: str) -> Any:
    response = jsonify({"id": run_id, "status": "processing"})
    response.status_code = 202
    response.headers["Location"] = f"{PREFIX}/runs/{run_id}"
    return response


# -- runs --------------------------------------------------------------------------------------------------
@bp.post("/runs")
def submit_run() -> Any:
    """Validate and store a run; the poller does the rest in the background."""
    body = _json_body(RUN_KEYS)
    name = _string(body, "plan")
    params, expect = _object(body, "params"), _expect(body)
    # like `trackcheck run --interval/--timeout`: every stage of this run polls that often, times out then
    overrides = overrides_from(body.get("interval"), body.get("timeout"))
    version = _latest_plan(name)
    run_id = current_service().engine.submit(version.id, params, expect, overrides)
    log.info("run %s of plan %s (version %d) accepted", run_id, name, version.version)
    return _accepted(run_id)


@bp.get("/runs")
def list_runs() -> Any:
    status = request.args.get("status") or None
    if status is not None and status not in RUN_STATUSES:
        _fail(400, "bad_request", f"unknown status {status!r} (one of: {', '.join(RUN_STATUSES)})")
    limit = _int_arg("limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    offset = _int_arg("offset", 0, 0)
    store = current_service().engine.store
    runs, total = store.list_runs(request.args.get("plan") or None, status, limit, offset)
    stages = _stage_statuses(store, [run.id for run in runs])
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
            "polled_at": _iso(poll.polled_at),
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
        _fail(404, "not_found", f"run {run_id} has no stage {stage!r} (stages: {names})")
    snapshot = store.snapshots_for([run_id], idx).get(run_id)
    return jsonify(
        {
            "run_id": run_id,
            "stage": stage,
            "records": snapshot.records if snapshot else [],
            "total": snapshot.total if snapshot else 0,
            "truncated": bool(snapshot.truncated) if snapshot else False,
            "taken_at": _iso(snapshot.taken_at) if snapshot else None,
        }
    )


@bp.post("/runs/<run_id>/cancel")
def cancel_run(run_id: str) -> Any:
    engine = current_service().engine
    if not engine.cancel(run_id):
        _fail(409, "conflict", f"run {run_id} has already ended ({engine.store.run(run_id).status})")
    log.info("run %s cancelled through the API", run_id)
    return jsonify(run_document(engine.store.run(run_id), engine.store.run_stages(run_id)))


@bp.post("/runs/<run_id>/rerun")
def rerun(run_id: str) -> Any:
    """A new run of the same plan *version* with the same parameters, events and overrides."""
    engine = current_service().engine
    run = engine.store.run(run_id)
    if engine.store.latest_plan(run.plan_name) is None:
        _fail(409, "conflict", f"plan {run.plan_name!r} was deleted; PUT it again to run it")
    new_id = engine.submit(run.plan_id, dict(run.params), list(run.expect), dict(run.overrides or {}))
    log.info("run %s accepted as a rerun of %s", new_id, run_id)
    return _accepted(new_id)


# -- plans -------------------------------------------------------------------------------------------------
@bp.get("/plans")
def list_plans() -> Any:
    return jsonify({"plans": [_plan_summary(v) for v in current_service().engine.store.latest_plans()]})


@bp.get("/plans/<name>")
def get_plan(name: str) -> Any:
    """The latest version (or ``?version=N``) with its YAML, secrets masked, and every version's number."""
    store = current_service().engine.store
    latest = _latest_plan(name)
    history = store.plan_history(name)
    wanted = _int_arg("version", latest.version, 1)
    version = next((v for v in history if v.version == wanted), None)
    if version is None:
        _fail(404, "not_found", f"plan {name!r} has no version {wanted} (latest: {latest.version})")
    return jsonify(
        _plan_summary(version)
        | {
            "text": mask_plan_text(version.text),
            "versions": [{"version": v.version, "created_at": _iso(v.created_at)} for v in history],
        }
    )


def _plans_base_dir() -> str | None:
    """Relative paths of an uploaded plan resolve like those of the plans folder (same base: same version)."""
    folder = current_service().config.plans
    return str(folder.resolve()) if folder is not None else None


def _yaml_body() -> str:
    if request.mimetype not in YAML_TYPES:
        _fail(415, "unsupported_media_type", "send the plan YAML with 'Content-Type: application/yaml'")
    raw = request.get_data(cache=True)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        _fail(400, "bad_request", "the plan is not UTF-8 text")
    if not text.strip():
        _fail(400, "invalid_plan", "the body is empty: send the plan YAML")
    return text


@bp.put("/plans/<name>")
def put_plan(name: str) -> Any:
    """Validate and store a plan version: 201 when it is new, 200 when the text is unchanged."""
    text, base_dir = _yaml_body(), _plans_base_dir()
    plan = load_plan_text(text, origin=name, base_dir=None if base_dir is None else Path(base_dir))
    if plan.name != name:
        _fail(400, "invalid_plan", f"the plan is named {plan.name!r} but the URL says {name!r}: they must match")
    engine = current_service().engine
    before = engine.store.latest_plan(name)
    version_id, _ = store_plan(engine, text, origin=name, base_dir=base_dir)
    version = engine.store.plan_version(version_id)
    created = before is None or before.id != version_id
    if created:
        log.info("plan %s version %d stored through the API", name, version.version)
    response = jsonify(_plan_summary(version) | {"created": created})
    response.status_code = 201 if created else 200
    response.headers["Location"] = f"{PREFIX}/plans/{quote(name, safe='')}?version={version.version}"
    return response


@bp.delete("/plans/<name>")
def delete_plan(name: str) -> Any:
    """Retire the plan: no new runs or reruns; runs keep the version they started with."""
    if not current_service().engine.store.delete_plan(name):
        _fail(404, "not_found", f"no plan named {name!r}")
    log.info("plan %s deleted through the API", name)
    return Response(status=204)


# -- schedules ---------------------------------------------------------------------------------------------
@bp.get("/schedules")
def list_schedules() -> Any:
    return jsonify({"schedules": [_schedule_document(s) for s in current_service().engine.store.schedules()]})


@bp.post("/schedules")
def create_schedule() -> Any:
    body = _json_body(SCHEDULE_KEYS)
    name, cron, params = _string(body, "plan"), _string(body, "cron"), _object(body, "params")
    _latest_plan(name)
    schedule = add_schedule(current_service().engine, name, cron, params)
    log.info("schedule %s (%s) of plan %s created through the API", schedule.id, cron, name)
    response = jsonify(_schedule_document(schedule))
    response.status_code = 201
    response.headers["Location"] = f"{PREFIX}/schedules/{schedule.id}"
    return response


@bp.get("/schedules/<schedule_id>")
def get_schedule(schedule_id: str) -> Any:
    schedule = current_service().engine.store.schedule(schedule_id)
    if schedule is None:
        _fail(404, "not_found", f"no schedule {schedule_id!r}")
    return jsonify(_schedule_document(schedule))


@bp.delete("/schedules/<schedule_id>")
def remove_schedule(schedule_id: str) -> Any:
    if not delete_schedule(current_service().engine, schedule_id):
        _fail(404, "not_found", f"no schedule {schedule_id!r}")
    return Response(status=204)


# -- the API description -----------------------------------------------------------------------------------
@bp.get("/openapi.json")
def openapi() -> Any:
    from trackcheck.service.openapi import document

    return jsonify(document())
