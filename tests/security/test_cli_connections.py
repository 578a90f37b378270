"""The CLI reads the same connections as the service (trackcheck.toml, ``--config``), so a plan written
for the shared service validates and runs unchanged in CI."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from trackcheck.cli import main

PLAN = """
name: via-connection
key: event_id
params:
  test_id: {required: true}
defaults: {interval: 200ms, timeout: 10s}
sources:
  wh: {connection: warehouse}
expect:
  - {event_id: e1, event: view}
stages:
  - name: wh
    source: wh
    table: events
    where: {test_id: "{test_id}"}
    compare: {with: expect, fields: [event]}
"""


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    with sqlite3.connect(tmp_path / "wh.db") as db:
        db.execute("CREATE TABLE events (event_id TEXT, event TEXT, test_id TEXT)")
        db.execute("INSERT INTO events VALUES ('e1', 'view', 'c1')")
    (tmp_path / "plan.yaml").write_text(PLAN)
    (tmp_path / "tc.toml").write_text('[connections.warehouse]\ntype = "sql"\nurl = "sqlite:///${WH_FILE}"\n')
    monkeypatch.setenv("WH_FILE", str(tmp_path / "wh.db"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_validate_and_run_a_plan_that_names_a_connection(workspace: Path) -> None:
    runner = CliRunner()
    answer = runner.invoke(main, ["validate", "--config", "tc.toml", "plan.yaml"])
    assert answer.exit_code == 0, answer.output
    assert "is valid" in answer.output
    answer = runner.invoke(main, ["run", "--config", "tc.toml", "--db", "sqlite://", "plan.yaml", "-p", "test_id=c1"])
    assert answer.exit_code == 0, answer.output


def test_an_unknown_connection_is_exit_2_naming_it(workspace: Path) -> None:
    answer = CliRunner().invoke(main, ["validate", "plan.yaml"])  # no --config, no ./trackcheck.toml
    assert answer.exit_code == 2
    assert "unknown connection 'warehouse'" in answer.output and "sources.wh" in answer.output
