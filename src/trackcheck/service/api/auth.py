"""Who is calling, and what they may do: the one place that decides, for the API and the dashboard alike.

A caller shows a token (``Authorization: Bearer <token>``, or the dashboard's login form): the single
``api_token`` (an admin named ``api_token``) or one of the ``[[tokens]]`` entries, each with a name and a
role. Roles are ranked, each allowed what the one below it may do and more:

- ``viewer`` reads (runs, plans, schedules; never connections);
- ``runner`` also starts, cancels and reruns runs;
- ``admin`` may do everything: plans, schedules, connections.

``required_role`` is the table of what a request needs; ``refusal`` applies it to a caller. A view learns
who called from ``current_caller()`` (``flask.g.caller``, a ``Caller``). With no token configured the service
listens on loopback only (``ServiceConfig.check``) and every caller is an admin.

Failed authentications (401) are counted per client address (``init_rate_limit``): past
``login_rate_limit`` the address gets 429 with ``Retry-After``, on the API and the login form.
"""

from __future__ import annotations

import hmac
import time
from dataclasses import dataclass
from typing import Any

from flask import Flask, Request, Response, current_app, g, request
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address

from trackcheck.service.api.blueprint import PREFIX, bp, log
from trackcheck.service.app import EXTENSION, error_response
from trackcheck.service.config import Role, ServiceConfig

#: endpoints anyone may read: the API description holds no data
OPEN_ENDPOINTS = frozenset({"api.openapi"})
#: roles in increasing power: each may do what those before it may
ROLES: tuple[Role, ...] = ("viewer", "runner", "admin")
READS = frozenset({"GET", "HEAD", "OPTIONS"})

# -- the table of what a request needs ----------------------------------------------------------------------
#: (endpoint prefix, URL rule prefix, role) that hold for every method, GET included, checked first: what
#: connections hold (hosts, users, masked secrets) is for admins only
ALWAYS: tuple[tuple[str, str, Role], ...] = (
    ("api.connection", f"{PREFIX}/connections", "admin"),
    ("dashboard.connection", "/connections", "admin"),
)
#: writes (POST, PUT, PATCH, DELETE) that need less than admin, by endpoint; every other write needs admin
WRITES: dict[str, Role] = {
    "api.submit_run": "runner",
    "api.submit_batch": "runner",
    "api.cancel_run": "runner",
    "api.rerun": "runner",
    "dashboard.new_run": "runner",
    "dashboard.cancel_run": "runner",
    "dashboard.rerun": "runner",
    "dashboard.logout": "viewer",
}


def required_role(method: str, endpoint: str | None, rule: str | None) -> Role:
    """The least role a request needs: ``ALWAYS`` first, then reads need a viewer, writes ``WRITES`` or admin.

    ``rule`` is the matched URL rule (``/api/runs/<run_id>``), not the raw path, so no spelling of a URL
    reaches a view under another rule."""
    for endpoint_prefix, rule_prefix, role in ALWAYS:
        if (endpoint or "").startswith(endpoint_prefix) or _under(rule, rule_prefix):
            return role
    if method.upper() in READS:
        return "viewer"
    return WRITES.get(endpoint or "", "admin")


def _under(rule: str | None, prefix: str) -> bool:
    return rule is not None and (rule == prefix or rule.startswith(prefix + "/"))


@dataclass(frozen=True)
class Caller:
    """Who made a request: the token's name (what logs show; never the token) and its role."""

    name: str
    role: Role

    def may(self, role: Role) -> bool:
        return ROLES.index(self.role) >= ROLES.index(role)


#: every caller when no token is configured (the service then listens on loopback only)
ANONYMOUS = Caller("anonymous", "admin")


def current_caller() -> Caller:
    """The caller of the current request, as the API's or the dashboard's guard identified it."""
    caller: Caller | None = g.get("caller")
    if caller is None:
        raise RuntimeError("no caller: this request was not authenticated (an open endpoint?)")
    return caller


def refusal(caller: Caller) -> str | None:
    """Why ``caller`` may not make the current request (the 403 detail), or None if it may. A request that
    matched no route is judged by its path: a caller learns which routes exist only where its role reaches."""
    rule = request.url_rule.rule if request.url_rule is not None else request.path
    needed = required_role(request.method, request.endpoint, rule)
    if caller.may(needed):
        return None
    return f"{request.method} {request.path} needs role {needed}; token {caller.name!r} has role {caller.role}"


def log_write(caller: Caller) -> None:
    """One line per write with who made it (the token's name and role, never the token)."""
    if request.method not in READS:
        log.info("%s %s by %s (role %s)", request.method, request.path, caller.name, caller.role)


# -- tokens -------------------------------------------------------------------------------------------------
def credentials(config: ServiceConfig) -> list[tuple[Caller, str]]:
    """Every configured token with its caller: the ``[[tokens]]``, and ``api_token`` as an admin."""
    found = [(Caller(t.name, t.role), t.token.get_secret_value()) for t in config.tokens]
    if config.api_token is not None:
        found.append((Caller("api_token", "admin"), config.api_token.get_secret_value()))
    return found


def caller_for_token(given: str, config: ServiceConfig) -> Caller | None:
    """The caller whose token is ``given``, or None.

    ``given`` is compared with every configured token, each with ``hmac.compare_digest``, and always with
    all of them: how long the answer takes tells neither how much of a guess was right nor which token
    matched."""
    match: Caller | None = None
    for caller, secret in credentials(config):
        if hmac.compare_digest(given.encode(), secret.encode()) and given:
            match = caller
    return match


def is_configured(caller: Caller, config: ServiceConfig) -> bool:
    """True if a token of that name and role is (still) configured: a dashboard login outlives neither."""
    return caller in {known for known, _ in credentials(config)}


def caller_of(req: Request) -> Caller | None:
    """Who sent ``req`` (``Authorization: Bearer <token>``): ``ANONYMOUS`` when no token is configured,
    None when the token is missing or wrong."""
    config: ServiceConfig = current_app.extensions[EXTENSION].config
    if not config.authenticated:
        return ANONYMOUS
    scheme, _, given = req.headers.get("Authorization", "").partition(" ")
    return caller_for_token(given.strip() if scheme.lower() == "bearer" else "", config)


def check_token(req: Request) -> bool:
    """True if ``req`` may use the API at all: no token is configured, or it carries a configured one."""
    return caller_of(req) is not None


def forbidden(detail: str) -> Any:
    return error_response(403, "forbidden", detail)


def unauthorized() -> Any:
    body, status = error_response(401, "unauthorized", "send an API token as 'Authorization: Bearer <token>'")
    body.headers["WWW-Authenticate"] = 'Bearer realm="trackcheck"'
    return body, status


@bp.before_request
def _authenticate() -> Any:
    if request.endpoint in OPEN_ENDPOINTS:
        return None
    caller = caller_of(request)
    if caller is None:
        return unauthorized()
    g.caller = caller
    refused = refusal(caller)
    if refused is not None:
        log.info("refused: %s", refused)
        return forbidden(refused)
    log_write(caller)
    return None


# -- rate limit of failed authentications ---------------------------------------------------------------------
LIMITER = "trackcheck.limiter"


def is_api_request() -> bool:
    return request.path == PREFIX or request.path.startswith(PREFIX + "/")


def _guarded() -> bool:
    """Requests where a token can be guessed: the API (routed or not: an unknown route answers 401 too) and
    the dashboard's login form."""
    return is_api_request() or request.endpoint == "dashboard.login"


def init_rate_limit(app: Flask, config: ServiceConfig) -> Limiter:
    """Count 401 answers (a missing or wrong token, a failed login) per client address; past
    ``login_rate_limit`` the address gets 429 on the API and the login form until the window moves on.

    Only failures count (``deduct_when``): a caller with a good token is never slowed down, but once its
    address is over the limit it waits like a guesser would. The counts live in this process's memory, so
    each gunicorn worker counts separately: with N workers an address may fail up to N times the limit
    before every worker refuses it. Behind a reverse proxy set ``trusted_proxies``, or every client shares
    the proxy's address."""
    limiter = Limiter(
        get_remote_address,
        app=app,
        application_limits=[config.login_rate_limit],
        application_limits_exempt_when=lambda: not _guarded(),
        application_limits_deduct_when=lambda response: response.status_code == 401,
        strategy="moving-window",
        storage_uri="memory://",
        # the default (the endpoint) is empty for an unknown route, which Flask-Limiter never limits
        request_identifier=lambda: request.endpoint or "<no route>",
    )
    app.extensions[LIMITER] = limiter
    return limiter


def retry_after() -> int:
    """Seconds until the current client may try again (the 429's ``Retry-After``)."""
    limiter: Limiter | None = current_app.extensions.get(LIMITER)
    limit = limiter.current_limit if limiter is not None else None
    if limit is None:
        return 60
    return max(1, int(limit.reset_at - time.time()))


def too_many(response: Response) -> Response:
    response.headers["Retry-After"] = str(retry_after())
    return response
