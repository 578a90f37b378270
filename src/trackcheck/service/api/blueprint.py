"""The blueprint every resource module adds its routes to, and what all of them share: the URL prefix, the
logger, timestamps in ISO 8601, no caching, and the API's own description."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from flask import Blueprint, Response, jsonify, request

from trackcheck.service.app import error_response
from trackcheck.service.validation import url_problem
from trackcheck.store.repository import aware

log = logging.getLogger("trackcheck.api")
bp = Blueprint("api", __name__)

PREFIX = "/api"


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


@bp.get("/openapi.json")
def openapi() -> Any:
    from trackcheck.service.openapi import document

    return jsonify(document())
