"""Connections over the API and the dashboard: secrets are write-only (never returned, shown masked),
encrypted at rest with the service's secret key, refused when there is no key, kept when a client sends a
masked document back; the state database never holds them in clear."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import create_engine, text

from tests.security.test_uploaded_plans import SQL_STAGE, plan, put_plan, refused, wait_finished, warehouse
from tests.settings import MIN_INTERVAL
from trackcheck.errors import ConfigError
from trackcheck.service.app import EXTENSION, create_app
from trackcheck.service.config import ServiceConfig

CANARY = "conn-canary-" + uuid.uuid4().hex
KEY = "a long enough passphrase for the tests"


@pytest.fixture
def state(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'state.db'}"


@pytest.fixture
def make_client(state: str) -> Iterator[Callable[..., FlaskClient]]:
    apps: list[Flask] = []

    def make(**config: Any) -> FlaskClient:
        for app in apps:  # one deployment at a time on the state database: the newest polls
            app.extensions[EXTENSION].stop()
        apps.clear()
        app = create_app(ServiceConfig(**({"db": state, "min_interval": MIN_INTERVAL} | config)).check())
        app.config["TESTING"] = True
        apps.append(app)
        return app.test_client()

    yield make
    for app in apps:
        app.extensions[EXTENSION].stop()


def stored_rows(state: str) -> list[Any]:
    engine = create_engine(state)
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT name, options, sealed FROM tc_connections")).all()
    engine.dispose()
    return list(rows)


def test_a_secret_is_refused_without_a_key_and_stored_encrypted_with_one(
    make_client: Callable[..., FlaskClient], state: str, postgres_url: str
) -> None:
    url = postgres_url.replace("postgres@", f"postgres:{CANARY}@")
    body = {"name": "wh", "type": "sql", "options": {"url": url}}
    client = make_client()
    refused(client.post("/api/connections", json=body), 409, "TRACKCHECK_SECRET_KEY")
    assert client.get("/api/connections/wh").status_code == 404 and stored_rows(state) == []

    client = make_client(secret_key=KEY)
    created = client.post("/api/connections", json=body)
    assert created.status_code == 201, created.json
    assert created.json["options"]["url"] == url.replace(CANARY, "***").replace(
        "postgresql+psycopg", "postgresql+psycopg"
    )
    assert created.json["origin"] == "api"
    for path in ("/api/connections", "/api/connections/wh", "/connections"):
        assert CANARY not in client.get(path).data.decode()
    [row] = stored_rows(state)
    assert CANARY not in str(row.options) and row.sealed and CANARY not in row.sealed

    # a plan uses it; a client sends back what it read (masked): the stored password is kept
    warehouse(postgres_url, "c1")
    assert put_plan(client, "conn", plan("conn", "  wh: {connection: wh}", SQL_STAGE)).status_code == 201
    shown = client.get("/api/connections/wh").json
    again = client.put("/api/connections/wh", json={"type": shown["type"], "options": shown["options"]})
    assert again.status_code == 200
    [row] = stored_rows(state)
    assert CANARY not in row.sealed
    run = client.post("/api/runs", json={"plan": "conn", "params": {"test_id": "c1"}}).json["id"]
    assert wait_finished(client, run)["status"] == "passed"

    # another key cannot read it: the service says which setting to fix, never the secret
    client = make_client(secret_key="another passphrase and not the first one")
    answer = client.put(
        "/api/plans/conn2", data=plan("conn2", "  wh: {connection: wh}", SQL_STAGE), content_type="application/yaml"
    )
    assert answer.status_code >= 400 and "secret key" in answer.json["detail"] and CANARY not in answer.data.decode()


def test_a_connection_in_use_is_not_deleted_by_accident(
    make_client: Callable[..., FlaskClient], tmp_path: Path
) -> None:
    client = make_client()
    root = str(tmp_path)
    assert (
        client.post("/api/connections", json={"name": "logs", "type": "file", "options": {"root": root}}).status_code
        == 201
    )
    body = plan("uses", "  wh: {connection: logs}", "    path: x.jsonl")
    assert put_plan(client, "uses", body).status_code == 201
    refused(client.delete("/api/connections/logs"), 409, "uses", "force")
    assert client.delete("/api/connections/logs?force=true").status_code == 204


def test_invalid_connections_are_refused_naming_the_key(make_client: Callable[..., FlaskClient]) -> None:
    client = make_client(secret_key=KEY)
    cases = [
        ({"name": "x", "type": "nope"}, "unknown source type"),
        ({"name": "x", "type": "file", "options": {"root": "relative/dir"}}, "root"),
        ({"name": "x", "type": "sql", "options": {"url": f"nonsense{CANARY}"}}, "connection.x.url"),
        ({"name": "x", "type": "sql", "options": {"url": "sqlite:///x", "colour": "red"}}, "connection.x.colour"),
        ({"name": "bad name!", "type": "file", "options": {"root": "/x"}}, "connection name"),
        ({"name": "x", "type": "file", "options": {"root": "/x", "connection": "y"}}, "another connection"),
    ]
    for body, mention in cases:
        detail = refused(client.post("/api/connections", json=body), 400, mention)
        assert CANARY not in detail
    assert client.get("/api/connections").json["connections"] == []


def test_connections_of_the_config_are_listed_masked_and_read_only(
    make_client: Callable[..., FlaskClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BI_TOKEN", CANARY)
    client = make_client(
        connections={
            "bi": {"type": "http", "url": "https://bi.example.com/api", "headers": {"X-Auth": "Bearer ${BI_TOKEN}"}}
        }
    )
    [shown] = client.get("/api/connections").json["connections"]
    assert shown == {
        "name": "bi",
        "type": "http",
        "options": {"url": "https://bi.example.com/api", "headers": {"X-Auth": "***"}},
        "origin": "config",
        "updated_at": None,
    }
    refused(
        client.put("/api/connections/bi", json={"type": "http", "options": {"url": "http://x/"}}),
        409,
        "trackcheck.toml",
    )
    refused(client.delete("/api/connections/bi"), 409, "trackcheck.toml")
    assert CANARY not in client.get("/connections").data.decode()


def test_an_invalid_config_connection_stops_the_service_naming_it() -> None:
    with pytest.raises(ConfigError, match=r"connections\.wh\.url"):
        ServiceConfig(connections={"wh": {"type": "sql", "url": "not a url"}}).check()
    with pytest.raises(ConfigError, match=r"connections\.logs.*root"):
        ServiceConfig(connections={"logs": {"type": "file"}}).check()


def test_the_dashboard_form_adds_a_connection_without_echoing_its_secret(
    make_client: Callable[..., FlaskClient],
) -> None:
    client = make_client(secret_key=KEY)
    form = {"name": "wh", "type": "sql", "options": f"url: postgresql://reader:{CANARY}@db.example.com/events"}
    answer = client.post("/connections", data=form, headers={"Origin": "http://localhost"})
    assert answer.status_code == 303
    page = client.get("/connections").data.decode()
    assert "postgresql://reader:***@db.example.com/events" in page and CANARY not in page
    # a form that fails comes back without the secret typed into it
    answer = client.post("/connections", data=form, headers={"Origin": "http://localhost"})
    assert answer.status_code == 422 and "exists" in answer.data.decode() and CANARY not in answer.data.decode()
