"""The OpenAPI document generated from the API's models is true to the app: same paths and methods, and
real answers match its schemas; Swagger UI at /api/docs is served from this host, without a token."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from jsonschema import Draft202012Validator

from tests.service.conftest import MEM_PLAN, rows, wait_finished
from trackcheck.testing import MemorySource

IGNORED_METHODS = {"HEAD", "OPTIONS"}


def document(app: Flask) -> dict[str, Any]:
    """The document as a client reads it."""
    answer = app.test_client().get("/api/openapi.json")
    assert answer.status_code == 200, answer.data[:300]
    doc: dict[str, Any] = answer.json
    return doc


def routes(app: Flask) -> dict[str, set[str]]:
    """The app's JSON API routes as OpenAPI paths (``<run_id>`` → ``{run_id}``) with their methods: every
    /api route but Swagger UI's page and assets."""
    found: dict[str, set[str]] = {}
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/api/") and not rule.endpoint.startswith("api_docs."):
            path = re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule.rule)
            found.setdefault(path, set()).update(m.lower() for m in (rule.methods or set()) - IGNORED_METHODS)
    return found


def documented(doc: dict[str, Any]) -> dict[str, set[str]]:
    methods = {"get", "put", "post", "delete", "patch"}
    return {path: set(item) & methods for path, item in doc["paths"].items()}


def test_documented_paths_and_methods_are_the_app_routes(app: Flask) -> None:
    doc = document(app)
    assert doc["openapi"] == "3.1.0"
    assert documented(doc) == routes(app)
    assert len(routes(app)) >= 13


def test_path_parameters_are_declared(app: Flask) -> None:
    for path, item in document(app)["paths"].items():
        names = set(re.findall(r"{([^}]+)}", path))
        for method, operation in item.items():
            if method == "parameters":
                continue
            declared = {p["name"] for p in [*item.get("parameters", []), *operation.get("parameters", [])]}
            assert names <= declared, (path, method)


def test_every_reference_resolves(app: Flask) -> None:
    doc = document(app)

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if ref is not None:
                target: Any = doc
                for part in ref.removeprefix("#/").split("/"):
                    target = target[part]
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(doc)


def test_the_document_is_served_without_a_token(make_app: Callable[..., Flask]) -> None:
    client = make_app(api_token="secret-token-value").test_client()
    answer = client.get("/api/openapi.json")
    assert answer.status_code == 200 and answer.json["openapi"].startswith("3.1")
    assert answer.json["paths"]["/api/openapi.json"]["get"]["security"] == []
    assert answer.json["paths"]["/api/runs"]["get"]["security"] == [{"bearer": []}]
    assert "secret-token-value" not in answer.get_data(as_text=True)
    assert client.get("/api/runs").status_code == 401


def test_request_bodies_and_errors_are_documented_from_the_models(app: Flask) -> None:
    """Unknown keys are refused (additionalProperties: false), and every operation documents the one error
    shape for 400 and for the token's answers."""
    doc = document(app)
    schemas = doc["components"]["schemas"]
    for name in ("RunRequest", "BatchRunRequest", "ScheduleRequest", "NewConnection", "ConnectionRequest"):
        assert schemas[name]["additionalProperties"] is False, name
    assert set(schemas["Error"]["required"]) == {"error", "detail"}
    submit = doc["paths"]["/api/runs"]["post"]
    assert submit["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/RunRequest"}
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            for status in ("400", "401", "403"):
                content = operation["responses"][status]["content"]["application/json"]
                assert content["schema"] == {"$ref": "#/components/schemas/Error"}, (path, method, status)
    plan = doc["paths"]["/api/plans/{name}"]["put"]["requestBody"]["content"]
    assert set(plan) == {"application/yaml", "text/plain"}


def test_swagger_ui_is_served_from_this_host_without_a_token(make_app: Callable[..., Flask]) -> None:
    client = make_app(api_token="secret-token-value").test_client()
    page = client.get("/api/docs")
    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    csp = page.headers["Content-Security-Policy"]
    assert "script-src 'self';" in csp and "unsafe-inline" not in csp
    assert "<script>" not in html and "style=" not in html and "<style" not in html
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert len(assets) == 4 and all(a.startswith("/api/docs/") for a in assets), assets
    for asset in assets:
        answer = client.get(asset)
        assert answer.status_code == 200 and len(answer.data) > 100, asset
    assert 'data-spec="/api/openapi.json"' in html


class Checker:
    """Validates each answer against the schema the document gives for its path, method and status."""

    def __init__(self, client: FlaskClient, doc: dict[str, Any]) -> None:
        self.client = client
        self.doc = doc
        self.seen: set[tuple[str, str, int]] = set()

    def __call__(self, method: str, template: str, url: str, status: int, **kwargs: Any) -> Any:
        answer = getattr(self.client, method)(url, **kwargs)
        assert answer.status_code == status, (method, url, answer.status_code, answer.get_data(as_text=True)[:300])
        responses = self.doc["paths"][template][method]["responses"]
        assert str(status) in responses, f"{method.upper()} {template} answers {status}, undocumented"
        response = responses[str(status)]
        if "$ref" in response:
            response = self.doc["components"]["responses"][response["$ref"].rsplit("/", 1)[1]]
        if "content" in response:
            schema = response["content"]["application/json"]["schema"]
            validator = Draft202012Validator({**schema, "components": self.doc["components"]})
            errors = [e.message for e in validator.iter_errors(answer.json)]
            assert not errors, (method, url, errors, answer.json)
        else:
            assert not answer.data
        self.seen.add((method, template, status))
        return answer.json


@pytest.mark.parametrize("token", [None, "tok"])
def test_real_answers_match_the_documented_schemas(make_app: Callable[..., Flask], token: str | None) -> None:
    app = make_app(api_token=token)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = headers.get("Authorization", "")
    doc = document(app)
    check = Checker(client, doc)
    MemorySource.tables["log"].extend(rows("o1"))
    MemorySource.tables["wh"].extend(rows("o1"))

    body = {"plan": "mem", "params": {"test_id": "o1"}}
    run_id = check("post", "/api/runs", "/api/runs", 202, json=body)["id"]
    wait_finished(client, run_id)
    check("get", "/api/runs/{run_id}", f"/api/runs/{run_id}", 200)
    check("get", "/api/runs", "/api/runs?limit=5", 200)
    check("get", "/api/runs/{run_id}/polls", f"/api/runs/{run_id}/polls", 200)
    check("get", "/api/runs/{run_id}/records/{stage}", f"/api/runs/{run_id}/records/wh", 200)
    check("post", "/api/runs/{run_id}/cancel", f"/api/runs/{run_id}/cancel", 409)
    rerun = check("post", "/api/runs/{run_id}/rerun", f"/api/runs/{run_id}/rerun", 202)["id"]
    check("post", "/api/runs/{run_id}/cancel", f"/api/runs/{rerun}/cancel", 200)
    check("get", "/api/runs/{run_id}", "/api/runs/nope", 404)
    check("post", "/api/runs", "/api/runs", 400, json={"plan": "mem"})
    check("post", "/api/runs", "/api/runs", 404, json={"plan": "nope"})
    check("post", "/api/runs", "/api/runs", 415, data="{}", content_type="text/plain")
    check("get", "/api/runs", "/api/runs?limit=0", 400)
    batch = {"plan": "mem", "runs": [{"params": {"test_id": "b1"}}, {"params": {"test_id": "b2"}, "interval": "1s"}]}
    ids = check("post", "/api/runs/batch", "/api/runs/batch", 202, json=batch)["ids"]
    for batch_id in ids:
        check("post", "/api/runs/{run_id}/cancel", f"/api/runs/{batch_id}/cancel", 200)
    check("post", "/api/runs/batch", "/api/runs/batch", 400, json={"plan": "mem", "runs": [{"params": {}}]})
    check("post", "/api/runs/batch", "/api/runs/batch", 404, json={"plan": "nope", "runs": [{}]})

    check("get", "/api/plans", "/api/plans", 200)
    check("get", "/api/plans/{name}", "/api/plans/mem", 200)
    check("put", "/api/plans/{name}", "/api/plans/mem", 200, data=MEM_PLAN, content_type="application/yaml")
    v2 = MEM_PLAN.replace("timeout: 10s", "timeout: 11s")
    check("put", "/api/plans/{name}", "/api/plans/mem", 201, data=v2, content_type="application/yaml")
    check("put", "/api/plans/{name}", "/api/plans/mem", 400, data="name: x", content_type="application/yaml")
    check("put", "/api/plans/{name}", "/api/plans/mem", 415, data=v2, content_type="application/json")

    schedule = {"plan": "mem", "cron": "0 3 * * *", "params": {"test_id": "o2"}}
    schedule_id = check("post", "/api/schedules", "/api/schedules", 201, json=schedule)["id"]
    check("post", "/api/schedules", "/api/schedules", 400, json=schedule | {"cron": "soon"})
    check("get", "/api/schedules", "/api/schedules", 200)
    check("get", "/api/schedules/{schedule_id}", f"/api/schedules/{schedule_id}", 200)
    path = f"/api/schedules/{schedule_id}"
    check("put", "/api/schedules/{schedule_id}", path, 200, json=schedule | {"timeout": "1h", "paused": True})
    check("put", "/api/schedules/{schedule_id}", path, 400, json=schedule | {"interval": "soon"})
    check("patch", "/api/schedules/{schedule_id}", path, 200, json={"paused": False})
    check("patch", "/api/schedules/{schedule_id}", "/api/schedules/nope", 404, json={"paused": False})
    check("delete", "/api/schedules/{schedule_id}", f"/api/schedules/{schedule_id}", 204)
    check("delete", "/api/schedules/{schedule_id}", f"/api/schedules/{schedule_id}", 404)
    check("delete", "/api/plans/{name}", "/api/plans/mem", 204)
    check("delete", "/api/plans/{name}", "/api/plans/mem", 404)
    check("post", "/api/runs/{run_id}/rerun", f"/api/runs/{run_id}/rerun", 409)

    connection = {"name": "logs", "type": "file", "options": {"root": "/var/log/app", "format": "jsonl"}}
    check("post", "/api/connections", "/api/connections", 201, json=connection)
    check("post", "/api/connections", "/api/connections", 409, json=connection)
    check("post", "/api/connections", "/api/connections", 400, json=connection | {"name": "x", "type": "nope"})
    check("get", "/api/connections", "/api/connections", 200)
    check("get", "/api/connections/{name}", "/api/connections/logs", 200)
    check("get", "/api/connections/{name}", "/api/connections/nope", 404)
    secret = {"type": "http", "options": {"url": "http://user:pw-1234@bi.example.com/"}}
    check("put", "/api/connections/{name}", "/api/connections/bi", 409, json=secret)  # no secret key to seal it
    check(
        "put", "/api/connections/{name}", "/api/connections/logs", 200, json={"type": "file", "options": {"root": "/x"}}
    )
    check(
        "put", "/api/connections/{name}", "/api/connections/more", 201, json={"type": "file", "options": {"root": "/y"}}
    )
    check("put", "/api/connections/{name}", "/api/connections/x", 400, json={"type": "file", "options": {"root": "x"}})
    check("delete", "/api/connections/{name}", "/api/connections/logs", 204)
    check("delete", "/api/connections/{name}", "/api/connections/logs", 404)
    if token:
        client.environ_base["HTTP_AUTHORIZATION"] = "Bearer wrong"
        check("get", "/api/runs", "/api/runs", 401)
    check("get", "/api/openapi.json", "/api/openapi.json", 200)

    operations = {(m, p) for p, methods in documented(doc).items() for m in methods}
    assert operations <= {(m, p) for m, p, _ in check.seen}, "every documented operation was exercised"
