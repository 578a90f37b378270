"""The dashboard blueprint every page module adds its routes to, the headers on all its answers and its
error pages."""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response, abort, render_template, request
from flask.typing import ResponseReturnValue
from sqlalchemy.exc import SQLAlchemyError

from trackcheck.errors import StoreError
from trackcheck.plan.masking import mask_url_passwords
from trackcheck.service.validation import url_problem
from trackcheck.store.database import describe_db_error

#: templates/ and static/ stay beside the service modules (pyproject.toml ships them as package data), one
#: level above this package
SERVICE_DIR = Path(__file__).absolute().parent.parent

bp = Blueprint(
    "dashboard",
    __name__,
    root_path=str(SERVICE_DIR),
    template_folder="templates",
    static_folder="static",
    static_url_path="/assets",
)

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
)


@bp.after_request
def _headers(response: Response) -> Response:
    """No inline script or style anywhere, so a strict CSP costs nothing and blunts any injection."""
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    if request.endpoint != "dashboard.static":
        response.headers.setdefault("Cache-Control", "no-store")
    return response


@bp.before_request
def _refuse_bad_urls() -> None:
    """A name in the path that no column holds or that holds a control character, or a NUL in the query,
    is a 400 page. Registered before the login check, so no log line shows a forged path."""
    if request.endpoint == "dashboard.static":
        return
    problem = url_problem(request.view_args, request.args.items(multi=True))
    if problem is not None:
        abort(400, problem)


@bp.errorhandler(StoreError)
@bp.errorhandler(SQLAlchemyError)
def _store_error(exc: StoreError | SQLAlchemyError) -> ResponseReturnValue:
    """Any page (and the login check before it) while the state database is down: a 503 page, never a 500."""
    if isinstance(exc, StoreError) and getattr(exc, "data_error", False):
        message = f"The state database refused a value of this request: {mask_url_passwords(exc.message)}"
        return render_template("dashboard/error.html", title="Bad request", message=message), 400
    message = mask_url_passwords(str(exc) if isinstance(exc, StoreError) else describe_db_error(exc))
    return render_template("dashboard/error.html", title="State database unavailable", message=message), 503


@bp.errorhandler(400)
def _bad_request(exc: Exception) -> ResponseReturnValue:
    message = getattr(exc, "description", None) or "The request is not valid."
    return render_template("dashboard/error.html", title="Bad request", message=message), 400


@bp.errorhandler(404)
def _not_found(exc: Exception) -> ResponseReturnValue:
    message = getattr(exc, "description", None) or "There is nothing at this address."
    return render_template("dashboard/error.html", title="Not found", message=message), 404


@bp.errorhandler(403)
def _forbidden(exc: Exception) -> ResponseReturnValue:
    message = getattr(exc, "description", None) or "Forbidden."
    return render_template("dashboard/error.html", title="Forbidden", message=message), 403
