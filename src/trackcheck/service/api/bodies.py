"""A JSON body is read under the service's limits before its model sees it.

flask-openapi3 hands ``request.get_json()`` to the operation's body model; by then the JSON must already be
known to be safe to parse and store: sent as ``application/json`` (415 otherwise: a cross-site form cannot
send that type without a preflight), nested at most ``MAX_DEPTH`` deep, free of NUL characters and lone
surrogates, its numbers finite and within 64 bits (``trackcheck.service.validation``), and an object.
Registered after the token check (``auth``), so a caller without a token learns nothing from a 415 or 400.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from flask import current_app, request
from flask_openapi3.utils import parse_parameters
from pydantic import BaseModel

from trackcheck.service.api import auth  # noqa: F401 - its token check is registered first
from trackcheck.service.api.blueprint import bp
from trackcheck.service.api.errors import fail
from trackcheck.service.validation import InputError, parse_json


@cache
def _body_model(endpoint: str) -> type[BaseModel] | None:
    """The body model the view of ``endpoint`` declares (``body: RunRequest``), or None."""
    view = current_app.view_functions[endpoint]
    declared = parse_parameters(getattr(view, "__wrapped__", view), doc_ui=False)
    body: type[BaseModel] | None = declared[5]
    return body


@bp.before_request
def _check_body() -> Any:
    model = _body_model(request.endpoint) if request.endpoint is not None else None
    if model is None:
        return None
    if not request.is_json:
        fail(415, "unsupported_media_type", "send the body as JSON with 'Content-Type: application/json'")
    raw = request.get_data(cache=True)  # 413 here when longer than max_body_bytes
    try:
        body = parse_json(raw.decode("utf-8"))
    except InputError as exc:
        fail(400, "bad_request", str(exc))
    except ValueError as exc:  # UnicodeDecodeError too
        fail(400, "bad_request", f"the body is not valid JSON: {exc}")
    if not isinstance(body, dict):
        fail(400, "bad_request", f"the body must be a JSON object with the keys {', '.join(model.model_fields)}")
    return None
