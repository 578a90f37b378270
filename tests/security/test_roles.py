"""Who may do what: viewer, runner and admin tokens against a real service (Flask app, SQLite state, the
poller running), through the API and the dashboard."""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.service import conftest as service
from tests.service.conftest import MEM_PLAN
from trackcheck.service.api.auth import ALWAYS, Caller, required_role

#: the real service apps of tests/service (SQLite state in tmp_path, the mem plan, the poller running)
make_app, plans_dir = service.make_app, service.plans_dir

ADMIN = "admin-t0ken-0123456789"
RUNNER = "runner-t0ken-0123456789"
VIEWER = "viewer-t0ken-0123456789"
TOKENS = [
    {"name": "ops", "role": "admin", "token": ADMIN},
    {"name": "ci", "role": "runner", "token": RUNNER},
    {"name": "dash", "role": "viewer", "token": VIEWER},
]
RUN = {"plan": "mem", "params": {"test_id": "roles"}}
SCHEDULE = {"plan": "mem", "cron": "10 2 * * *", "params": {"test_id": "s"}}
YAML = {"data": MEM_PLAN, "content_type": "application/yaml"}
CONNECTION = {"name": "wh", "type": "sql", "options": {"url": "sqlite:///wh.db"}}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def app(make_app: Callable[..., Flask]) -> Flask:
    return make_app(tokens=TOKENS)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def call(client: FlaskClient, token: str, method: str, path: str, **kwargs: Any) -> Any:
    return getattr(client, method)(path, headers=bearer(token), **kwargs)


def assert_forbidden(answer: Any, needed: str, name: str, role: str) -> None:
    assert answer.status_code == 403, (answer.status_code, answer.data[:300])
    assert answer.json["error"] == "forbidden"
    assert f"needs role {needed}; token '{name}' has role {role}" in answer.json["detail"], answer.json


def submit(client: FlaskClient, token: str = ADMIN) -> str:
    answer = call(client, token, "post", "/api/runs", json=RUN)
    assert answer.status_code == 202, answer.json
    run_id: str = answer.json["id"]
    return run_id


def state(client: FlaskClient) -> tuple[int, list[str], int]:
    """Runs, plans and schedules as an admin sees them: what a refused request must not have changed."""
    runs = call(client, ADMIN, "get", "/api/runs").json["total"]
    plans = [p["name"] for p in call(client, ADMIN, "get", "/api/plans").json["plans"]]
    schedules = len(call(client, ADMIN, "get", "/api/schedules").json["schedules"])
    return runs, plans, schedules


# -- the API ---------------------------------------------------------------------------------------------------
def test_a_viewer_reads_everything_but_connections_and_may_write_nothing(client: FlaskClient) -> None:
    run_id = submit(client)
    call(client, ADMIN, "post", "/api/schedules", json=SCHEDULE)
    before = state(client)
    for path in ("/api/runs", f"/api/runs/{run_id}", f"/api/runs/{run_id}/polls", "/api/plans", "/api/plans/mem"):
        assert call(client, VIEWER, "get", path).status_code == 200, path
    assert call(client, VIEWER, "get", "/api/schedules").json["schedules"]

    for method, path, kwargs, needed in [
        ("post", "/api/runs", {"json": RUN}, "runner"),
        ("post", f"/api/runs/{run_id}/cancel", {}, "runner"),
        ("post", f"/api/runs/{run_id}/rerun", {}, "runner"),
        ("put", "/api/plans/mem", YAML, "admin"),
        ("put", "/api/plans/other", YAML, "admin"),
        ("delete", "/api/plans/mem", {}, "admin"),
        ("post", "/api/schedules", {"json": SCHEDULE}, "admin"),
        ("get", "/api/connections", {}, "admin"),
    ]:
        assert_forbidden(call(client, VIEWER, method, path, **kwargs), needed, "dash", "viewer")
    assert state(client) == before
    assert call(client, ADMIN, "get", f"/api/runs/{run_id}").json["status"] == "running"  # not cancelled


def test_a_runner_starts_cancels_and_reruns_but_changes_no_plan_schedule_or_connection(client: FlaskClient) -> None:
    run_id = submit(client, RUNNER)
    cancelled = call(client, RUNNER, "post", f"/api/runs/{run_id}/cancel")
    assert cancelled.status_code == 200 and cancelled.json["status"] == "cancelled"
    rerun = call(client, RUNNER, "post", f"/api/runs/{run_id}/rerun")
    assert rerun.status_code == 202 and rerun.json["id"] != run_id
    schedule_id = call(client, ADMIN, "post", "/api/schedules", json=SCHEDULE).json["id"]
    before = state(client)

    for method, path, kwargs in [
        ("put", "/api/plans/mem", YAML),
        ("put", "/api/plans/fresh", YAML),
        ("delete", "/api/plans/mem", {}),
        ("post", "/api/schedules", {"json": SCHEDULE}),
        ("put", f"/api/schedules/{schedule_id}", {"json": SCHEDULE | {"cron": "1 1 * * *"}}),
        ("patch", f"/api/schedules/{schedule_id}", {"json": {"paused": True}}),
        ("delete", f"/api/schedules/{schedule_id}", {}),
    ]:
        assert_forbidden(call(client, RUNNER, method, path, **kwargs), "admin", "ci", "runner")
    # every URL under /api/connections, whatever the method, routed or not: connections hold secrets
    for method, path, kwargs in [
        ("get", "/api/connections", {}),
        ("get", "/api/connections/wh", {}),
        ("post", "/api/connections", {"json": CONNECTION}),
        ("put", "/api/connections/wh", {"json": CONNECTION}),
        ("delete", "/api/connections/wh", {}),
        ("get", "/api/connections/wh/no-such-route", {}),
        ("patch", "/api/connections/wh", {"json": {}}),
    ]:
        assert_forbidden(call(client, RUNNER, method, path, **kwargs), "admin", "ci", "runner")
    assert state(client) == before


def test_an_admin_may_do_everything(client: FlaskClient) -> None:
    run_id = submit(client)
    assert call(client, ADMIN, "post", f"/api/runs/{run_id}/cancel").status_code == 200
    assert call(client, ADMIN, "post", f"/api/runs/{run_id}/rerun").status_code == 202
    assert call(client, ADMIN, "put", "/api/plans/mem", **YAML).status_code in (200, 201)
    schedule = call(client, ADMIN, "post", "/api/schedules", json=SCHEDULE)
    assert schedule.status_code == 201
    assert call(client, ADMIN, "delete", f"/api/schedules/{schedule.json['id']}").status_code == 204
    assert call(client, ADMIN, "get", "/api/connections").status_code == 200
    assert call(client, ADMIN, "delete", "/api/plans/mem").status_code == 204


def test_api_token_is_an_admin_named_api_token(make_app: Callable[..., Flask]) -> None:
    client = make_app(api_token="single-admin-t0ken", tokens=TOKENS[2:]).test_client()
    assert call(client, "single-admin-t0ken", "put", "/api/plans/mem", **YAML).status_code in (200, 201)
    assert_forbidden(call(client, VIEWER, "delete", "/api/plans/mem"), "admin", "dash", "viewer")


def test_a_wrong_or_missing_token_is_401_before_any_role_is_considered(client: FlaskClient) -> None:
    for n, headers in enumerate(
        ({}, bearer("viewer-t0ken-012345678"), bearer(VIEWER + "x"), {"Authorization": VIEWER})
    ):
        address = {"REMOTE_ADDR": f"10.0.0.{n + 1}"}  # each its own: 12 failures from one would be rate limited
        for method, path in (("get", "/api/runs"), ("post", "/api/runs"), ("get", "/api/connections")):
            answer = getattr(client, method)(path, headers=headers, environ_base=address)
            assert answer.status_code == 401, (headers, path, answer.json)
            assert answer.json["error"] == "unauthorized" and "Bearer" in answer.json["detail"]


def test_every_configured_token_is_compared_in_constant_time_whichever_matches(
    client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    compared: list[bytes] = []
    real = hmac.compare_digest

    def spy(given: bytes, expected: bytes) -> bool:
        compared.append(expected)
        return real(given, expected)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    every = sorted(t["token"].encode() for t in TOKENS)
    for token in (ADMIN, VIEWER, "not-a-token-at-all-0000"):
        compared.clear()
        client.get("/api/runs", headers=bearer(token))
        assert sorted(compared) == every, token  # the first match does not stop the comparisons


def test_writes_are_logged_with_the_token_name_never_the_token(
    client: FlaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="trackcheck"):
        submit(client, RUNNER)
        call(client, VIEWER, "get", "/api/runs")
    writes = [r.getMessage() for r in caplog.records if "by ci (role runner)" in r.getMessage()]
    assert writes == ["POST /api/runs by ci (role runner)"]
    assert not any(token in caplog.text for token in (ADMIN, RUNNER, VIEWER))


def test_the_role_table_is_one_function_with_connections_admin_for_every_method() -> None:
    assert required_role("GET", "api.list_runs", "/api/runs") == "viewer"
    assert required_role("POST", "api.submit_run", "/api/runs") == "runner"
    assert required_role("PUT", "api.put_plan", "/api/plans/<name>") == "admin"
    assert required_role("POST", "api.some_future_write", "/api/future") == "admin"  # writes default to admin
    for endpoint, rule in [
        ("api.list_connections", "/api/connections"),
        ("api.connection_test", "/api/anything"),
        ("dashboard.connections", "/connections"),
        ("dashboard.other", "/connections/<name>"),
    ]:
        assert required_role("GET", endpoint, rule) == "admin", (endpoint, rule)
    assert any(prefix == "api.connection" for prefix, _, _ in ALWAYS)
    assert Caller("x", "admin").may("runner") and not Caller("x", "viewer").may("runner")


# -- the dashboard ---------------------------------------------------------------------------------------------
def login(client: FlaskClient, token: str) -> None:
    answer = client.post("/login", data={"token": token})
    assert answer.status_code == 302, answer.data[:300]


def test_the_dashboard_shows_each_role_only_what_it_may_use(client: FlaskClient) -> None:
    run_id = submit(client)
    viewer = client.application.test_client()
    login(viewer, VIEWER)
    page = viewer.get(f"/runs/{run_id}").get_data(as_text=True)
    assert 'id="account-name">dash<' in page and 'id="account-role">viewer<' in page
    assert "Cancel run" not in page and "Run again" not in page and "Start a run" not in page
    assert "Start a run" not in viewer.get("/plans").get_data(as_text=True)
    form = viewer.get("/runs/new?plan=mem").get_data(as_text=True)
    assert 'id="start-run"' not in form and "needs role runner" in form
    total = call(client, ADMIN, "get", "/api/runs").json["total"]
    for path in ("/runs/new", f"/runs/{run_id}/cancel", f"/runs/{run_id}/rerun"):
        refused = viewer.post(path, data={"plan": "mem", "param:test_id": "v"})
        assert refused.status_code == 403, path
        assert "needs role runner; token &#39;dash&#39; has role viewer" in refused.get_data(as_text=True)
    assert call(client, ADMIN, "get", "/api/runs").json["total"] == total
    assert call(client, ADMIN, "get", f"/api/runs/{run_id}").json["status"] == "running"

    runner = client.application.test_client()
    login(runner, RUNNER)
    page = runner.get(f"/runs/{run_id}").get_data(as_text=True)
    assert "Cancel run" in page and "Run again" in page and 'id="account-role">runner<' in page
    started = runner.post("/runs/new", data={"plan": "mem", "param:test_id": "r"})
    assert started.status_code == 303 and "/runs/" in started.headers["Location"]
    assert runner.post(f"/runs/{run_id}/cancel").status_code == 303
    assert call(client, ADMIN, "get", f"/api/runs/{run_id}").json["status"] == "cancelled"

    # schedules: a runner sees them, but creating, editing, pausing and deleting one needs an admin
    schedule_id = call(client, ADMIN, "post", "/api/schedules", json=SCHEDULE).json["id"]
    listed = runner.get("/schedules").get_data(as_text=True)
    assert f'data-schedule="{schedule_id}"' in listed and "New schedule" not in listed and ">Pause<" not in listed
    assert "needs role admin" in runner.get("/schedules/new?plan=mem").get_data(as_text=True)
    before = call(client, ADMIN, "get", f"/api/schedules/{schedule_id}").json
    for path in ("/schedules/new", f"/schedules/{schedule_id}/edit", f"/schedules/{schedule_id}/pause",
                 f"/schedules/{schedule_id}/delete"):  # fmt: skip
        refused = runner.post(path, data={"plan": "mem", "cron": "1 1 * * *", "param:test_id": "x", "paused": "1"})
        assert refused.status_code == 403 and "needs role admin" in refused.get_data(as_text=True), path
    assert call(client, ADMIN, "get", "/api/schedules").json["schedules"] == [before]
    admin = client.application.test_client()
    login(admin, ADMIN)
    assert admin.post(f"/schedules/{schedule_id}/pause", data={"paused": "1"}).status_code == 303
    assert call(client, ADMIN, "get", f"/api/schedules/{schedule_id}").json["next_run_time"] is None


def test_without_a_token_everyone_is_admin_and_every_page_says_so(
    make_app: Callable[..., Flask], caplog: pytest.LogCaptureFixture
) -> None:
    warning = (
        "No API token is configured: anyone who can reach 127.0.0.1:8000 is an admin. "
        "Set [[tokens]] or TRACKCHECK_API_TOKEN."
    )
    from trackcheck.service.runtime import _warn_once

    _warn_once.cache_clear()  # once per process: earlier tests of this process may have warned already
    with caplog.at_level(logging.WARNING, logger="trackcheck.service"):
        client = make_app().test_client()
        make_app().test_client()
    warned = [r.getMessage() for r in caplog.records if r.name == "trackcheck.service" and r.levelno >= logging.WARNING]
    assert warned == [warning]

    assert client.put("/api/plans/mem", data=MEM_PLAN, content_type="application/yaml").status_code in (200, 201)
    assert client.get("/api/connections").status_code == 200
    assert client.post("/api/runs", json=RUN).status_code == 202
    for path in ("/", "/plans", "/schedules", "/runs/new", "/runs/no-such-run"):
        page = client.get(path).get_data(as_text=True)
        assert 'id="open-access"' in page and warning in page, path
    assert "Start a run" in client.get("/").get_data(as_text=True)


def test_the_dashboard_connections_page_is_for_admins_only(client: FlaskClient) -> None:
    for token, name, role in ((VIEWER, "dash", "viewer"), (RUNNER, "ci", "runner")):
        browser = client.application.test_client()
        login(browser, token)
        for method in ("get", "post"):
            refused = getattr(browser, method)("/connections")
            assert refused.status_code == 403, (role, method)
            assert f"needs role admin; token &#39;{name}&#39; has role {role}" in refused.get_data(as_text=True)
    admin = client.application.test_client()
    login(admin, ADMIN)
    assert admin.get("/connections").status_code == 200


def test_with_tokens_no_banner_is_shown(client: FlaskClient) -> None:
    login(client, VIEWER)
    assert 'id="open-access"' not in client.get("/").get_data(as_text=True)
