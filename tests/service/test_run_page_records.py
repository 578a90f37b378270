"""The run page's "records" of each stage: what the stage read, or that it has read nothing yet."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from flask import Flask

from tests.service.conftest import wait_finished
from tests.waiting import eventually
from trackcheck.testing import MemorySource

PLAN = """
name: shelves
key: event_id
params:
  test_id: {required: true}
defaults: {interval: 200ms, timeout: 10s}
sources:
  log: {type: memory, table: log}
  wh: {type: memory, table: wh}
expect:
  - {event_id: e1}
stages:
  - name: log
    source: log
    where: {test_id: "{test_id}"}
    compare: {with: expect, fields: []}
  - name: wh
    source: wh
    where: {test_id: "{test_id}"}
    compare: {with: log, fields: []}
"""


def summaries(html: str) -> dict[str, str]:
    """Each stage's records summary line, by stage name."""
    found = re.findall(r'data-stage="([^"]+)"[^>]*>\s*<summary>(.*?)</summary>', html, re.S)
    return {stage: " ".join(re.sub(r"<[^>]+>", " ", text).split()) for stage, text in found}


def test_a_stage_that_has_found_nothing_shows_no_records_and_one_not_polled_shows_nothing_read(
    make_app: Callable[..., Flask], plans_dir: Path
) -> None:
    """A poll that finds nothing stores no snapshot: the page still says the stage read 0 records, not that
    it read nothing yet (which is what a stage not polled yet says)."""
    (plans_dir / "shelves.yaml").write_text(PLAN, encoding="utf-8")
    client = make_app().test_client()
    answer = client.post("/api/runs", json={"plan": "shelves", "params": {"test_id": "s1"}})
    assert answer.status_code == 202, answer.json
    run_id = answer.json["id"]  # type: ignore[index]
    eventually(
        lambda: client.get(f"/api/runs/{run_id}").json["stages"][0]["attempts"] >= 2,  # type: ignore[index]
        "the log stage was not polled twice",
    )

    shown = summaries(client.get(f"/runs/{run_id}").data.decode())
    assert shown["log"] == "log: 0 records", shown
    assert shown["wh"] == "wh: nothing read yet", shown

    MemorySource.tables["log"].append({"event_id": "e1", "test_id": "s1"})
    MemorySource.tables["wh"].append({"event_id": "e1", "test_id": "s1"})
    assert wait_finished(client, run_id)["status"] == "passed"
    shown = summaries(client.get(f"/runs/{run_id}").data.decode())
    assert shown == {"log": "log: 1 record", "wh": "wh: 1 record"}, shown
