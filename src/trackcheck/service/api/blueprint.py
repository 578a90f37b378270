"""The blueprint every resource module adds its routes to, and what all of them share: the URL prefix, the
logger, timestamps in ISO 8601, no caching, and the error answers every operation may give."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from flask import Response, request
from flask_openapi3 import APIBlueprint
from flask_openapi3.types import ResponseDict
from pydantic import BaseModel

from trackcheck.service.app import error_response
from trackcheck.service.validation import url_problem
from trackcheck.store.repository import aware

log = logging.getLogger("trackcheck.api")

PREFIX = "/api"
JSON = "application/json"

#: what each error status means, as the document describes it
ERRORS = {
    400: "Invalid input: the detail names the key, parameter, plan, stage or field at fault; nothing was stored",
    401: "Missing or wrong API token (`Authorization: Bearer <token>`)",
    403: "The token's role may not do this (viewer: read; runner: runs too; admin: everything)",
    404: "No such run, plan, plan version, stage, schedule or connection",
    409: "The request conflicts with the current state (e.g. the run already ended)",
    413: "The body is larger than the service's max_body_bytes",
    415: "Wrong Content-Type",
    429: "Too many failed authentications from this address: wait Retry-After seconds",
    502: "A source of the plan could not be opened",
    503: "The state database is unreachable or the service is misconfigured",
}
#: answers any operation may give: a malformed URL (a name longer than any column, a control character in
#: it, a NUL in the query), the token's (when tokens are configured), the state database's
ANYWHERE = (400, 401, 403, 429, 503)


def answers(success: Mapping[int, type[BaseModel] | None] | None = None, *codes: int) -> ResponseDict:
    """An operation's documented answers: ``success`` (status → answer model, None for no body) and the
    error answers ``codes``, each in the one error shape (``models.Error``)."""
    schema = {"$ref": "#/components/schemas/Error"}
    found: ResponseDict = {status: model for status, model in (success or {}).items()}
    for code in codes:
        found[code] = {"description": ERRORS[code], "content": {JSON: {"schema": schema}}}
    return found


bp = APIBlueprint("api", __name__, abp_responses=answers(None, *ANYWHERE), abp_security=[{"bearer": []}])


@bp.before_request
def _refuse_bad_urls() -> Any:
    """400 for a name in the path that no column holds or that holds a control character, and for a NUL in
    the query. Registered here, before the token check (``auth``), so no log line shows a forged path."""
    if request.endpoint == "api.openapi":
        return None
    problem = url_problem(request.view_args, request.args.items(multi=True))
    return error_response(400, "bad_request", problem) if problem is not None else None


@bp.after_request
def _no_store(response: Response) -> Response:
    """API answers are live state: no cache (browser or proxy) should keep them."""
    response.headers.setdefault("Cache-Control", "no-store")
    return response


def iso(moment: datetime | None) -> str | None:
    value = aware(moment)
    return value.isoformat() if value else None
