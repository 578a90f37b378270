"""The Flask app factory: the JSON API under /api, the dashboard under /, /healthz and /metrics.

Each worker process builds one app with its own ``Service`` (engine + lease); views reach it with
``current_service()``. Flask's development server is never used: ``trackcheck serve`` runs gunicorn.
"""

from __future__ import annotations

from typing import Any

from flask import Flask, current_app, jsonify

from trackcheck.service.config import ServiceConfig
from trackcheck.service.runtime import Service

EXTENSION = "trackcheck"


def create_app(
    config: ServiceConfig | None = None, *, service: Service | None = None, load_plans: bool = True
) -> Flask:
    """An app around a started ``Service`` (created from ``config`` unless one is given)."""
    from trackcheck.service import api, dashboard, ops

    if service is None:
        service = Service((config or ServiceConfig()).check()).start(load_plans=load_plans)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = service.config.max_body_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions[EXTENSION] = service
    app.register_blueprint(api.bp, url_prefix="/api")
    app.register_blueprint(ops.bp)
    app.register_blueprint(dashboard.bp)
    return app


def current_service() -> Service:
    service: Service = current_app.extensions[EXTENSION]
    return service


def error_response(status: int, error: str, detail: Any = None) -> Any:
    """The one error shape of the API: ``{"error", "detail"}`` with a 4xx/5xx status."""
    return jsonify({"error": error, "detail": detail}), status
