"""The log lines of the requests that start, re-run and cancel runs name the run (and its plan), through the
API and the dashboard alike: what ``--log-format json`` puts in the ``run_id`` and ``plan`` fields."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from flask.testing import FlaskClient

from trackcheck.logs import JsonLines


def about(caplog: pytest.LogCaptureFixture, logger: str) -> list[dict[str, Any]]:
    """The lines of ``logger`` captured so far, as the JSON formatter writes them."""
    formatter = JsonLines()
    return [json.loads(formatter.format(record)) for record in caplog.records if record.name == logger]


def test_api_and_dashboard_requests_that_start_or_end_a_run_log_its_id_and_plan(
    client: FlaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)

    submitted = client.post("/api/runs", json={"plan": "mem", "params": {"test_id": "t1"}})
    rerun = client.post(f"/runs/{submitted.json['id']}/rerun")  # type: ignore[index]
    started = client.post("/runs/new", data={"plan": "mem", "param:test_id": "t2"})
    cancelled = client.post(f"/runs/{submitted.json['id']}/cancel")  # type: ignore[index]

    assert submitted.status_code == 202 and rerun.status_code == started.status_code == cancelled.status_code == 303
    first = submitted.json["id"]  # type: ignore[index]
    again, new = (answer.headers["Location"].rsplit("/", 1)[1] for answer in (rerun, started))
    [api] = [line for line in about(caplog, "trackcheck.api") if "accepted" in line["message"]]
    assert (api["run_id"], api["plan"]) == (first, "mem")
    dashboard = about(caplog, "trackcheck.dashboard")
    assert [(line["run_id"], line.get("plan")) for line in dashboard] == [(again, "mem"), (new, "mem"), (first, None)]
    assert [line["message"] for line in dashboard] == [
        f"run {again} started from the dashboard as a rerun of {first}",
        f"run {new} of plan mem started from the dashboard",
        f"run {first} cancelled from the dashboard",
    ]
