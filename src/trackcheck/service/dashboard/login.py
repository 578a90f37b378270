"""Who may use the dashboard, and what they may do there.

With tokens configured (``api_token`` or ``[[tokens]]``) the login form takes any of them, compared like
the API compares bearer tokens, and starts a session on the server: a ``tc_sessions`` row with the token's
name, its role and an expiry. The cookie (signed, HttpOnly, SameSite=Strict, ``Secure`` per
``cookie_secure``) carries only a random session id, and the row is keyed by that id's SHA-256. Logging out
deletes the row, so a copied cookie opens nothing afterwards, in any worker process; neither does it once
its token is removed from the configuration or given another role. Expired rows go whenever someone logs
in.

A session has the role of its token, checked with the API's table (``api.auth.required_role``): a
viewer's form post is refused with 403, and pages hide the buttons the caller may not use. Form posts from
other sites are refused whoever is logged in (CSRF). Failed logins count towards ``login_rate_limit``.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from datetime import timedelta
from urllib.parse import unquote, urlsplit

from flask import Response, abort, g, redirect, render_template, request, session, url_for
from flask.blueprints import BlueprintSetupState
from flask.typing import ResponseReturnValue

from trackcheck.service.api.auth import (
    ANONYMOUS,
    Caller,
    caller_for_token,
    credentials,
    is_configured,
    log_write,
    refusal,
    too_many,
)
from trackcheck.service.app import EXTENSION, current_service
from trackcheck.service.config import Role, ServiceConfig
from trackcheck.service.dashboard.blueprint import bp
from trackcheck.service.runtime import open_access_warning
from trackcheck.store.models import LoginSession
from trackcheck.store.repository import utcnow

log = logging.getLogger("trackcheck.dashboard")
LOGIN_MAX_AGE = timedelta(hours=12)
#: the one key of the signed cookie: a random id whose SHA-256 names the session row
SESSION_KEY = "sid"


@bp.record_once
def _configure(state: BlueprintSetupState) -> None:
    """Sign session cookies with a key every worker process derives alike, and keep them out of scripts and
    cross-site requests."""
    app = state.app
    service = app.extensions.get(EXTENSION)
    if service is not None and not app.secret_key:
        app.secret_key = _signing_key(service.config)
    app.config["SESSION_COOKIE_NAME"] = "trackcheck_session"
    app.config["SESSION_COOKIE_HTTPONLY"] = True
    app.config["SESSION_COOKIE_SAMESITE"] = "Strict"


def _signing_key(config: ServiceConfig) -> str | None:
    """From ``secret_key`` when set, else from the tokens: changing either logs everyone out. The signature
    only keeps forged cookies from reaching the database; the session row is what grants access."""
    if not config.authenticated:
        return None
    material = (
        config.secret_key.get_secret_value()
        if config.secret_key is not None
        else "\n".join(sorted(secret for _, secret in credentials(config)))
    )
    return hmac.new(material.encode(), b"trackcheck dashboard session key", hashlib.sha256).hexdigest()


def _row_id(session_id: str) -> str:
    """The row of a session: a copy of the database does not hold cookies that would open it."""
    return hashlib.sha256(session_id.encode()).hexdigest()


def session_caller() -> Caller | None:
    """Who is logged in with this request's cookie: ``ANONYMOUS`` when no token is configured; None without
    a live session (never started, logged out, expired, or its token removed or given another role)."""
    config = current_service().config
    if not config.authenticated:
        return ANONYMOUS
    session_id = session.get(SESSION_KEY)
    if not isinstance(session_id, str) or not session_id:
        return None
    store = current_service().engine.store
    login = store.login_session(_row_id(session_id), utcnow())
    if login is None:
        return None
    caller = Caller(login.token_name, login.role)  # type: ignore[arg-type]
    if not is_configured(caller, config):
        store.end_login_session(_row_id(session_id))
        return None
    return caller


def session_authenticated() -> bool:
    """True when no token is configured, or this request carries a live dashboard session."""
    return session_caller() is not None


# keep this order: the login check runs first, so a cross-site post without a login goes to the login form
@bp.before_request
def _require_login() -> ResponseReturnValue | None:
    if request.endpoint in ("dashboard.login", "dashboard.static"):
        return None
    caller = session_caller()
    if caller is None:
        session.pop(SESSION_KEY, None)  # a dead session's cookie is dropped
        target = url_for("dashboard.login", next=_local_path(request.full_path))
        if request.headers.get("HX-Request"):
            # a fragment refresh after the login ended: send the whole page to the login form
            return Response("login required", status=401, headers={"HX-Redirect": target})
        return redirect(target)
    g.caller = caller
    refused = refusal(caller)
    if refused is not None:
        abort(403, refused)
    log_write(caller)
    return None


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
    """``target`` if it is a path on this site, else ``/``: the login's ``next`` must not leave the site.

    Browsers read ``//host``, ``/\\host``, ``https:host`` and paths with tabs or newlines in them as other
    sites; the decoded form is checked too, for whatever decodes ``/%2F%2Fhost`` once more on the way."""
    if not target:
        return "/"
    decoded = target
    for _ in range(3):
        decoded = unquote(decoded)
    for candidate in (target, decoded):
        path = candidate.split("?", 1)[0]
        if (
            not path.startswith("/")
            or path.startswith("//")
            or "\\" in path
            or any(ord(c) < 0x20 or ord(c) == 0x7F for c in candidate)
            or urlsplit(candidate).scheme
            or urlsplit(candidate).netloc
        ):
            return "/"
    return target.rstrip("?") or "/"


@bp.route("/login", methods=["GET", "POST"])
def login() -> ResponseReturnValue:
    config = current_service().config
    target = _local_path(request.values.get("next"))
    if not config.authenticated:
        return redirect(target)
    error = None
    if request.method == "POST":
        caller = caller_for_token(request.form.get("token", ""), config)
        if caller is not None:
            _start_session(caller)
            log.info("dashboard login: %s (role %s)", caller.name, caller.role)
            return redirect(target)
        error = "That is not the service's API token, nor one of its [[tokens]]."
    status = 401 if error else 200  # a 401 counts towards login_rate_limit
    return render_template("dashboard/login.html", error=error, next=target), status


def _start_session(caller: Caller) -> None:
    """A new session id at every login (an id planted before it is worth nothing), the old one ended."""
    store = current_service().engine.store
    previous = session.get(SESSION_KEY)
    if isinstance(previous, str) and previous:
        store.end_login_session(_row_id(previous))
    session_id = secrets.token_urlsafe(32)
    now = utcnow()
    store.start_login_session(
        LoginSession(
            id=_row_id(session_id),
            token_name=caller.name,
            role=caller.role,
            created_at=now,
            expires_at=now + LOGIN_MAX_AGE,
        )
    )
    session.clear()
    session[SESSION_KEY] = session_id


@bp.post("/logout")
def logout() -> ResponseReturnValue:
    session_id = session.get(SESSION_KEY)
    if isinstance(session_id, str) and session_id:
        current_service().engine.store.end_login_session(_row_id(session_id))
    session.clear()
    return redirect(url_for("dashboard.login"))


@bp.errorhandler(429)
def _too_many(exc: Exception) -> ResponseReturnValue:
    message = "Too many failed logins from this address. Wait a minute, then try again."
    page = render_template("dashboard/error.html", title="Too many attempts", message=message)
    return too_many(Response(page, status=429))


# -- what templates know about the caller --------------------------------------------------------------------
@bp.app_template_global()
def login_enabled() -> bool:
    return bool(current_service().config.authenticated)


@bp.app_template_global()
def signed_in() -> Caller | None:
    """Who is logged in (None on the login and error pages of someone who is not)."""
    found: Caller | None = g.get("caller")
    return found


@bp.app_template_global()
def may(role: Role) -> bool:
    """True if the caller has ``role`` or a stronger one: pages show only the buttons that would work."""
    found: Caller | None = g.get("caller")
    return found is not None and found.may(role)


@bp.app_template_global()
def open_access() -> str | None:
    """The warning every page shows while no token is configured."""
    return open_access_warning(current_service().config)
