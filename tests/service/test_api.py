"""The JSON API against a real service (SQLite state, APScheduler polling in the background)."""

from __future__ import annotations

import hmac
import json
import logging
import socket
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, request
from flask.testing import FlaskClient

from tests.service.conftest import MEM_PLAN, rows, wait_finished
from trackcheck.service import api
from trackcheck.service.app import EXTENSION
from trackcheck.service.runtime import Service
from trackcheck.testing import MemorySource

TOKEN = "t0ken-correct-horse"
SECRET = "hunter2-pw"


def service_of(app: Flask) -> Service:
    service: Service = app.extensions[EXTENSION]
    return service


def submit(client: FlaskClient, test_id: str = "t1", **body: Any) -> str:
    answer = client.post("/api/runs", json={"plan": "mem", "params": {"test_id": test_id}} | body)
    assert answer.status_code == 202, answer.json
    run_id: str = answer.json["id"]  # type: ignore[index]
    return run_id


def total_runs(client: FlaskClient, **headers: str) -> int:
    answer = client.get("/api/runs", headers=headers)
    assert answer.status_code == 200, answer.json
    total: int = answer.json["total"]  # type: ignore[index]
    return total


def assert_error(answer: Any, status: int, *mentions: str) -> dict[str, Any]:
    """The one error shape, the status, and a detail that names what is wrong."""
    assert answer.status_code == status, (answer.status_code, answer.data[:300])
    assert answer.is_json, answer.data[:300]
    body: dict[str, Any] = answer.json
    assert set(body) == {"error", "detail"} and isinstance(body["error"], str) and body["error"]
    for mention in mentions:
        assert mention in str(body["detail"]), (mention, body)
    return body


# -- runs --------------------------------------------------------------------------------------------------
def test_a_run_is_accepted_at_once_and_passes_through_polling(app: Flask, client: FlaskClient) -> None:
    answer = client.post("/api/runs", json={"plan": "mem", "params": {"test_id": "a1"}})
    assert answer.status_code == 202
    assert answer.json == {"id": answer.json["id"], "status": "processing"}
    run_id = answer.json["id"]
    assert answer.headers["Location"] == f"/api/runs/{run_id}"
    assert client.get(f"/api/runs/{run_id}").json["status"] == "running"  # nothing has arrived yet

    MemorySource.tables["log"].extend(rows("a1"))
    MemorySource.tables["wh"].extend(rows("a1"))
    document = wait_finished(client, run_id)
    assert document["status"] == "passed", document
    engine = service_of(app).engine
    assert document == engine.result(run_id).to_dict() | {"notify": None}  # the `run --json` document
    assert [s["status"] for s in document["stages"]] == ["passed", "passed"]

    polls = client.get(f"/api/runs/{run_id}/polls").json
    assert polls["run_id"] == run_id and polls["polls"]
    assert {p["stage"] for p in polls["polls"]} == {"log", "wh"}
    last = polls["polls"][-1]
    assert (last["stage"], last["outcome"], last["found"], last["expected"], last["error"]) == (
        "wh",
        "passed",
        2,
        2,
        None,
    )
    assert last["duration_ms"] >= 0 and last["polled_at"].endswith("+00:00")

    records = client.get(f"/api/runs/{run_id}/records/log").json
    assert records["total"] == 2 and records["truncated"] is False and records["taken_at"]
    assert sorted(r["event_id"] for r in records["records"]) == ["e1", "e2"]
    assert_error(client.get(f"/api/runs/{run_id}/records/bi"), 404, "'bi'", "log, wh")


def test_the_notification_state_of_a_run_is_shown(make_app: Callable[..., Flask], plans_dir: Path) -> None:
    plan = MEM_PLAN.replace("name: mem", "name: mem\nnotify: {webhook: 'http://127.0.0.1:9/hook', retries: 0}")
    (plans_dir / "mem.yaml").write_text(plan, encoding="utf-8")
    client = make_app().test_client()
    run_id = submit(client)
    document = client.post(f"/api/runs/{run_id}/cancel").json
    assert document["status"] == "cancelled"
    assert document["notify"]["state"] in ("pending", "failed")  # the notifier may already have tried


BAD_RUNS: list[tuple[Any, int, list[str]]] = [
    ("{not json", 400, ["not valid JSON"]),
    ([{"plan": "mem"}], 400, ["JSON object"]),
    ({"params": {"test_id": "x"}}, 400, ["'plan'"]),
    ({"plan": "mem", "params": {"test_id": "x"}, "colour": "red"}, 400, ["unknown key 'colour'"]),
    ({"plan": "nope", "params": {"test_id": "x"}}, 404, ["'nope'"]),
    ({"plan": "mem"}, 400, ["parameter 'test_id'", "missing"]),
    ({"plan": "mem", "params": {"test_id": "x", "bogus": 1}}, 400, ["parameter 'bogus'", "unknown"]),
    ({"plan": "mem", "params": {"test_id": "x", "limit": "ten"}}, 400, ["parameter 'limit'", "integer"]),
    ({"plan": "mem", "params": {"test_id": "x", "limit": True}}, 400, ["parameter 'limit'", "integer"]),
    ({"plan": "mem", "params": ["x"]}, 400, ["'params'", "object"]),
    ({"plan": "mem", "params": {"test_id": "x"}, "expect": {"event_id": "e1"}}, 400, ["'expect'", "list"]),
    ({"plan": "mem", "params": {"test_id": "x"}, "expect": ["e1"]}, 400, ["'expect[0]'", "JSON object"]),
    ({"plan": "mem", "params": {"test_id": "x"}, "expect": [{"event": "view"}]}, 400, ["expect[0]", "'event_id'"]),
    ({"plan": "mem", "params": {"test_id": "x"}, "expect": []}, 400, ["expect", "gives any events"]),
    ('{"plan": "mem", "params": {"test_id": NaN}}', 400, ["not valid JSON", "NaN"]),
]


@pytest.mark.parametrize(("body", "status", "mentions"), BAD_RUNS)
def test_invalid_run_requests_say_what_is_wrong_and_store_nothing(
    client: FlaskClient, body: Any, status: int, mentions: list[str]
) -> None:
    if isinstance(body, str):
        answer = client.post("/api/runs", data=body, content_type="application/json")
    else:
        answer = client.post("/api/runs", json=body)
    assert_error(answer, status, *mentions)
    assert total_runs(client) == 0


def test_a_body_that_is_not_json_typed_is_refused_against_cross_site_posts(client: FlaskClient) -> None:
    body = json.dumps({"plan": "mem", "params": {"test_id": "x"}})
    assert_error(client.post("/api/runs", data=body, content_type="text/plain"), 415, "application/json")
    assert_error(client.post("/api/runs", data={"plan": "mem"}), 415)  # an HTML form post
    assert total_runs(client) == 0


def test_an_oversized_body_is_413_in_the_error_shape(make_app: Callable[..., Flask]) -> None:
    client = make_app(max_body_bytes=1024).test_client()
    body = {"plan": "mem", "params": {"test_id": "x" * 2000}}
    assert_error(client.post("/api/runs", json=body), 413, "1024 bytes")
    put = client.put("/api/plans/mem", data=MEM_PLAN + "#" * 2000, content_type="application/yaml")
    assert_error(put, 413, "max_body_bytes")
    assert total_runs(client) == 0


def test_flask_errors_under_api_are_json_and_elsewhere_untouched(client: FlaskClient) -> None:
    assert_error(client.get("/api/no-such-thing"), 404)
    assert_error(client.get("/api"), 404)
    answer = assert_error(client.delete("/api/runs"), 405, "GET, POST")
    assert answer["error"] == "method_not_allowed"
    outside = client.get("/no-such-page-anywhere")
    assert outside.status_code == 404 and not outside.is_json


def test_unknown_runs_are_404_naming_the_run(client: FlaskClient) -> None:
    for method, path in [
        ("get", "/api/runs/feedface"),
        ("get", "/api/runs/feedface/polls"),
        ("get", "/api/runs/feedface/records/log"),
        ("post", "/api/runs/feedface/cancel"),
        ("post", "/api/runs/feedface/rerun"),
    ]:
        assert_error(getattr(client, method)(path), 404, "'feedface'")
    assert total_runs(client) == 0


def test_runs_are_listed_newest_first_filtered_and_paged(client: FlaskClient) -> None:
    first, second, third = (submit(client, f"l{i}") for i in range(3))
    assert client.post(f"/api/runs/{second}/cancel").status_code == 200

    page = client.get("/api/runs?limit=2").json
    assert (page["total"], page["limit"], page["offset"]) == (3, 2, 0)
    assert [r["id"] for r in page["runs"]] == [third, second]
    summary = page["runs"][1]
    assert set(summary) == {"id", "plan", "status", "created_at", "finished_at", "stages"}
    assert summary["plan"] == "mem" and summary["status"] == "cancelled" and summary["finished_at"]
    assert summary["stages"] == [{"name": "log", "status": "skipped"}, {"name": "wh", "status": "skipped"}]
    assert [r["id"] for r in client.get("/api/runs?limit=2&offset=2").json["runs"]] == [first]
    assert [r["id"] for r in client.get("/api/runs?status=cancelled").json["runs"]] == [second]
    assert client.get("/api/runs?plan=other").json["total"] == 0
    assert client.get("/api/runs").json["limit"] == 50
    assert client.get("/api/runs?plan=&status=").json["total"] == 3  # empty form fields filter nothing
    for query, mention in [
        ("limit=0", "'limit'"),
        ("limit=501", "less than or equal to 500"),
        ("limit=ten", "integer"),
        ("offset=-1", "'offset'"),
        ("status=done", "'done'"),
        ("colour=red", "unknown query parameter 'colour'"),
    ]:
        assert_error(client.get(f"/api/runs?{query}"), 400, mention)


def test_cancel_ends_a_running_run_once(client: FlaskClient) -> None:
    run_id = submit(client)
    answer = client.post(f"/api/runs/{run_id}/cancel")
    assert answer.status_code == 200
    assert answer.json["run_id"] == run_id and answer.json["status"] == "cancelled"
    assert {s["status"] for s in answer.json["stages"]} == {"skipped"}
    assert_error(client.post(f"/api/runs/{run_id}/cancel"), 409, run_id, "cancelled")


def test_rerun_uses_the_same_plan_version_params_expect_and_overrides(app: Flask, client: FlaskClient) -> None:
    store = service_of(app).engine.store
    expect = [{"event_id": "e1", "event": "view"}]
    old = submit(client, "r1", expect=expect)
    v2 = MEM_PLAN.replace("description: events", "description: v2 events")
    assert client.put("/api/plans/mem", data=v2, content_type="application/yaml").status_code == 201

    answer = client.post(f"/api/runs/{old}/rerun")
    assert answer.status_code == 202 and answer.json["status"] == "processing"
    new = answer.json["id"]
    assert new != old and answer.headers["Location"] == f"/api/runs/{new}"
    before, after = store.run(old), store.run(new)
    assert after.plan_id == before.plan_id
    assert (after.params, after.expect, after.overrides) == (before.params, expect, before.overrides)
    latest = store.run(submit(client, "r2"))
    assert latest.plan_id != before.plan_id  # a new run takes the latest version
    assert store.plan_version(latest.plan_id).version == 2


def test_a_run_keeps_the_plan_version_it_started_with(client: FlaskClient) -> None:
    run_id = submit(client, "k1")
    renamed = MEM_PLAN.replace("name: log", "name: collector").replace("with: log", "with: collector")
    assert client.put("/api/plans/mem", data=renamed, content_type="application/yaml").status_code == 201
    MemorySource.tables["log"].extend(rows("k1"))
    MemorySource.tables["wh"].extend(rows("k1"))
    document = wait_finished(client, run_id)
    assert document["status"] == "passed"
    assert [s["name"] for s in document["stages"]] == ["log", "wh"]  # version 1's stages, not "collector"
    assert client.get("/api/plans/mem").json["stages"] == ["collector", "wh"]


# -- plans -------------------------------------------------------------------------------------------------
def test_plans_are_listed_read_and_versioned(client: FlaskClient) -> None:
    listed = client.get("/api/plans").json["plans"]
    assert [(p["name"], p["version"], p["stages"]) for p in listed] == [("mem", 1, ["log", "wh"])]
    assert listed[0]["description"] == "events reach the log, then the warehouse" and listed[0]["created_at"]

    plan = client.get("/api/plans/mem").json
    assert plan["text"] == MEM_PLAN and plan["version"] == 1
    assert [v["version"] for v in plan["versions"]] == [1]

    same = client.put("/api/plans/mem", data=MEM_PLAN, content_type="text/plain; charset=utf-8")
    assert same.status_code == 200 and same.json["created"] is False and same.json["version"] == 1
    v2 = MEM_PLAN.replace("timeout: 10s", "timeout: 20s")
    created = client.put("/api/plans/mem", data=v2, content_type="application/yaml")
    assert created.status_code == 201 and created.json["created"] is True and created.json["version"] == 2
    assert created.headers["Location"] == "/api/plans/mem?version=2"

    assert client.get("/api/plans/mem").json["text"] == v2
    old = client.get("/api/plans/mem?version=1").json
    assert old["text"] == MEM_PLAN and [v["version"] for v in old["versions"]] == [2, 1]
    assert_error(client.get("/api/plans/mem?version=9"), 404, "no version 9")
    assert_error(client.get("/api/plans/mem?version=one"), 400, "'version'")
    assert_error(client.get("/api/plans/other"), 404, "'other'")


BAD_PLANS: list[tuple[str, str, list[str]]] = [
    (MEM_PLAN.replace("name: mem", "name: other"), "application/yaml", ["'other'", "'mem'", "match"]),
    (MEM_PLAN.replace("source: wh", "source: lake"), "application/yaml", ["plan 'mem'", "stages[1] (wh).source"]),
    (MEM_PLAN.replace("with: log", "with: wh"), "application/yaml", ["stages[1] (wh)", "compare.with"]),
    (MEM_PLAN.replace("interval: 200ms", "interval: soon"), "application/yaml", ["defaults.interval", "soon"]),
    ("name: mem\nkey: [", "application/yaml", ["not valid YAML", "line"]),
    ("   ", "application/yaml", ["empty"]),
    (MEM_PLAN, "application/json", ["application/yaml"]),
]


@pytest.mark.parametrize(("text", "content_type", "mentions"), BAD_PLANS)
def test_invalid_plans_are_rejected_naming_plan_stage_and_field(
    client: FlaskClient, text: str, content_type: str, mentions: list[str]
) -> None:
    answer = client.put("/api/plans/mem", data=text, content_type=content_type)
    assert_error(answer, 415 if content_type == "application/json" else 400, *mentions)
    assert [v["version"] for v in client.get("/api/plans/mem").json["versions"]] == [1]
    assert [p["name"] for p in client.get("/api/plans").json["plans"]] == ["mem"]


def test_a_deleted_plan_starts_no_runs_but_its_runs_stay_readable(client: FlaskClient) -> None:
    run_id = submit(client)
    assert client.delete("/api/plans/mem").status_code == 204
    assert client.get("/api/plans").json["plans"] == []
    assert_error(client.get("/api/plans/mem"), 404, "'mem'")
    assert_error(client.delete("/api/plans/mem"), 404, "'mem'")
    assert_error(client.post("/api/runs", json={"plan": "mem", "params": {"test_id": "x"}}), 404, "'mem'")
    assert_error(client.post(f"/api/runs/{run_id}/rerun"), 409, "deleted")
    assert client.get(f"/api/runs/{run_id}").json["plan"] == "mem"
    assert total_runs(client) == 1
    assert client.put("/api/plans/mem", data=MEM_PLAN, content_type="application/yaml").json["version"] == 2


# -- schedules ---------------------------------------------------------------------------------------------
def test_schedules_are_created_listed_and_deleted(client: FlaskClient) -> None:
    answer = client.post("/api/schedules", json={"plan": "mem", "cron": "10 2 * * *", "params": {"test_id": "n"}})
    assert answer.status_code == 201, answer.json
    schedule = answer.json
    assert {k: schedule[k] for k in ("plan", "cron", "params")} == {
        "plan": "mem",
        "cron": "10 2 * * *",
        "params": {"test_id": "n"},
    }
    assert "T02:10:00" in schedule["next_run_time"]
    assert answer.headers["Location"] == f"/api/schedules/{schedule['id']}"
    assert client.get(f"/api/schedules/{schedule['id']}").json == schedule
    assert [s["id"] for s in client.get("/api/schedules").json["schedules"]] == [schedule["id"]]
    assert client.delete(f"/api/schedules/{schedule['id']}").status_code == 204
    assert_error(client.delete(f"/api/schedules/{schedule['id']}"), 404, schedule["id"])
    assert_error(client.get(f"/api/schedules/{schedule['id']}"), 404, schedule["id"])
    assert client.get("/api/schedules").json["schedules"] == []


def test_a_schedule_carries_a_run_request_and_is_replaced_and_paused(client: FlaskClient) -> None:
    body = {"plan": "mem", "cron": "10 2 * * *", "params": {"test_id": "n"}, "interval": "2s", "timeout": 300}
    created = client.post("/api/schedules", json={**body, "expect": [{"event_id": "e1", "event": "view"}]})
    assert created.status_code == 201, created.json
    schedule = created.json
    assert (schedule["interval"], schedule["timeout"], schedule["paused"]) == ("2s", "5m", False)
    assert schedule["expect"] == [{"event_id": "e1", "event": "view"}]

    replaced = client.put(f"/api/schedules/{schedule['id']}", json={**body, "cron": "30 4 * * 1", "timeout": "1h"})
    assert replaced.status_code == 200, replaced.json
    assert {k: replaced.json[k] for k in ("id", "cron", "expect", "interval", "timeout", "created_at")} == {
        "id": schedule["id"],
        "cron": "30 4 * * 1",
        "expect": None,  # a replacement is whole: no expect, the plan's events again
        "interval": "2s",
        "timeout": "1h",
        "created_at": schedule["created_at"],
    }
    assert "T04:30:00" in replaced.json["next_run_time"]

    paused = client.patch(f"/api/schedules/{schedule['id']}", json={"paused": True})
    assert paused.status_code == 200 and paused.json["paused"] is True and paused.json["next_run_time"] is None
    resumed = client.patch(f"/api/schedules/{schedule['id']}", json={"paused": False})
    assert resumed.json["paused"] is False and "T04:30:00" in resumed.json["next_run_time"]

    assert_error(client.patch(f"/api/schedules/{schedule['id']}", json={"paused": "yes"}), 400, "'paused'")
    patch = {"paused": True, "cron": "1 1 * * *"}  # only the pause is patched
    assert_error(client.patch(f"/api/schedules/{schedule['id']}", json=patch), 400, "'cron'")
    assert_error(client.put("/api/schedules/nope", json=body), 404, "'nope'")
    assert_error(client.patch("/api/schedules/nope", json={"paused": True}), 404, "'nope'")
    # a bad replacement changes nothing
    assert_error(client.put(f"/api/schedules/{schedule['id']}", json={**body, "interval": "soon"}), 400, "interval")
    assert client.get(f"/api/schedules/{schedule['id']}").json == resumed.json


@pytest.mark.parametrize(
    ("body", "status", "mentions"),
    [
        ({"plan": "mem", "cron": "every day", "params": {"test_id": "n"}}, 400, ["'cron'", "cron expression"]),
        ({"plan": "mem", "cron": "61 * * * *", "params": {"test_id": "n"}}, 400, ["'cron'"]),
        ({"plan": "mem", "params": {"test_id": "n"}}, 400, ["'cron'"]),
        ({"plan": "nope", "cron": "10 2 * * *", "params": {"test_id": "n"}}, 404, ["'nope'"]),
        ({"plan": "mem", "cron": "10 2 * * *"}, 400, ["parameter 'test_id'"]),
        ({"plan": "mem", "cron": "10 2 * * *", "params": {"test_id": "n"}, "tz": "CET"}, 400, ["'tz'"]),
        ({"plan": "mem", "cron": "10 2 * * *", "params": {"test_id": "n"}, "timeout": "0s"}, 400, ["timeout"]),
        ({"plan": "mem", "cron": "10 2 * * *", "params": {"test_id": "n"}, "expect": [{"x": 1}]}, 400, ["expect"]),
    ],
)
def test_invalid_schedules_say_what_is_wrong_and_store_nothing(
    client: FlaskClient, body: dict[str, Any], status: int, mentions: list[str]
) -> None:
    assert_error(client.post("/api/schedules", json=body), status, *mentions)
    assert client.get("/api/schedules").json["schedules"] == []


# -- authentication ----------------------------------------------------------------------------------------
def test_with_a_token_every_api_route_needs_it(make_app: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch) -> None:
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    # 28 refused requests from one address: above the default login_rate_limit, whose 429 is tested elsewhere
    client = make_app(api_token=TOKEN, login_rate_limit="100 per minute").test_client()
    good = {"Authorization": f"Bearer {TOKEN}"}
    body = {"plan": "mem", "params": {"test_id": "x"}}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}, {"Authorization": "Bearer "}):
        for method, path, kwargs in [
            ("get", "/api/runs", {}),
            ("post", "/api/runs", {"json": body}),
            ("get", "/api/plans/mem", {}),
            ("put", "/api/plans/mem", {"data": MEM_PLAN, "content_type": "application/yaml"}),
            ("get", "/api/schedules", {}),
            ("get", "/api/no-such-route", {}),
            ("delete", "/api/runs", {}),
        ]:
            answer = getattr(client, method)(path, headers=headers, **kwargs)
            assert_error(answer, 401, "Bearer")
            assert answer.json["error"] == "unauthorized"
            assert answer.headers["WWW-Authenticate"].startswith("Bearer")
    assert compared and all(b == TOKEN.encode() for _, b in compared)  # constant-time comparison
    assert total_runs(client, **good) == 0  # none of the refused posts stored anything

    assert client.post("/api/runs", json=body, headers=good).status_code == 202
    assert client.get("/api/runs", headers={"Authorization": f"bearer {TOKEN}"}).json["total"] == 1
    for open_path in ("/api/openapi.json", "/healthz", "/metrics"):
        assert client.get(open_path).status_code == 200, open_path


def test_check_token_is_reusable_by_the_dashboard(make_app: Callable[..., Flask], tmp_path: Path) -> None:
    app = make_app(api_token=TOKEN)
    for header, expected in [(f"Bearer {TOKEN}", True), ("Bearer nope", False), ("", False)]:
        with app.test_request_context("/", headers={"Authorization": header} if header else {}):
            assert api.check_token(request) is expected
    open_app = make_app(db=f"sqlite:///{tmp_path}/other.db")
    with open_app.test_request_context("/"):
        assert api.check_token(request) is True


# -- credentials -------------------------------------------------------------------------------------------
def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def secret_plan() -> str:
    port = closed_port()
    return f"""
name: leaky
key: event_id
params:
  test_id: {{required: true}}
defaults: {{interval: 200ms, timeout: 10s, backoff: 100ms, retries: 1}}
sources:
  bi:
    type: http
    url: "http://reader:{SECRET}@127.0.0.1:{port}/"
    headers: {{Authorization: "Bearer {SECRET}-header", X-Trace: "on"}}
notify: {{webhook: "http://127.0.0.1:{port}/hook", secret: {SECRET}-hmac}}
expect:
  - {{event_id: e1}}
stages:
  - name: bi
    source: bi
    request: {{path: /events, params: {{test_id: "{{test_id}}"}}}}
    compare: {{with: expect}}
"""


def test_no_answer_and_no_log_line_holds_a_credential(
    make_app: Callable[..., Flask], caplog: pytest.LogCaptureFixture
) -> None:
    """An uploaded plan with literal secrets (inline sources allowed): stored encrypted, never shown."""
    client = make_app(secret_key="a passphrase of the operator's").test_client()
    caplog.set_level(logging.DEBUG)
    answers: list[bytes] = []

    def keep(answer: Any) -> Any:
        answers.append(answer.data)
        return answer

    text = secret_plan()
    assert keep(client.put("/api/plans/leaky", data=text, content_type="application/yaml")).status_code == 201
    shown = keep(client.get("/api/plans/leaky")).json["text"]
    assert 'url: "http://reader:***@127.0.0.1:' in shown
    assert "Authorization: ***" in shown and "secret: ***" in shown
    keep(client.get("/api/plans"))
    unknown_key = text.replace("type: http", "type: http\n    colour: red")
    assert_error(keep(client.put("/api/plans/leaky", data=unknown_key, content_type="application/yaml")), 400)
    bad_url = text.replace("type: http", "type: sql").replace(
        f"http://reader:{SECRET}@127.0.0.1:", f"postgresql://reader:{SECRET}@127.0.0.1:x"
    )
    assert_error(keep(client.put("/api/plans/leaky", data=bad_url, content_type="application/yaml")), 400)

    run = keep(client.post("/api/runs", json={"plan": "leaky", "params": {"test_id": "s1"}})).json["id"]
    document = wait_finished(client, run)
    assert document["status"] == "error" and document["stages"][0]["error"], document
    for path in (f"/api/runs/{run}", f"/api/runs/{run}/polls", f"/api/runs/{run}/records/bi", "/api/runs"):
        keep(client.get(path))
    keep(client.post(f"/api/runs/{run}/cancel"))
    for data in answers:
        assert SECRET not in data.decode(), data[:500]
    assert SECRET not in caplog.text


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("url: postgresql://u:p@ss@db:5432/x", "url: postgresql://u:***@db:5432/x"),
        ("url: postgresql://u:${PG_PASSWORD}@db/x", "url: postgresql://u:${PG_PASSWORD}@db/x"),
        ("url: http://host/path?next=a@b", "url: http://host/path?next=a@b"),
        ('headers: {"X-Api-Key": "abc", Accept: json}', 'headers: {"X-Api-Key": ***, Accept: json}'),
        ("  password: 's3cr''et'", "  password: ***"),
        ("  token: Bearer ${TOKEN}  # from the vault", "  token: Bearer ${TOKEN}  # from the vault"),
        ("description: a token-free plan", "description: a token-free plan"),
        ("key: event_id", "key: event_id"),
        ("  password: ab#cd, e}f", "  password: ***"),
        ("  client_secret: >-\n    folded-secret-value\n", "  client_secret: >-\n    ***\n"),
        ("  Authorization: 'Bearer abc''def'", "  Authorization: ***"),
        ('  url: "http://u:pa%40ss@h/"\n  x: "pa%40ss"', '  url: "http://u:***@h/"\n  x: "***"'),
        ("url: https://bi/api?api_key=k-123&page=2", "url: https://bi/api?api_key=***&page=2"),
        ("headers: {X-Custom-Auth: abcd1234, Accept: json}", "headers: {X-Custom-Auth: ***, Accept: json}"),
        ("params: {access_token: tok-999}", "params: {access_token: ***}"),
    ],
)
def test_plan_text_is_shown_without_secrets(text: str, shown: str) -> None:
    assert api.mask_plan_text(text) == shown


# -- a real database source --------------------------------------------------------------------------------
def test_a_run_on_a_sqlite_warehouse_waits_then_passes(client: FlaskClient, tmp_path: Path) -> None:
    warehouse = tmp_path / "warehouse.db"
    with sqlite3.connect(warehouse) as db:
        db.execute("CREATE TABLE events (event_id TEXT, event_name TEXT, amount NUMERIC, test_id TEXT)")
    plan = f"""
name: wh-sql
key: event_id
params:
  test_id: {{required: true}}
defaults: {{interval: 200ms, timeout: 20s}}
sources:
  wh: {{type: sql, url: "sqlite:///{warehouse}"}}
expect:
  - {{event_id: e1, event: view, amount: 0}}
  - {{event_id: e2, event: buy, amount: 25.5}}
stages:
  - name: warehouse
    source: wh
    query: SELECT event_id, event_name AS event, amount, test_id FROM events
    where: {{test_id: "{{test_id}}"}}
    compare: {{with: expect, fields: [event, amount]}}
"""
    assert client.put("/api/plans/wh-sql", data=plan, content_type="application/yaml").status_code == 201
    run_id = client.post("/api/runs", json={"plan": "wh-sql", "params": {"test_id": "q1"}}).json["id"]
    deadline = time.monotonic() + 10
    while not client.get(f"/api/runs/{run_id}/polls").json["polls"]:  # polled once while the table is empty
        assert time.monotonic() < deadline, "the run was never polled"
        time.sleep(0.05)
    with sqlite3.connect(warehouse) as db:
        db.executemany(
            "INSERT INTO events VALUES (?, ?, ?, ?)",
            [("e1", "view", 0, "q1"), ("e2", "buy", 25.5, "q1"), ("e9", "buy", 1, "other")],
        )
    document = wait_finished(client, run_id)
    assert document["status"] == "passed", document
    outcomes = [p["outcome"] for p in client.get(f"/api/runs/{run_id}/polls").json["polls"]]
    assert outcomes[0] == "waiting" and outcomes[-1] == "passed"
    records = client.get(f"/api/runs/{run_id}/records/warehouse").json
    assert sorted(r["event_id"] for r in records["records"]) == ["e1", "e2"] and records["total"] == 2


# -- health ------------------------------------------------------------------------------------------------
def test_healthz_is_200_when_ok_and_503_otherwise(
    app: Flask, client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    answer = client.get("/healthz")
    assert answer.status_code == 200
    assert answer.json == {"role": "poller", "database": "ok", "scheduler": "ok", "ok": True}
    broken = {"role": "standby", "database": "ok", "scheduler": "no poller is running", "ok": False}
    monkeypatch.setattr(service_of(app), "health", lambda: broken)
    answer = client.get("/healthz")
    assert answer.status_code == 503 and answer.json == broken


def test_a_run_may_override_interval_and_timeout_like_the_cli(app: Flask, client: FlaskClient) -> None:
    run_id = submit(client, "ov", interval="2s", timeout=90)
    assert service_of(app).engine.store.run(run_id).overrides == {"interval": 2.0, "timeout": 90.0}
    before = total_runs(client)
    bad = client.post("/api/runs", json={"plan": "mem", "params": {"test_id": "ov"}, "interval": "soon"})
    assert_error(bad, 400, "interval")
    assert total_runs(client) == before
