"""Hostile or broken input, and a state database that goes away, end in a clear answer: a 4xx naming the key
or a JSON 503 saying what is down, never a 500 or an HTML error page for a probe.

The service here is a real app on a real PostgreSQL state database (its limits are what this is about:
a text column of 200 characters, no NUL in text, no lone surrogate anywhere).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import Engine, text

from tests.service.conftest import MEM_PLAN
from tests.settings import MIN_INTERVAL
from trackcheck.service.app import EXTENSION, create_app
from trackcheck.service.config import ServiceConfig


@pytest.fixture
def client(postgres_url: str, tmp_path: Path) -> Iterator[FlaskClient]:
    plans = tmp_path / "plans"
    plans.mkdir()
    (plans / "mem.yaml").write_text(MEM_PLAN, encoding="utf-8")
    config = ServiceConfig(db=postgres_url, plans=plans, min_interval=MIN_INTERVAL, allow_inline_sources=True)
    app = create_app(config)
    app.config["TESTING"] = True
    yield app.test_client()
    app.extensions[EXTENSION].stop()


def refused(answer: Any, status: int, *mentions: str) -> None:
    assert answer.status_code == status, (answer.status_code, answer.data[:300])
    assert answer.is_json, answer.data[:300]
    for mention in mentions:
        assert mention in answer.json["detail"], (mention, answer.json)


def test_deep_json_huge_numbers_and_offsets_are_400_naming_them(client: FlaskClient) -> None:
    deep = '{"plan": "mem", "params": ' + "[" * 5000 + "]" * 5000 + "}"
    refused(client.post("/api/runs", data=deep, content_type="application/json"), 400, "nested more than")
    body = {"plan": "mem", "params": {"test_id": "t", "limit": 10**30}}
    refused(client.post("/api/runs", json=body), 400, "params.limit", "64 bits")
    refused(client.get("/api/runs?offset=99999999999999999999"), 400, "'offset'")
    refused(client.post("/api/runs", json={"plan": "mem", "params": {"test_id": "t"}, "interval": "9" * 30 + "d"}), 400)
    assert client.get("/api/runs").json["runs"] == []


def test_nul_and_lone_surrogates_in_a_request_are_400_and_pages_still_work(client: FlaskClient) -> None:
    for value in ("a\x00b", "x\ud800y"):
        raw = json.dumps({"plan": "mem", "params": {"test_id": value}})  # ensure_ascii: \ud800 as JSON sends it
        refused(client.post("/api/runs", data=raw, content_type="application/json"), 400, "params.test_id")
    assert client.get("/api/runs").json["runs"] == []
    for page in ("/", "/plans", "/plans/mem", "/runs/new?plan=mem", "/?plan=%ED%A0%80"):
        assert client.get(page).status_code in (200, 400), page


def test_a_plan_name_longer_than_its_column_or_with_a_newline_is_400_not_503(client: FlaskClient) -> None:
    long_name = "p" * 250
    text_ = MEM_PLAN.replace("name: mem", f"name: {long_name}")
    answer = client.put(f"/api/plans/{long_name}", data=text_, content_type="application/yaml")
    refused(answer, 400, "250 characters")
    answer = client.put("/api/plans/forged%0Aline", data=MEM_PLAN, content_type="application/yaml")
    refused(answer, 400, "control character")
    text_ = MEM_PLAN.replace("name: mem", 'name: "mem\\nINFO forged log line"')
    refused(client.put("/api/plans/x", data=text_, content_type="application/yaml"), 400, "name")


def test_a_cron_that_never_fires_is_refused(client: FlaskClient) -> None:
    body = {"plan": "mem", "cron": "0 0 30 2 *", "params": {"test_id": "t"}}
    refused(client.post("/api/schedules", json=body), 400, "never fires")
    assert client.get("/api/schedules").json["schedules"] == []


def test_with_the_state_database_gone_health_is_json_503_and_pages_say_so(
    client: FlaskClient, postgres_url: str, postgres_admin: Engine
) -> None:
    assert client.get("/healthz").status_code == 200
    name = postgres_url.rsplit("/", 1)[1]
    with postgres_admin.connect() as connection:
        connection.execute(text(f"DROP DATABASE {name} WITH (FORCE)"))
    health = client.get("/healthz")
    assert health.status_code == 503 and health.is_json, health.data[:300]
    assert health.json["ok"] is False and health.json["database"].startswith("unreachable")
    api = client.get("/api/runs")
    assert api.status_code == 503 and api.json["error"] == "state_database_unavailable"
    page = client.get("/")
    assert page.status_code == 503 and b"State database unavailable" in page.data


def test_a_stored_value_with_a_lone_surrogate_is_shown_escaped_not_a_500(tmp_path: Path) -> None:
    """A run stored before requests were checked (or by another client of the engine) holds a lone surrogate:
    every page that shows it still renders, the value as its escape."""
    plans = tmp_path / "plans"
    plans.mkdir()
    (plans / "mem.yaml").write_text(MEM_PLAN, encoding="utf-8")
    config = ServiceConfig(db=f"sqlite:///{tmp_path / 'state.db'}", plans=plans, min_interval=MIN_INTERVAL)
    app = create_app(config)
    try:
        engine = app.extensions[EXTENSION].engine
        version = engine.store.latest_plan("mem")
        assert version is not None
        run_id = engine.submit(version.id, {"test_id": "odd\ud800value"})
        client = app.test_client()
        for page in ("/", f"/runs/{run_id}", "/plans/mem"):
            answer = client.get(page)
            assert answer.status_code == 200, (page, answer.data[:300])
        assert "odd\\ud800value" in client.get(f"/runs/{run_id}").data.decode()
        assert client.get(f"/api/runs/{run_id}").status_code == 200
    finally:
        app.extensions[EXTENSION].stop()
