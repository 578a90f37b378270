"""Operations endpoints, open without a token (probes and scrapers carry none): ``/healthz`` and ``/metrics``.

Neither reveals a credential: health names what is wrong (database errors are masked by the store) and
metrics are counts and durations by status and source type.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request
from flask.blueprints import BlueprintSetupState
from flask.sansio.app import App
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.exceptions import HTTPException

from trackcheck.errors import TrackcheckError
from trackcheck.plan.masking import mask_url_passwords
from trackcheck.service.app import EXTENSION, current_service
from trackcheck.service.metrics import Metrics, metrics_for
from trackcheck.store.database import describe_db_error

log = logging.getLogger("trackcheck.service")
bp = Blueprint("ops", __name__)
METRICS = "trackcheck.metrics"


@bp.record_once
def _wire_metrics(state: BlueprintSetupState) -> None:
    """Count source queries from the moment the app exists (create_app stores the service before it
    registers blueprints), not from the first scrape."""
    install_metrics(state.app)


def install_metrics(app: App) -> Metrics:
    metrics = metrics_for(app.extensions[EXTENSION].engine)
    app.extensions[METRICS] = metrics
    return metrics


@bp.get("/healthz")
def healthz() -> Any:
    """200 with the facts when the database answers and a poller is alive somewhere; 503 otherwise."""
    facts = current_service().health()
    return jsonify(facts), 200 if facts.get("ok") else 503


@bp.errorhandler(Exception)
def _failed(exc: Exception) -> Any:
    """A probe reads JSON whatever happens: an error before or in a check (an app-wide hook that needed the
    state database, say) is a 503 with the reason, never an HTML 500 page."""
    if isinstance(exc, HTTPException):
        return exc
    if isinstance(exc, TrackcheckError | SQLAlchemyError):
        reason = mask_url_passwords(exc.message if isinstance(exc, TrackcheckError) else describe_db_error(exc))
    else:
        log.exception("%s %s failed", request.method, request.path)
        reason = f"{type(exc).__name__} (the service log has the details)"
    return jsonify({"ok": False, "error": reason}), 503


@bp.get("/metrics")
def metrics() -> Response:
    registry: Metrics = current_app.extensions.get(METRICS) or install_metrics(current_app)
    response = Response(registry.render(), content_type=CONTENT_TYPE_PLAIN_0_0_4)  # understood by every Prometheus
    response.headers["Cache-Control"] = "no-store"
    return response
