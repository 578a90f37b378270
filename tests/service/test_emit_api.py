"""``POST /api/runs`` of a plan with ``emit:``: the service sends the events (its poller does, as the run's
first stage), then verifies them; the run's page and API show what was sent."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from flask import Flask

from tests.integration.collector import Collector
from tests.service.conftest import wait_finished


def test_a_run_submitted_over_the_api_sends_its_events_then_verifies_them(
    tmp_path: Path, plans_dir: Path, make_app: Callable[..., Flask]
) -> None:
    with Collector(tmp_path / "collector") as collector:
        (plans_dir / "signup.yaml").write_text(
            f"""
name: signup
key: user
params:
  test_id: {{required: true}}
defaults: {{interval: 200ms, timeout: 10s}}
sources:
  api: {{type: http, url: "{collector.url}"}}
  log: {{type: file, path: "{collector.log}"}}
emit: {{source: api, format: segment, stamp: {{test_id: "{{test_id}}"}}}}
expect: [{{event: Signed Up, user: u1}}, {{event: Logged In, user: u1b}}]
stages:
  - name: collector
    source: log
    where: {{test_id: "{{test_id}}"}}
    select: {{user: properties.user, event: event, test_id: properties.test_id}}
    compare: {{with: emit, fields: [event]}}
""",
            encoding="utf-8",
        )
        client = make_app().test_client()
        answer = client.post("/api/runs", json={"plan": "signup", "params": {"test_id": "api-1"}})
        assert answer.status_code == 202, answer.json
        run = wait_finished(client, answer.json["id"])  # type: ignore[index]
        sent = collector.events()
    assert run["status"] == "passed", run
    assert [s["name"] for s in run["stages"]] == ["emit", "collector"]
    assert run["stages"][0]["reason"].endswith("/v1/batch: HTTP 200")
    assert [(e["event"], e["properties"]["test_id"]) for e in sent] == [("Signed Up", "api-1"), ("Logged In", "api-1")]
    records = client.get(f"/api/runs/{run['run_id']}/records/emit").json
    assert [r["user"] for r in records["records"]] == ["u1", "u1b"]  # type: ignore[index]
