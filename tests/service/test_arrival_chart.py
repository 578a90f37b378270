"""The run page's per-event arrival chart: server-drawn SVG per stage, with its numbers in words."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from flask import Flask

from tests.service.conftest import wait_finished
from trackcheck.testing import MemorySource

PLAN = """
name: arrivals
key: event_id
params:
  test_id: {required: true}
defaults: {interval: 200ms, timeout: 10s}
sources:
  log: {type: memory, table: log}
  wh: {type: memory, table: wh}
expect:
  - {event_id: e1}
  - {event_id: e2}
stages:
  - name: log
    source: log
    where: {test_id: "{test_id}"}
    compare: {with: expect, fields: []}
    time_field: sent_at
    latency: {p95: 1h, max: 2h}
  - name: wh
    source: wh
    where: {test_id: "{test_id}"}
    compare: {with: log, fields: []}
"""


def test_the_run_page_draws_each_stage_s_arrival_per_event(make_app: Callable[..., Flask], plans_dir: Path) -> None:
    (plans_dir / "arrivals.yaml").write_text(PLAN, encoding="utf-8")
    client = make_app().test_client()
    sent = datetime.now(UTC) - timedelta(seconds=90)
    for event_id in ("e1", "e2"):
        row = {"event_id": event_id, "test_id": "a1", "sent_at": sent.isoformat()}
        MemorySource.tables["log"].append(row)
        MemorySource.tables["wh"].append(row)
    answer = client.post("/api/runs", json={"plan": "arrivals", "params": {"test_id": "a1"}})
    assert answer.status_code == 202, answer.json
    run_id = answer.json["id"]  # type: ignore[index]
    document = wait_finished(client, run_id)
    assert document["status"] == "passed", document
    assert document["stages"][0]["latency"]["n"] == 2

    for url in (f"/runs/{run_id}", f"/fragments/runs/{run_id}"):
        page = client.get(url)
        assert page.status_code == 200
        html = page.data.decode()
        assert "Arrival per event" in html
        figures = re.findall(
            r'<figure class="arrival" data-stage="(\w+)" data-measure="([\w ]+)">(.*?)</figure>', html, re.S
        )
        assert [(stage, measure) for stage, measure, _ in figures] == [("log", "lateness"), ("wh", "since start")]
        log, wh = (body for _, _, body in figures)
        # a filled step curve per stage, named by an accessible title and description
        for n, body in enumerate((log, wh), start=1):
            assert re.search(
                rf'<svg class="chart"[^>]*role="img" aria-labelledby="arrival-title-{n} arrival-desc-{n}"', body
            )
            assert f'<title id="arrival-title-{n}">' in body and f'<desc id="arrival-desc-{n}">' in body
            assert re.search(r'<polygon class="chart__bar"[^>]* points="[\d., ]+"', body)
        # the summary in words: both events 90 s (and a poll) late; the bounds drawn and said
        assert re.search(
            r"log: 2 events, lateness \(first seen minus sent_at\): p50 1m3\ds, p95 1m3\ds, max 1m3\ds\.", log
        )
        assert "Bounds: p95 ≤ 1h, max ≤ 2h." in log
        assert log.count('class="chart__bound"') == 2
        assert re.search(r"wh: 2 events, first seen after the stage started: p50 [\d.]+m?s, p95", wh)
        # drawn without inline style or script: the dashboard's CSP forbids both
        assert "style=" not in html and "<style" not in html and "<script>" not in html
    assert "style-src 'self'" in page.headers["Content-Security-Policy"]


def test_a_run_with_nothing_arrived_yet_has_no_arrival_chart(make_app: Callable[..., Flask], plans_dir: Path) -> None:
    (plans_dir / "arrivals.yaml").write_text(PLAN, encoding="utf-8")
    client = make_app().test_client()
    answer = client.post("/api/runs", json={"plan": "arrivals", "params": {"test_id": "a2"}})
    run_id = answer.json["id"]  # type: ignore[index]
    html = client.get(f"/runs/{run_id}").data.decode()
    assert "Arrival latency" in html and "Arrival per event" not in html
    client.post(f"/api/runs/{run_id}/cancel")
