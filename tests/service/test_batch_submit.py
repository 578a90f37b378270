"""``POST /api/runs/batch``: many runs of one plan in one request, all or nothing, errors naming the run."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Flask
from flask.testing import FlaskClient

from tests.security.test_roles import RUNNER, TOKENS, VIEWER, bearer
from tests.service.conftest import rows, wait_finished
from trackcheck.engine.core import RunRequest
from trackcheck.errors import ParamError
from trackcheck.service.api.models import MAX_BATCH
from trackcheck.service.app import EXTENSION
from trackcheck.testing import MemorySource

URL = "/api/runs/batch"


def batch(*test_ids: str, **extra: Any) -> dict[str, Any]:
    return {"plan": "mem", "runs": [{"params": {"test_id": t}} | extra for t in test_ids]}


def json_of(answer: Any) -> dict[str, Any]:
    document: dict[str, Any] = answer.json
    return document


def stored(client: FlaskClient) -> int:
    total: int = json_of(client.get("/api/runs"))["total"]
    return total


def test_three_runs_are_accepted_and_each_ends_as_its_data_says(client: FlaskClient) -> None:
    for table in ("log", "wh"):
        MemorySource.tables[table].extend(rows("ok"))
    MemorySource.tables["log"].extend(rows("short", "e1"))
    runs = [
        {"params": {"test_id": "ok"}},
        {"params": {"test_id": "short"}, "timeout": "1s"},
        {"params": {"test_id": "ok"}, "expect": [{"event_id": "e1", "event": "view"}]},
    ]
    answer = client.post(URL, json={"plan": "mem", "runs": runs})
    assert answer.status_code == 202, answer.json
    assert json_of(answer)["status"] == "processing"
    ids = json_of(answer)["ids"]
    assert len(ids) == 3 and len(set(ids)) == 3
    results = [wait_finished(client, run_id) for run_id in ids]
    assert [r["status"] for r in results] == ["passed", "failed", "failed"]
    assert results[1]["stages"][0]["missing"]  # e2 never reached the log
    assert results[2]["stages"][0]["unexpected"]  # e2 was not expected by this run
    assert [r["params"]["test_id"] for r in results] == ["ok", "short", "ok"]


def test_one_invalid_run_stores_none_and_the_error_names_it(client: FlaskClient) -> None:
    cases = [
        ({"params": {"nope": "x"}}, "invalid_params", "runs[1].params.nope: unknown run parameter"),
        ({"params": {}}, "invalid_params", "runs[1].params.test_id: required run parameter is missing"),
        ({"params": {"test_id": "b", "limit": "x"}}, "invalid_params", "runs[1].params.limit"),
        ({"params": {"test_id": "b"}, "expect": [{"event": "x"}]}, "invalid_params", "runs[1].expect"),
        (
            {"params": {"test_id": "b"}, "expect": [{"event_id": "x", "score": float("nan")}]},
            "bad_request",
            "the body is not valid JSON: NaN is not a JSON number",
        ),
        ({"params": {"test_id": "${HOME}"}}, "invalid_params", "runs[1].params.test_id: ${HOME} is not expanded"),
        ({"params": {"test_id": "b"}, "interval": "soon"}, "invalid_plan", "runs[1].interval"),
        ({"params": {"test_id": "b"}, "timeout": "400d"}, "invalid_plan", "runs[1].timeout"),
        ({"params": {"test_id": "b"}, "plan": "mem"}, "bad_request", "runs[1]: unknown key 'plan'"),
        ({"params": ["b"]}, "invalid_params", "runs[1]: 'params' must be a JSON object"),
        ("b", "invalid_params", "'runs[1]' must be a JSON object"),
    ]
    for bad, error, detail in cases:
        body = {"plan": "mem", "runs": [{"params": {"test_id": "a"}}, bad, {"params": {"test_id": "c"}}]}
        answer = client.post(URL, json=body)
        assert answer.status_code == 400, (bad, answer.json)
        assert json_of(answer)["error"] == error and detail in json_of(answer)["detail"], (bad, answer.json)
    assert stored(client) == 0


def test_the_body_itself_is_checked(client: FlaskClient) -> None:
    too_many = {"plan": "mem", "runs": [{}] * (MAX_BATCH + 1)}
    answer = client.post(URL, json=too_many)
    assert answer.status_code == 400 and f"at most {MAX_BATCH}" in json_of(answer)["detail"], answer.json
    bodies: list[dict[str, Any]] = [
        {"plan": "mem", "runs": []},
        {"plan": "mem", "runs": {}},
        {"plan": "mem"},
        {"runs": [{}]},
    ]
    for body in bodies:
        answer = client.post(URL, json=body)
        assert answer.status_code == 400, (body, answer.json)
    answer = client.post(URL, json=batch("a") | {"expect": []})
    assert answer.status_code == 400 and "unknown key 'expect'" in json_of(answer)["detail"]
    assert client.post(URL, json=batch("a") | {"plan": "nope"}).status_code == 404
    assert stored(client) == 0


def test_a_viewer_may_not_a_runner_may(make_app: Callable[..., Flask]) -> None:
    client = make_app(tokens=TOKENS).test_client()
    refused = client.post(URL, json=batch("a", "b"), headers=bearer(VIEWER))
    assert refused.status_code == 403, refused.json
    assert "needs role runner" in json_of(refused)["detail"]
    accepted = client.post(URL, json=batch("a", "b"), headers=bearer(RUNNER))
    assert accepted.status_code == 202 and len(json_of(accepted)["ids"]) == 2, accepted.json


def test_submit_many_in_process_shares_the_first_group_and_names_the_index(app: Flask) -> None:
    engine = app.extensions[EXTENSION].engine
    plan = engine.store.latest_plan("mem")
    assert plan is not None
    plan_id = plan.id
    ids = engine.submit_many(plan_id, [RunRequest({"test_id": "same"}) for _ in range(3)])
    groups = {engine.store.run_stages(run_id)[0].group_key for run_id in ids}
    assert len(ids) == 3 and len(groups) == 1
    try:
        engine.submit_many(plan_id, [RunRequest({"test_id": "x"}), RunRequest({}, None, None)])
    except ParamError as exc:
        assert "runs[1].params.test_id: required run parameter is missing" in str(exc)
    else:
        raise AssertionError("a missing parameter was accepted")
    assert engine.store.list_runs()[1] == 3
    assert engine.submit_many(plan_id, []) == []
