"""The one error shape, ``{"error", "detail"}``, and the one place that maps exceptions to status codes:
Flask's own HTTP errors, the ``ApiError`` a view raises, a request its model refused (pydantic's
``ValidationError``, as flask-openapi3 reports it: ``validation_failed``), and the ``TrackcheckError`` tree."""

from __future__ import annotations

from typing import Any, NoReturn

from flask import Response, request
from pydantic import ValidationError
from pydantic_core import ErrorDetails
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from werkzeug.exceptions import HTTPException

from trackcheck.errors import (
    ConfigError,
    ParamError,
    PlanError,
    RunNotFound,
    SourceError,
    StoreError,
    TrackcheckError,
)
from trackcheck.plan.masking import mask_url_passwords
from trackcheck.service.api.auth import caller_of, forbidden, is_api_request, refusal, too_many, unauthorized
from trackcheck.service.api.blueprint import bp, log
from trackcheck.service.api.models import Query
from trackcheck.service.app import current_service, error_response
from trackcheck.store.database import describe_db_error


class ApiError(Exception):
    """An error answer decided by a view: status, short code, and a detail that says what to change."""

    def __init__(self, status: int, error: str, detail: Any) -> None:
        super().__init__(detail)
        self.status, self.error, self.detail = status, error, detail


def fail(status: int, error: str, detail: str) -> NoReturn:
    raise ApiError(status, error, detail)


def _http_error(exc: HTTPException) -> Any:
    """Flask's own errors (404, 405, 413...) in the API's JSON shape."""
    if exc.code in (404, 405):
        # clients learn nothing about which routes exist: not without a token, nor beyond what their role reaches
        caller = caller_of(request)
        if caller is None:
            return unauthorized()
        refused = refusal(caller)
        if refused is not None:
            return forbidden(refused)
    code = exc.code or 500
    error = (exc.name or "error").lower().replace(" ", "_")
    detail = exc.description
    if code == 413:
        detail = f"the body is larger than {current_service().config.max_body_bytes} bytes (max_body_bytes)"
    elif code == 429:
        detail = "too many failed authentications from this address (login_rate_limit): wait for Retry-After"
    elif code == 405:
        allowed = sorted(set(getattr(exc, "valid_methods", None) or []) - {"HEAD", "OPTIONS"})
        detail = f"{request.method} is not allowed here; use {', '.join(allowed)}"
    response, status = error_response(code, error, detail)
    if code == 405:
        response.headers["Allow"] = ", ".join(getattr(exc, "valid_methods", None) or [])
    elif code == 429:
        too_many(response)
    return response, status


@bp.app_errorhandler(HTTPException)
def _app_http_error(exc: HTTPException) -> Any:
    """Routing errors (no such path or method) happen outside the blueprint: answer JSON under /api only."""
    return _http_error(exc) if is_api_request() else exc


@bp.errorhandler(Exception)
def _view_error(exc: Exception) -> Any:
    """Every exception of an API view becomes the error shape; an unexpected one is logged, not shown."""
    if isinstance(exc, HTTPException):
        # an answer made before the view ran (``validation_failed``) is already in the error shape
        return exc.response if exc.response is not None else _http_error(exc)
    if isinstance(exc, ApiError):
        return error_response(exc.status, exc.error, _masked(exc.detail))
    if isinstance(exc, TrackcheckError):
        status, error = _trackcheck_status(exc)
        return error_response(status, error, mask_url_passwords(str(exc)))
    if isinstance(exc, SQLAlchemyError):  # e.g. the scheduler's job store, which lives in the state database
        detail = f"state database error: {describe_db_error(exc)}"
        log.warning("%s %s: %s", request.method, request.path, detail)
        return error_response(503, "state_database_unavailable", detail)
    if isinstance(exc, RecursionError):  # a document (plan YAML, options) nested deeper than any reader goes
        return error_response(400, "bad_request", "the input is nested too deeply to read")
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
    if isinstance(exc, StoreError) and isinstance(exc.__cause__, IntegrityError):
        return 409, "conflict"  # a concurrent request stored the same row first
    if isinstance(exc, StoreError):
        # a value the database refused is the request's fault (validation should have caught it before)
        return (400, "bad_request") if getattr(exc, "data_error", False) else (503, "state_database_unavailable")
    if isinstance(exc, ConfigError):  # e.g. a connection stored with another secret key: the operator's to fix
        return 503, "service_misconfigured"
    return 500, "internal_error"


def _masked(detail: Any) -> Any:
    return mask_url_passwords(detail) if isinstance(detail, str) else detail


# -- requests their models refused ---------------------------------------------------------------------------
#: pydantic's words for a JSON type that was not sent, as a client reads them
_EXPECTED = {
    "dict_type": "must be a JSON object",
    "model_type": "must be a JSON object",
    "model_attributes_type": "must be a JSON object",
    "list_type": "must be a list",
    "string_type": "must be a string",
    "int_type": "must be an integer",
    "bool_type": "must be true or false",
    "missing": "is required",
}


def validation_failed(exc: ValidationError) -> Response:
    """flask-openapi3's ``validation_error_callback``: the first problem of a request its model refused,
    as a 400 whose detail names the key (``runs[3].params``) or query parameter; the code says what kind
    of input was wrong (``invalid_params`` for a run's parameters and events, ``invalid_plan`` for its
    interval and timeout, ``bad_request`` for the rest)."""
    problem = exc.errors(include_url=False)[0]
    if exc.title in {model.__name__ for model in Query.__subclasses__()}:
        code, detail = "bad_request", _query_detail(problem)
    else:
        code, detail = _body_code(problem), _body_detail(problem)
    response, status = error_response(400, code, mask_url_passwords(detail))
    response.status_code = status
    return response


def _place(loc: tuple[int | str, ...]) -> str:
    """``("runs", 3, "params")`` as ``runs[3].params``."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else part
    return text


def _body_code(problem: ErrorDetails) -> str:
    loc = problem["loc"]
    if problem["type"] == "extra_forbidden":
        return "bad_request"
    if {"interval", "timeout"} & set(loc):
        return "invalid_plan"
    if {"params", "expect"} & set(loc) or (len(loc) == 2 and loc[0] == "runs"):
        return "invalid_params"
    return "bad_request"


def _body_detail(problem: ErrorDetails) -> str:
    loc, kind = problem["loc"], problem["type"]
    context = problem.get("ctx") or {}
    if kind == "env_reference":  # ``where`` is the place inside the value: ``test_id``, ``[0].event_id``
        where = str(context["where"])
        return f"{_place(loc)}{where if where.startswith('[') or not where else '.' + where}: {problem['msg']}"
    if kind == "extra_forbidden":
        parent = _place(loc[:-1])
        return f"{parent}: unknown key {loc[-1]!r}" if parent else f"unknown key {loc[-1]!r} in the body"
    message = _EXPECTED.get(kind) or _lower_first(problem["msg"])
    if len(loc) > 1 and isinstance(loc[-1], str):
        return f"{_place(loc[:-1])}: {loc[-1]!r} {message}"
    return f"{_place(loc)!r} {message}" if loc else message


def _query_detail(problem: ErrorDetails) -> str:
    name = _place(problem["loc"])
    if problem["type"] == "extra_forbidden":
        return f"unknown query parameter {name!r}"
    given = str(problem["input"])
    shown = given if len(given) <= 40 else f"{given[:40]}..."
    return f"query parameter {name!r}: {_lower_first(problem['msg'])}, got {shown!r}"


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]
