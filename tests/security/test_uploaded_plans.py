"""A plan sent to the service is data: each attack of the trust-boundary issue, performed through the API
of a real service (state database on SQLite, PostgreSQL and MariaDB), against real databases and HTTP
servers. Every attack gets a 4xx naming the key at fault, stores nothing, and leaks no canary secret."""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import create_engine, text

from tests.integration.http_server import HttpTestServer
from tests.settings import MIN_INTERVAL
from trackcheck.service.app import EXTENSION, create_app
from trackcheck.service.config import ServiceConfig

CANARY = "canary-" + uuid.uuid4().hex  # a secret that must never be shown anywhere
SECRET_KEY = "the operator's passphrase for secrets at rest"
FINISHED = ("passed", "failed", "error", "cancelled")


def plan(name: str, sources: str, stage: str, *, extra: str = "") -> str:
    return f"""
name: {name}
key: event_id
params:
  test_id: {{required: true}}
defaults: {{interval: 200ms, timeout: 20s, backoff: 100ms}}
sources:
{sources}
expect:
  - {{event_id: e1, event: view}}
stages:
  - name: wh
    source: wh
{stage}
    where: {{test_id: "{{test_id}}"}}
    compare: {{with: expect, fields: [event]}}
{extra}"""


SQL_STAGE = "    query: SELECT event_id, event, test_id FROM events"
HTTP_STAGE = "    request: {path: /events}\n    records: items"


@pytest.fixture
def make_client(tmp_path: Path) -> Iterator[Callable[..., FlaskClient]]:
    apps: list[Flask] = []

    def make(**config: Any) -> FlaskClient:
        settings: dict[str, Any] = {"db": f"sqlite:///{tmp_path / 'state.db'}", "min_interval": MIN_INTERVAL} | config
        app = create_app(ServiceConfig(**settings).check())
        app.config["TESTING"] = True
        apps.append(app)
        return app.test_client()

    yield make
    for app in apps:
        app.extensions[EXTENSION].stop()


def put_plan(client: FlaskClient, name: str, body: str) -> Any:
    return client.put(f"/api/plans/{name}", data=body, content_type="application/yaml")


def refused(answer: Any, status: int, *mentions: str) -> str:
    """The answer is the error shape with ``status`` and a detail naming every one of ``mentions``."""
    assert answer.status_code == status, (answer.status_code, answer.data[:500])
    detail = str(answer.json["detail"])
    for mention in mentions:
        assert mention in detail, (mention, detail)
    return detail


def wait_finished(client: FlaskClient, run_id: str, timeout: float = 20.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        document: dict[str, Any] = client.get(f"/api/runs/{run_id}").json  # type: ignore[assignment]
        if document["status"] in FINISHED:
            return document
        assert time.monotonic() < deadline, document
        time.sleep(0.1)


def warehouse(url: str, test_id: str) -> None:
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE events (event_id VARCHAR(20), event VARCHAR(20), test_id VARCHAR(40))"))
        connection.execute(text("INSERT INTO events VALUES ('e1', 'view', :t)"), {"t": test_id})
    engine.dispose()


def table_names(url: str) -> set[str]:
    engine = create_engine(url)
    with engine.connect() as connection:
        names = connection.execute(
            text("SELECT table_name FROM information_schema.tables WHERE table_schema = :s"),
            {"s": "public" if url.startswith("postgresql") else url.rsplit("/", 1)[1]},
        )
        found = {str(row[0]).lower() for row in names}
    engine.dispose()
    return found


# -- the way it should work: connections ----------------------------------------------------------------------
@pytest.mark.parametrize("state", ["sqlite", "postgresql", "mariadb"])
def test_an_uploaded_plan_reads_through_a_connection_and_no_secret_is_ever_shown(
    state: str,
    request: pytest.FixtureRequest,
    postgres_url: str,
    make_client: Callable[..., FlaskClient],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    caplog.set_level(logging.DEBUG)
    warehouse(postgres_url, "t1")
    # the operator's connection takes its password from the server's environment (trust auth ignores it)
    monkeypatch.setenv("WH_PASSWORD", CANARY)
    wh_url = postgres_url.replace("postgres@", "postgres:${WH_PASSWORD}@")
    db = {
        "sqlite": f"sqlite:///{tmp_path / 'state.db'}",
        "postgresql": postgres_url,
        "mariadb": request.getfixturevalue("mariadb_url") if state == "mariadb" else "",
    }[state]
    client = make_client(db=db, connections={"warehouse": {"type": "sql", "url": wh_url}})
    answers: list[bytes] = []

    def keep(answer: Any) -> Any:
        answers.append(answer.data)
        return answer

    assert keep(put_plan(client, "up", plan("up", "  wh: {connection: warehouse}", SQL_STAGE))).status_code == 201
    run = keep(client.post("/api/runs", json={"plan": "up", "params": {"test_id": "t1"}})).json["id"]
    document = wait_finished(client, run)
    assert document["status"] == "passed", document
    for path in ("/api/plans/up", f"/api/runs/{run}", "/api/connections", "/api/connections/warehouse"):
        keep(client.get(path))
    for page in ("/", "/plans", "/plans/up", f"/runs/{run}", "/connections"):
        assert keep(client.get(page)).status_code == 200, page
    assert (
        keep(client.get("/api/connections/warehouse"))
        .json["options"]["url"]
        .startswith("postgresql+psycopg://postgres:***@")
    )
    for data in answers:
        assert CANARY not in data.decode(), data[:300]
    assert CANARY not in caplog.text


# -- uploaded plans are data, not code -------------------------------------------------------------------------
def test_env_references_are_never_expanded_in_an_uploaded_plan_or_a_run_request(
    make_client: Callable[..., FlaskClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TC_HOST_SECRET", CANARY)
    client = make_client(connections={"warehouse": {"type": "sql", "url": "sqlite:////tmp/none.db"}})
    body = plan("envy", "  wh: {connection: warehouse}", SQL_STAGE).replace(
        "  - name: wh", "  - name: wh\n    description: ${TC_HOST_SECRET}"
    )
    detail = refused(put_plan(client, "envy", body), 400, "${TC_HOST_SECRET}", "stages[0] (wh).description")
    assert CANARY not in detail
    assert client.get("/api/plans/envy").status_code == 404

    good = plan("envy", "  wh: {connection: warehouse}", SQL_STAGE)
    assert put_plan(client, "envy", good).status_code == 201
    answer = client.post("/api/runs", json={"plan": "envy", "params": {"test_id": "${TC_HOST_SECRET}"}})
    refused(answer, 400, "params.test_id", "${TC_HOST_SECRET}")
    answer = client.post(
        "/api/runs", json={"plan": "envy", "params": {"test_id": "x"}, "expect": [{"event_id": "${TC_HOST_SECRET}"}]}
    )
    refused(answer, 400, "expect[0].event_id")
    answer = client.post("/api/schedules", json={"plan": "envy", "cron": "0 3 * * *", "params": {"test_id": "${HOME}"}})
    refused(answer, 400, "params.test_id")
    assert client.get("/api/runs").json["runs"] == [] and client.get("/api/schedules").json["schedules"] == []


def test_an_uploaded_plan_must_name_a_connection_unless_the_operator_allows_inline_sources(
    make_client: Callable[..., FlaskClient], tmp_path: Path
) -> None:
    (tmp_path / "secret.txt").write_text(f'{{"event_id": "{CANARY}"}}\n')
    inline = plan("inline", f"  wh: {{type: file, path: {tmp_path}/secret.txt}}", "")
    client = make_client(connections={"logs": {"type": "file", "root": str(tmp_path / "logs")}})
    detail = refused(put_plan(client, "inline", inline), 400, "sources.wh", "connection: NAME", "logs")
    assert "allow_inline_sources" in detail
    assert client.get("/api/plans/inline").status_code == 404
    detail = refused(
        put_plan(client, "inline", plan("inline", "  wh: {connection: nope}", "")), 400, "unknown connection 'nope'"
    )
    refused(
        put_plan(client, "inline", plan("inline", "  wh: {connection: logs, path: /etc/passwd}", "")),
        400,
        "sources.wh.path",
        "belongs in the connection",
    )


def test_inline_sources_of_uploaded_plans_stay_off_private_networks_and_the_state_database(
    make_client: Callable[..., FlaskClient], tmp_path: Path
) -> None:
    state = tmp_path / "state.db"
    client = make_client(db=f"sqlite:///{state}", allow_inline_sources=True)
    with HttpTestServer() as server:
        server.reply("/events", {"items": [{"event_id": "e1", "leak": CANARY}]})
        for url, what in (
            (server.url, "loopback"),
            ("http://169.254.169.254/latest/meta-data/", "link-local"),
            ("http://10.1.2.3/", "private"),
            ("http://[::1]:9/", "loopback"),
        ):
            body = plan(
                "ssrf", f"  wh: {{type: http, url: '{url}'}}", "    request: {path: /events}\n    records: items"
            )
            refused(put_plan(client, "ssrf", body), 400, "sources.wh", what)
        assert server.requests == []  # nothing was even tried
    for spec, what in (
        ("{type: redis, url: 'redis://127.0.0.1:6379/0'}", "loopback"),
        ("{type: sql, url: 'postgresql://postgres@127.0.0.1:5432/postgres'}", "loopback"),
        ("{type: sql, url: 'mysql://root@169.254.169.254/test'}", "link-local"),
    ):
        body = plan(
            "inside", f"  wh: {spec}", "    table: events" if "sql" in spec else "    redis: {kind: list, key: k}"
        )
        refused(put_plan(client, "inside", body), 400, "sources.wh", what)
    for url in (f"sqlite:///{state}", f"sqlite:///{tmp_path}/../{tmp_path.name}/state.db"):
        body = plan("own", f"  wh: {{type: sql, url: '{url}'}}", "    table: tc_connections")
        refused(put_plan(client, "own", body), 400, "sources.wh.url", "state database")
    hook = plan(
        "hook", "  wh: {type: file, path: x.jsonl}", "", extra="notify: {webhook: 'http://169.254.169.254/hook'}"
    )
    refused(put_plan(client, "hook", hook), 400, "notify.webhook", "link-local")
    assert client.get("/api/plans").json["plans"] == []


def test_inline_bus_sources_and_emits_of_uploaded_plans_stay_off_private_networks(
    make_client: Callable[..., FlaskClient],
) -> None:
    """A message bus is a network host like any: an uploaded plan may not read, or send to, one on the
    service's own networks (the brokers of this machine listen on loopback) unless the operator allows it."""
    client = make_client(allow_inline_sources=True)
    for spec, stage, what in (
        ("{type: kafka, bootstrap: '127.0.0.1:9092'}", "    topic: events", "loopback"),
        ("{type: kafka, bootstrap: ['8.8.8.8:9092', '10.0.0.7:9092']}", "    topic: events", "private"),
        ("{type: rabbitmq, url: 'amqp://guest:guest@127.0.0.1:5672/'}", "    stream: events", "loopback"),
        ("{type: nats, url: 'nats://169.254.169.254:4222'}", "    subject: events", "link-local"),
        ("{type: mqtt, url: 'mqtt://[::1]:1883'}", "    topic: events", "loopback"),
    ):
        refused(put_plan(client, "bus", plan("bus", f"  wh: {spec}", stage)), 400, "sources.wh", what)
    # emit: sends through a source of the plan: the same rule, before anything is sent
    emitting = plan(
        "emitter",
        "  wh: {type: http, url: 'http://127.0.0.1:9/'}",
        "    request: {path: /events}\n    records: items",
        extra="emit: {source: wh, format: segment}",
    )
    refused(put_plan(client, "emitter", emitting), 400, "sources.wh", "loopback")
    assert client.get("/api/plans").json["plans"] == []


def test_the_operator_may_allow_private_networks_for_inline_sources(
    make_client: Callable[..., FlaskClient], tmp_path: Path
) -> None:
    client = make_client(allow_inline_sources=True, allow_private_networks=True)
    with HttpTestServer() as server:
        server.reply("/events", {"items": [{"event_id": "e1", "event": "view", "test_id": "p1"}]})
        body = plan(
            "lan", f"  wh: {{type: http, url: '{server.url}'}}", "    request: {path: /events}\n    records: items"
        )
        assert put_plan(client, "lan", body).status_code == 201
        run = client.post("/api/runs", json={"plan": "lan", "params": {"test_id": "p1"}}).json["id"]
        assert wait_finished(client, run)["status"] == "passed"


def test_schema_files_of_uploaded_plans_stay_in_the_plans_folder(
    make_client: Callable[..., FlaskClient], tmp_path: Path
) -> None:
    plans = tmp_path / "plans"
    plans.mkdir()
    (plans / "event.json").write_text(json.dumps({"type": "object"}))
    (tmp_path / "outside.json").write_text(json.dumps({"type": "object", "description": CANARY}))
    (plans / "link.json").symlink_to(tmp_path / "outside.json")
    client = make_client(plans=plans, connections={"logs": {"type": "file", "root": str(tmp_path)}})
    stage = "    path: x.jsonl\n    schema: {schema}"
    for schema in ("/etc/passwd", "../outside.json", "link.json"):
        body = plan("schemas", "  wh: {connection: logs}", stage.format(schema=schema))
        detail = refused(put_plan(client, "schemas", body), 400, "stages[0] (wh).schema", "plans folder")
        assert CANARY not in detail
    body = plan("schemas", "  wh: {connection: logs}", stage.format(schema="event.json"))
    assert put_plan(client, "schemas", body).status_code == 201


# -- one read-only statement, through the API, on the real servers ----------------------------------------------
ESCAPES = [
    "SELECT 1) x; COMMIT; SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE; "
    "CREATE TABLE pwned (i int); SELECT * FROM (SELECT 1",
    "SELECT * FROM events; CREATE TABLE pwned (i int)",
    "WITH gone AS (DELETE FROM events RETURNING *) SELECT * FROM gone",
    "CREATE TABLE pwned AS SELECT * FROM events",
]


@pytest.mark.parametrize("server", ["postgres", "mariadb"])
@pytest.mark.parametrize("query", ESCAPES)
def test_a_query_that_would_write_is_refused_at_upload_and_creates_nothing(
    server: str, query: str, request: pytest.FixtureRequest, make_client: Callable[..., FlaskClient]
) -> None:
    url: str = request.getfixturevalue(f"{server}_url")
    warehouse(url, "q1")
    client = make_client(connections={"warehouse": {"type": "sql", "url": url}})
    body = plan("writer", "  wh: {connection: warehouse}", f"    query: {json.dumps(query)}")
    refused(put_plan(client, "writer", body), 400, "stage 'wh'", "query")
    assert client.get("/api/plans/writer").status_code == 404
    assert "pwned" not in table_names(url)


@pytest.mark.parametrize(
    ("server", "query"),
    [
        ("postgres", "SELECT pg_read_file('/etc/passwd') AS event_id"),
        ("postgres", "SELECT * FROM dblink('host=169.254.169.254', 'select 1') AS t(event_id text)"),
        ("postgres", "SELECT lo_import('/etc/passwd') AS event_id"),
        ("mariadb", "SELECT LOAD_FILE('/etc/passwd') AS event_id"),
        ("mariadb", "SELECT event_id FROM events INTO OUTFILE '/tmp/trackcheck-pwned'"),
    ],
)
def test_a_query_that_reaches_the_servers_files_or_network_is_refused(
    server: str, query: str, request: pytest.FixtureRequest, make_client: Callable[..., FlaskClient]
) -> None:
    url: str = request.getfixturevalue(f"{server}_url")
    client = make_client(connections={"warehouse": {"type": "sql", "url": url}})
    body = plan("reader", "  wh: {connection: warehouse}", f"    query: {json.dumps(query)}")
    refused(put_plan(client, "reader", body), 400, "query")
    assert not os.path.exists("/tmp/trackcheck-pwned")


# -- files stay under the connection's root ---------------------------------------------------------------------
def test_a_file_connection_keeps_uploaded_plans_under_its_root(
    make_client: Callable[..., FlaskClient], tmp_path: Path
) -> None:
    root = tmp_path / "logs"
    root.mkdir()
    (tmp_path / "private.jsonl").write_text(json.dumps({"event_id": "e1", "event": CANARY, "test_id": "f1"}) + "\n")
    (root / "events.jsonl").write_text(json.dumps({"event_id": "e1", "event": "view", "test_id": "f1"}) + "\n")
    (root / "sneaky.jsonl").symlink_to(tmp_path / "private.jsonl")
    client = make_client(connections={"logs": {"type": "file", "root": str(root)}})
    for path in ("/etc/passwd", "../private.jsonl", "~/.ssh/id_rsa"):
        body = plan("files", "  wh: {connection: logs}", f"    path: '{path}'")
        refused(put_plan(client, "files", body), 400, "stage 'wh'", "path", "root")
    body = plan("files", "  wh: {connection: logs}", "    path: 'sneaky.jsonl'")
    assert put_plan(client, "files", body).status_code == 201
    run = client.post("/api/runs", json={"plan": "files", "params": {"test_id": "f1"}}).json["id"]
    time.sleep(1)
    client.post(f"/api/runs/{run}/cancel")
    for path in (f"/api/runs/{run}", f"/api/runs/{run}/records/wh", f"/api/runs/{run}/polls"):
        assert CANARY not in client.get(path).data.decode()
    body = plan("files", "  wh: {connection: logs}", "    path: 'events.jsonl'")
    assert put_plan(client, "files", body).status_code == 201
    run = client.post("/api/runs", json={"plan": "files", "params": {"test_id": "f1"}}).json["id"]
    assert wait_finished(client, run)["status"] == "passed"


# -- secrets in uploaded plans and webhooks -------------------------------------------------------------------
def test_literal_secrets_of_an_uploaded_plan_are_refused_without_a_key_and_encrypted_with_one(
    make_client: Callable[..., FlaskClient], tmp_path: Path
) -> None:
    state = tmp_path / "state.db"
    with HttpTestServer() as server:
        server.reply("/events", {"items": [{"event_id": "e1", "event": "view", "test_id": "s1"}]})
        url = server.url.replace("http://", f"http://reader:{CANARY}@")
        body = plan("lit", f"  wh: {{type: http, url: '{url}'}}", HTTP_STAGE)
        inline = {"allow_inline_sources": True, "allow_private_networks": True}
        client = make_client(db=f"sqlite:///{state}", **inline)
        refused(put_plan(client, "lit", body), 409, "secret key", "TRACKCHECK_SECRET_KEY")
        assert client.get("/api/plans/lit").status_code == 404
        client.application.extensions[EXTENSION].stop()  # one deployment, one key: the next one polls

        client = make_client(db=f"sqlite:///{state}", secret_key=SECRET_KEY, **inline)
        assert put_plan(client, "lit", body).status_code == 201
        assert put_plan(client, "lit", body).status_code == 200  # unchanged: no new version
        run = client.post("/api/runs", json={"plan": "lit", "params": {"test_id": "s1"}}).json["id"]
        assert wait_finished(client, run)["status"] == "passed"
        assert server.requests[0].headers["authorization"].startswith("Basic ")  # the real password was used
    engine = create_engine(f"sqlite:///{state}")
    with engine.connect() as connection:
        stored = connection.execute(text("SELECT text, sealed FROM tc_plans WHERE name = 'lit'")).all()
    engine.dispose()
    assert stored and all(CANARY not in row.text and row.sealed and CANARY not in row.sealed for row in stored)
    assert CANARY not in client.get("/api/plans/lit").data.decode()


def test_a_webhook_body_holds_no_secret(make_client: Callable[..., FlaskClient], postgres_url: str) -> None:
    warehouse(postgres_url, "w1")
    wh_url = postgres_url.replace("postgres@", f"postgres:{CANARY}@")
    with HttpTestServer() as hooks:
        hooks.reply("/hook", {"ok": True})
        client = make_client(
            allow_private_networks=True,
            secret_key=SECRET_KEY,
            connections={"warehouse": {"type": "sql", "url": wh_url}},
        )
        extra = f"notify: {{webhook: '{hooks.url}/hook', secret: hmac-{CANARY}}}"
        body = plan("hooked", "  wh: {connection: warehouse}", SQL_STAGE, extra=extra)
        assert put_plan(client, "hooked", body).status_code == 201
        run = client.post("/api/runs", json={"plan": "hooked", "params": {"test_id": "w1"}}).json["id"]
        assert wait_finished(client, run)["status"] == "passed"
        received = hooks.wait_for_requests(1, timeout=15)
    assert received[0].json()["run_id"] == run
    assert CANARY not in received[0].body.decode()
    assert CANARY not in client.get("/api/plans/hooked").data.decode()
