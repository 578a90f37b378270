"""Operations endpoints, open without a token (probes and scrapers carry none): ``/healthz`` and ``/metrics``.

Neither reveals a credential: health names what is wrong (database errors are masked by the store) and
metrics are counts and durations by status and source type.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, jsonify
from flask.blueprints import BlueprintSetupState
from flask.sansio.app import App
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from trackcheck.service.app import EXTENSION, current_service
from trackcheck.service.metrics import Metrics, metrics_for

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


@bp.get("/metrics")
def metrics() -> Response:
    registry: Metrics = current_app.extensions.get(METRICS) or install_metrics(current_app)
    response = Response(registry.render(), content_type=CONTENT_TYPE_PLAIN_0_0_4)  # understood by every Prometheus
    response.headers["Cache-Control"] = "no-store"
    return response
