"""Who may use the dashboard. With an API token configured, a login form compares it in constant time and
sets a signed HttpOnly SameSite=Strict session cookie; form posts from other sites are refused either way.

The cookie is signed with a key derived from the token, so every gunicorn worker agrees on it and rotating
the token logs everyone out.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from flask import Response, abort, redirect, render_template, request, session, url_for
from flask.blueprints import BlueprintSetupState
from flask.typing import ResponseReturnValue
from pydantic import SecretStr

from trackcheck.service.app import EXTENSION, current_service
from trackcheck.service.dashboard.blueprint import bp

LOGIN_MAX_AGE = timedelta(hours=12)


@bp.record_once
def _configure(state: BlueprintSetupState) -> None:
    """Sessions are only needed with a token: sign them with a key derived from it (HMAC), so every worker
    process derives the same key, and keep the cookie out of scripts and cross-site requests."""
    app = state.app
    token = _token_of(app.extensions.get(EXTENSION))
    if token is not None and not app.secret_key:
        app.secret_key = hmac.new(token.encode(), b"trackcheck dashboard session key", hashlib.sha256).hexdigest()
    app.config["SESSION_COOKIE_NAME"] = "trackcheck_session"
    app.config["SESSION_COOKIE_HTTPONLY"] = True
    app.config["SESSION_COOKIE_SAMESITE"] = "Strict"


def _token_of(service: Any) -> str | None:
    secret: SecretStr | None = getattr(getattr(service, "config", None), "api_token", None)
    return secret.get_secret_value() if secret is not None else None


def _api_token() -> str | None:
    return _token_of(current_service())


def _login_fingerprint(token: str) -> str:
    """What the session stores: proves a login with this token without holding the token itself."""
    return hmac.new(token.encode(), b"trackcheck dashboard login", hashlib.sha256).hexdigest()


def session_authenticated() -> bool:
    """True when no token is configured, or this request carries a valid dashboard login session.

    The JSON API may call this to accept the dashboard's cookie (see the docstring of ``trackcheck.service.api``).
    """
    token = _api_token()
    if token is None:
        return True
    fingerprint = session.get("auth")
    since = session.get("since")
    if not isinstance(fingerprint, str) or not isinstance(since, int | float):
        return False
    if time.time() - since > LOGIN_MAX_AGE.total_seconds():
        return False
    return hmac.compare_digest(fingerprint, _login_fingerprint(token))


# keep this order: the login check runs first, so a cross-site post without a login goes to the login form
@bp.before_request
def _require_login() -> ResponseReturnValue | None:
    if request.endpoint in ("dashboard.login", "dashboard.static") or session_authenticated():
        return None
    target = url_for("dashboard.login", next=_local_path(request.full_path))
    if request.headers.get("HX-Request"):
        # a fragment refresh after the login expired: send the whole page to the login form
        return Response("login required", status=401, headers={"HX-Redirect": target})
    return redirect(target)


@bp.before_request
def _same_origin_posts() -> ResponseReturnValue | None:
    """Refuse form posts from other sites (CSRF): without a token the service is open on loopback, and any
    web page could otherwise start runs through the visitor's browser."""
    if request.method != "POST":
        return None
    fetch_site = request.headers.get("Sec-Fetch-Site")
    origin = request.headers.get("Origin")
    if fetch_site not in (None, "same-origin", "none") or (
        origin is not None and urlsplit(origin).netloc != request.host
    ):
        abort(403, "Form posts from other sites are refused.")
    return None


def _local_path(target: str | None) -> str:
    """``target`` if it is a path on this site, else ``/``: the login's ``next`` must not leave the site."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target.rstrip("?") or "/"


@bp.route("/login", methods=["GET", "POST"])
def login() -> ResponseReturnValue:
    token = _api_token()
    target = _local_path(request.values.get("next"))
    if token is None:
        return redirect(target)
    error = None
    if request.method == "POST":
        given = request.form.get("token", "")
        if hmac.compare_digest(given.encode(), token.encode()):
            session.clear()
            session["auth"] = _login_fingerprint(token)
            session["since"] = int(time.time())
            return redirect(target)
        error = "That is not the service's API token."
    status = 401 if error else 200
    return render_template("dashboard/login.html", error=error, next=target), status


@bp.post("/logout")
def logout() -> ResponseReturnValue:
    session.clear()
    return redirect(url_for("dashboard.login"))


@bp.app_template_global()
def login_enabled() -> bool:
    return _api_token() is not None
