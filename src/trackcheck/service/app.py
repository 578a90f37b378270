"""The Flask app factory: the JSON API under /api, the dashboard under /, /healthz and /metrics.

Each worker process builds one app with its own ``Service`` (engine + lease); views reach it with
``current_service()``. Flask's development server is never used: ``trackcheck serve`` runs gunicorn.
"""

from __future__ import annotations

from typing import Any

from flask import Flask, current_app, jsonify, request
from flask.sessions import SecureCookieSessionInterface
from flask_openapi3 import OpenAPI
from werkzeug.middleware.proxy_fix import ProxyFix

from trackcheck.service.config import ServiceConfig
from trackcheck.service.runtime import Service

EXTENSION = "trackcheck"


class SessionCookies(SecureCookieSessionInterface):
    """The dashboard's signed session cookie, ``Secure`` as ``cookie_secure`` says: ``always``, ``never``, or
    ``auto``: when the request came over https (as told by ``trusted_proxies`` proxies in front)."""

    def __init__(self, secure: str = "auto") -> None:
        self.secure = secure

    def get_cookie_secure(self, app: Flask) -> bool:
        if self.secure == "always":
            return True
        if self.secure == "never":
            return False
        return request.is_secure


def create_app(
    config: ServiceConfig | None = None, *, service: Service | None = None, load_plans: bool = True
) -> Flask:
    """An app around a started ``Service`` (created from ``config`` unless one is given)."""
    from trackcheck.service import api, dashboard, ops

    if service is None:
        service = Service((config or ServiceConfig()).check()).start(load_plans=load_plans)
    config = service.config
    app = OpenAPI(__name__, **api.docs.app_options())
    app.config["MAX_CONTENT_LENGTH"] = config.max_body_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions[EXTENSION] = service
    app.session_interface = SessionCookies(config.cookie_secure)
    if config.trusted_proxies:
        # believe the last N proxies' X-Forwarded-For/-Proto: the client address (rate limit, logs) and https
        # (the cookie's Secure flag) are then the client's, not the proxy's
        n = config.trusted_proxies
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n)  # type: ignore[method-assign]
    api.auth.init_rate_limit(app, config)
    app.register_api(api.bp, url_prefix="/api")
    app.register_blueprint(api.docs.docs)
    app.register_blueprint(ops.bp)
    app.register_blueprint(dashboard.bp)
    return app


def current_service() -> Service:
    service: Service = current_app.extensions[EXTENSION]
    return service


def error_response(status: int, error: str, detail: Any = None) -> Any:
    """The one error shape of the API: ``{"error", "detail"}`` with a 4xx/5xx status."""
    return jsonify({"error": error, "detail": detail}), status
