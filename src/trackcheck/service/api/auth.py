"""Who may use the API: with ``api_token`` set, every route but the open ones needs ``Bearer <token>``."""

from __future__ import annotations

import hmac
from typing import Any

from flask import Request, current_app, request

from trackcheck.service.api.blueprint import bp
from trackcheck.service.app import EXTENSION, error_response

#: endpoints anyone may read: the API description holds no data
OPEN_ENDPOINTS = frozenset({"api.openapi"})


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


def unauthorized() -> Any:
    body, status = error_response(401, "unauthorized", "send the API token as 'Authorization: Bearer <token>'")
    body.headers["WWW-Authenticate"] = 'Bearer realm="trackcheck"'
    return body, status


@bp.before_request
def _authenticate() -> Any:
    if request.endpoint in OPEN_ENDPOINTS or check_token(request):
        return None
    return unauthorized()
