"""The one error shape, ``{"error", "detail"}``, and the one place that maps exceptions to status codes:
Flask's own HTTP errors, the ``ApiError`` a view raises, and the ``TrackcheckError`` tree."""

from __future__ import annotations

from typing import Any, NoReturn

from flask import request
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
        return _http_error(exc)
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
