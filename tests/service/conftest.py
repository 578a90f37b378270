"""A real service app per test: SQLite state in tmp_path, a plans folder, the in-memory fake source.

Plans poll every 200 ms (``defaults.interval``), so a run whose data is there passes within a second.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.settings import MIN_INTERVAL
from trackcheck.service.app import EXTENSION, create_app
from trackcheck.service.config import ServiceConfig
from trackcheck.testing import MemorySource

MEM_PLAN = """
name: mem
description: events reach the log, then the warehouse
key: event_id
params:
  test_id: {required: true}
  limit: {type: integer}
defaults: {interval: 200ms, timeout: 10s, backoff: 100ms}
sources:
  log: {type: memory, table: log}
  wh: {type: memory, table: wh}
expect:
  - {event_id: e1, event: view}
  - {event_id: e2, event: buy}
stages:
  - name: log
    source: log
    where: {test_id: "{test_id}"}
    compare: {with: expect, fields: [event]}
  - name: wh
    source: wh
    where: {test_id: "{test_id}"}
    compare: {with: log, fields: [event]}
"""
#: a run waits at least until its data arrives: ends only when a test adds rows or cancels it
FINISHED = ("passed", "failed", "error", "cancelled")


def rows(test_id: str, *ids: str) -> list[dict[str, Any]]:
    events = {"e1": "view", "e2": "buy"}
    return [{"event_id": i, "event": events.get(i, "other"), "test_id": test_id} for i in ids or ("e1", "e2")]


@pytest.fixture
def plans_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "plans"
    folder.mkdir()
    (folder / "mem.yaml").write_text(MEM_PLAN, encoding="utf-8")
    return folder


@pytest.fixture
def make_app(tmp_path: Path, plans_dir: Path) -> Iterator[Callable[..., Flask]]:
    """Build apps with ServiceConfig overrides (e.g. api_token); every one is stopped after the test."""
    MemorySource.reset()
    apps: list[Flask] = []

    def make(**config: Any) -> Flask:
        # these tests are about the API's handling of runs and plans: uploaded plans may define their (memory,
        # local HTTP) sources inline here; the trust boundary itself is tested in tests/security
        settings: dict[str, Any] = {
            "db": f"sqlite:///{tmp_path}/tc.db",
            "plans": plans_dir,
            "allow_inline_sources": True,
            "allow_private_networks": True,
            "min_interval": MIN_INTERVAL,
        } | config
        app = create_app(ServiceConfig(**settings))
        app.config["TESTING"] = True
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.extensions[EXTENSION].stop()
    MemorySource.reset()


@pytest.fixture
def app(make_app: Callable[..., Flask]) -> Flask:
    return make_app()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def wait_finished(client: FlaskClient, run_id: str, timeout: float = 10.0, **kwargs: Any) -> dict[str, Any]:
    """GET the run until it has ended (bounded: fails with the last answer after ``timeout`` seconds)."""
    deadline = time.monotonic() + timeout
    while True:
        answer = client.get(f"/api/runs/{run_id}", **kwargs)
        assert answer.status_code == 200, answer.json
        document: dict[str, Any] = answer.json  # type: ignore[assignment]
        if document["status"] in FINISHED:
            return document
        assert time.monotonic() < deadline, f"run {run_id} still running after {timeout}s: {document}"
        time.sleep(0.05)
